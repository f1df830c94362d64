"""report.html: one self-contained page per run, to open in any browser or mail to someone.

Every image (plots, face thumbnails) is embedded as a base64 data URI, so the page
needs no other file and no network.  A small script marks the page once it has
loaded (``data-images-loaded="k/n"`` on <body>, ``data-render-check="pass"`` when
every image decoded), which lets a test check the page in a headless browser.
"""

import base64
import html
import logging
from pathlib import Path

import cv2

from efr.io.errors import EFRError
from efr.io.imageio import encode_image, read_image, write_text_atomic

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 96

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.face { width: 112px; font-size: 0.78em; text-align: center; }
.face img { width: 96px; height: 96px; image-rendering: auto; border: 1px solid #ccc; }
.wrong { color: #b00; } .note { color: #555; font-size: 0.9em; }
.flags { background: #fff4e5; border: 1px solid #f0b45a; padding: 0.3em 1em; margin: 1em 0; }
.flags h2 { border: none; margin-top: 0.4em; } .caption { color: #444; word-break: break-all; }
"""

_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + images.length);
  document.body.setAttribute("data-render-check", ok === images.length ? "pass" : "fail");
});
"""


def data_uri(png_bytes, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(png_bytes).decode("ascii")


def png_file_uri(path):
    path = Path(path)
    try:
        return data_uri(path.read_bytes())
    except OSError as err:
        raise EFRError(f"{path}: cannot read the plot for the report ({err.strerror})") from err


def image_uri(image, side=THUMBNAIL_SIDE):
    """A small PNG data URI of a BGR image."""
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return data_uri(encode_image(image, ".png"))


def thumbnail_uri(path, side=THUMBNAIL_SIDE):
    """A small PNG data URI of an image file (the face as the model saw it, before resizing)."""
    return image_uri(read_image(path), side)


def _esc(value):
    return html.escape(str(value))


def _format(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_html(header, rows):
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _caption(item):
    """File name and (when known) subject of a gallery face, as HTML."""
    name = Path(item["path"]).name
    subject = item.get("subject")
    who = f"<br>subject {_esc(subject)}" if subject else ""
    return f'<span class="caption">{_esc(name)}</span>{who}'


def gallery_html(items):
    """Thumbnails of misclassified faces: dicts with path, true, predicted, confidence (and subject).

    The thumbnail is made from ``item["image"]`` (a BGR face crop) when given, else
    read from ``item["path"]``.
    """
    if not items:
        return "<p>No misclassified test faces.</p>"
    cells = []
    for item in items:
        try:
            image = item.get("image")
            src = thumbnail_uri(item["path"]) if image is None else image_uri(image)
        except EFRError as err:  # a file removed since prediction: say so in place of the picture
            log.warning("report: no thumbnail for %s (%s)", item["path"], err)
            cells.append(f'<div class="face">(missing)<br>{_caption(item)}</div>')
            continue
        name = Path(item["path"]).name
        cells.append(
            f'<div class="face"><img src="{src}" alt="{_esc(name)}" title="{_esc(item["path"])}"><br>'
            f'true: {_esc(item["true"])}<br><span class="wrong">pred: {_esc(item["predicted"])}</span>'
            f'<br>{item["confidence"]:.0%} sure<br>{_caption(item)}</div>'
        )
    return '<div class="gallery">' + "".join(cells) + "</div>"


def flags_html(flags):
    """The warnings a reader should not miss, in a box above everything else."""
    if not flags:
        return ""
    items = "".join(f'<li class="flag">{_esc(f)}</li>' for f in flags)
    return f'<div class="flags"><h2>Read this first</h2><ul>{items}</ul></div>'


def links_html(links):
    """Links to the run's own files (relative, so the folder can move): [(label, file name)]."""
    if not links:
        return ""
    items = "".join(f'<li><a href="{_esc(href)}">{_esc(label)}</a></li>' for label, href in links)
    return f"<p>Files of this run:</p><ul class=\"links\">{items}</ul>"


SUMMARY_HEADER = ("measure", "value")


def render_report(title, summary, tables=(), figures=(), gallery=(), gallery_total=None, notes=(), flags=(),
                  provenance=(), links=()):
    """The HTML text of a report.

    ``summary``: [(label, value)]; ``tables``: [(heading, header, rows)];
    ``figures``: [(caption, png path)]; ``gallery``: misclassified items;
    ``gallery_total``: how many were wrong in all (the gallery may show fewer);
    ``notes``: paragraphs of plain text; ``flags``: warnings shown in a box first;
    ``provenance``: [(label, value)] (date, versions, command); ``links``:
    [(label, file name)] of the run's own files.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_STYLE}</style>",
        f"<script>{_CHECK_SCRIPT}</script></head><body>",
        f"<h1>{_esc(title)}</h1>",
        flags_html(flags),
        table_html(SUMMARY_HEADER, summary),
    ]
    for note in notes:
        parts.append(f'<p class="note">{_esc(note)}</p>')
    for heading, header, rows in tables:
        parts.append(f"<h2>{_esc(heading)}</h2>")
        parts.append(table_html(header, rows))
    if figures:
        parts.append("<h2>Plots</h2>")
        for caption, path in figures:
            parts.append(
                f'<figure><img src="{png_file_uri(path)}" alt="{_esc(caption)}">'
                f"<figcaption>{_esc(caption)}</figcaption></figure>"
            )
    gallery = list(gallery)
    total = len(gallery) if gallery_total is None else gallery_total
    shown = f" (the {len(gallery)} most confident of {total})" if total > len(gallery) else ""
    parts.append(f"<h2>Misclassified test faces{_esc(shown)}</h2>")
    parts.append(gallery_html(gallery))
    if provenance or links:
        parts.append("<h2>Provenance</h2>")
        parts.append(table_html(("item", "value"), provenance))
        parts.append(links_html(links))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def existing_links(folder, names):
    """[(name, name)] of the files in ``names`` that exist in ``folder`` (for ``links``)."""
    return [(name, name) for name in names if (Path(folder) / name).is_file()]


def write_report(path, title, summary, tables=(), figures=(), gallery=(), gallery_total=None, notes=(), flags=(),
                 provenance=(), links=()):
    """Write ``render_report(...)`` to ``path`` atomically; return the path."""
    path = Path(path)
    write_text_atomic(path, render_report(title, summary, tables, figures, gallery, gallery_total, notes, flags,
                                          provenance, links))
    return path
