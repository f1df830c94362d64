"""The rows a prediction reports (one per face) and how they are written: CSV, JSON, a table, a summary,
annotated images."""

import collections
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from efr.io.errors import EFRError
from efr.io.imageio import write_text_atomic

NO_FACE = "no_face"

FORMATS = ("csv", "json")

PREDICTIONS_NAME = "predictions"

CSV_FIXED = ("source", "frame", "face", "x", "y", "w", "h", "label", "confidence")


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class FaceRow:
    """One face found (or one photo/frame with none) and what the model says about it."""

    source: str  # the file, or "camera:<index>"
    frame: int | None  # frame index for videos and cameras, None for photos
    face: int | None  # 0 = largest face in the photo/frame; None for a no_face row
    box: tuple | None  # (x, y, w, h) in the photo's pixels; None for a no_face row
    label: str  # an emotion, or "no_face"
    confidence: float | None  # probability of the label
    probabilities: dict = field(default_factory=dict)  # class name -> probability; empty for no_face
    note: str = ""  # --subject-norm: "not_centred" when the face's group was too alike to centre (efr.predict.centring)

    def record(self, class_names):
        """A flat dict for CSV: fixed columns, then prob_<class> for every class."""
        x, y, w, h = self.box if self.box is not None else ("", "", "", "")
        row = {
            "source": self.source,
            "frame": "" if self.frame is None else self.frame,
            "face": "" if self.face is None else self.face,
            "x": x, "y": y, "w": w, "h": h,
            "label": self.label,
            "confidence": "" if self.confidence is None else f"{self.confidence:.6f}",
        }
        for name in class_names:
            p = self.probabilities.get(name)
            row[f"prob_{name}"] = "" if p is None else f"{p:.6f}"
        row["note"] = self.note
        return row

    def as_json(self):
        return {
            "source": self.source,
            "frame": self.frame,
            "face": self.face,
            "box": None if self.box is None else dict(zip("xywh", (int(v) for v in self.box))),
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": self.probabilities,
            "note": self.note,
        }


@dataclass
class PredictionResult:
    """Everything one prediction run produced."""

    class_names: list
    rows: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (source, reason)
    photos: int = 0  # photos read
    frames: int = 0  # video/camera frames analysed
    videos: int = 0  # videos (and cameras) read
    outputs: list = field(default_factory=list)  # files written
    predictions_file: Path | None = None

    @property
    def faces(self):
        return sum(1 for r in self.rows if r.label != NO_FACE)

    @property
    def no_face(self):
        return sum(1 for r in self.rows if r.label == NO_FACE)

    def label_counts(self):
        return collections.Counter(r.label for r in self.rows)


# ---------------------------------------------------------------------------------------
# Drawing


def _colour(label):
    # A fixed colour per label (BGR), readable on light and dark photos.
    palette = ((40, 40, 230), (160, 60, 160), (30, 140, 60), (200, 100, 30),
               (20, 200, 240), (150, 150, 150), (200, 60, 60), (0, 140, 255))
    return palette[sum(label.encode()) % len(palette)]


def annotate(image, rows):
    """A copy of ``image`` with each face's box and 'label confidence' drawn on it."""
    out = image.copy()
    scale = max(out.shape[:2]) / 640.0
    thickness = max(1, int(round(2 * scale)))
    font_scale = max(0.35, 0.6 * scale)
    for row in rows:
        if row.box is None:
            text, colour, (x, y) = "no face found", (0, 0, 200), (5, 5)
        else:
            x, y, w, h = row.box
            colour = _colour(row.label)
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, thickness)
            # A --subject-norm track's first faces (too_few_frames) have a label and no confidence.
            text = row.label if row.confidence is None else f"{row.label} {row.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y - th - base - 2 * thickness) if row.box is not None else y
        cv2.rectangle(out, (x, top), (x + tw + 2 * thickness, top + th + base + 2 * thickness), colour, -1)
        cv2.putText(out, text, (x + thickness, top + th + thickness), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------
# Writing the table


def rows_to_csv(rows, class_names):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_FIXED) + [f"prob_{n}" for n in class_names] + ["note"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.record(class_names))
    return buffer.getvalue()


def rows_to_json(result, model_path=None):
    data = {
        "efr": "predictions",  # how a later run recognises this file (and its folder) as an output
        "model": None if model_path is None else str(model_path),
        "class_names": list(result.class_names),
        "rows": [r.as_json() for r in result.rows],
        "skipped": [{"source": s, "reason": why} for s, why in result.skipped],
    }
    return json.dumps(data, indent=2) + "\n"


def write_predictions(result, out_dir, fmt="csv", model_path=None):
    """Write predictions.<fmt> into ``out_dir`` atomically; return its path."""
    if fmt not in FORMATS:
        raise EFRError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    path = Path(out_dir) / f"{PREDICTIONS_NAME}.{fmt}"
    text = rows_to_csv(result.rows, result.class_names) if fmt == "csv" else rows_to_json(result, model_path)
    write_text_atomic(path, text)
    return path


def _short(text, width):
    return text if len(text) <= width else "..." + text[-(width - 3):]


def format_table(result, max_rows=50, common_root=None, max_source_width=60):
    """The rows as a fixed-width text table (at most ``max_rows``)."""
    names = result.class_names
    shown = result.rows[:max_rows]

    def source_of(row):
        if common_root is not None:
            try:
                return str(Path(row.source).relative_to(common_root))
            except ValueError:
                pass
        return row.source

    sources = [source_of(r) for r in shown]
    width = min(max_source_width, max([len("source")] + [len(s) for s in sources]))
    header = f"{'source':<{width}} {'frame':>6} {'box (x,y,w,h)':<19} {'label':<13} {'conf':>5}  " + " ".join(
        f"{n[:5]:>5}" for n in names)
    lines = [header, "-" * len(header)]
    for row, source in zip(shown, sources):
        box = "" if row.box is None else ",".join(str(v) for v in row.box)
        conf = "" if row.confidence is None else f"{row.confidence:.2f}"
        probs = " ".join(f"{row.probabilities[n]:5.2f}" if n in row.probabilities else f"{'':>5}" for n in names)
        frame = "" if row.frame is None else str(row.frame)
        lines.append(f"{_short(source, width):<{width}} {frame:>6} {box:<19} {row.label:<13} {conf:>5}  {probs}".rstrip())
    if len(result.rows) > max_rows:
        lines.append(f"... {len(result.rows) - max_rows} more rows (--table-rows N shows more; --out DIR writes them all)")
    return "\n".join(lines)


def format_summary(result):
    counts = result.label_counts()
    parts = [f"{result.photos} photo(s)"]
    if result.videos:
        parts.append(f"{result.videos} video(s)/camera(s), {result.frames} frame(s) analysed")
    parts.append(f"{result.faces} face(s)")
    parts.append(f"{result.no_face} without a face")
    parts.append(f"{len(result.skipped)} skipped (unreadable)")
    text = ", ".join(parts)
    labels = [f"{n}: {counts[n]}" for n in result.class_names if counts.get(n)]
    if labels:
        text += "\nlabels: " + ", ".join(labels)
    uncentred = sum(1 for r in result.rows if r.note)
    if uncentred:
        text += (f"\n{uncentred} face(s) not centred (--subject-norm: their person or face track shows too few "
                 "expressions; the note column says which)")
    for source, reason in result.skipped[:10]:
        text += f"\nskipped: {reason}"
    if len(result.skipped) > 10:
        text += f"\n... and {len(result.skipped) - 10} more skipped files"
    return text
