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

from efr.errors import EFRError
from efr.imageio import encode_image, read_image, write_text_atomic

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


def thumbnail_uri(path, side=THUMBNAIL_SIDE):
    """A small PNG data URI of an image file (the face as the model saw it, before resizing)."""
    image = read_image(path)
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return data_uri(encode_image(image, ".png"))


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


def gallery_html(items):
    """Thumbnails of misclassified faces: dicts with path, true, predicted, confidence."""
    if not items:
        return "<p>No misclassified test faces.</p>"
    cells = []
    for item in items:
        try:
            src = thumbnail_uri(item["path"])
        except EFRError as err:  # a file removed since prediction: say so in place of the picture
            log.warning("report: no thumbnail for %s (%s)", item["path"], err)
            cells.append(f'<div class="face">(missing)<br>{_esc(Path(item["path"]).name)}</div>')
            continue
        name = Path(item["path"]).name
        cells.append(
            f'<div class="face"><img src="{src}" alt="{_esc(name)}" title="{_esc(name)}"><br>'
            f'true: {_esc(item["true"])}<br><span class="wrong">pred: {_esc(item["predicted"])}</span>'
            f'<br>{item["confidence"]:.0%} sure</div>'
        )
    return '<div class="gallery">' + "".join(cells) + "</div>"


def render_report(title, summary, tables=(), figures=(), gallery=(), gallery_total=None, notes=()):
    """The HTML text of a report.

    ``summary``: [(label, value)]; ``tables``: [(heading, header, rows)];
    ``figures``: [(caption, png path)]; ``gallery``: misclassified items;
    ``gallery_total``: how many were wrong in all (the gallery may show fewer);
    ``notes``: paragraphs of plain text.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_STYLE}</style>",
        f"<script>{_CHECK_SCRIPT}</script></head><body>",
        f"<h1>{_esc(title)}</h1>",
        table_html(("", "value"), summary),
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
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path, title, summary, tables=(), figures=(), gallery=(), gallery_total=None, notes=()):
    """Write ``render_report(...)`` to ``path`` atomically; return the path."""
    path = Path(path)
    write_text_atomic(path, render_report(title, summary, tables, figures, gallery, gallery_total, notes))
    return path
