"""Stage 4: the emotion of every face in photos, folders, videos or a camera.

What happens, in order:

1. load   the model and its EFR metadata (class names, input size, and the crop
          settings it was trained with when recorded); a file without them is refused.
2. find   faces with the same code as crop.py (efr.faces.detect: the same Haar cascade,
          detection settings, square box and margin), in a pool of threads (OpenCV
          releases the GIL) while the model works on the previous batch.
3. crop   each face square, resize it to the model's input size, BGR -> RGB (the model
          contract: RGB float in [0, 255]; the model scales inside).
4. classify faces in batches of ``batch_size`` (LiteRT: each worker thread classifies
          its own runs of photos on its own single-threaded interpreter).
5. report one FaceRow per face (file or frame, box, label, confidence, probability per
          class); a photo or analysed frame with no face gets one row labelled
          ``no_face`` with no probabilities, so nothing is silently dropped.
6. write  (optional) predictions.csv / predictions.json and annotated copies of the
          photos or an annotated video, each atomically, into an output folder.

A file that cannot be read is skipped, counted and reported; only an unusable model
or a run in which nothing at all could be read is an error.  Input files are never
written: output folders inside an input folder are left out of the scan.
"""

import collections
import contextlib
import csv
import io
import json
import logging
import os
import queue
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from efr.faces import detect as faces
from efr.io import runstate
from efr.io.errors import EFRError
from efr.io.imageio import (
    UnreadableImageError,
    atomic_path,
    is_image_file,
    read_image,
    write_image,
    write_text_atomic,
)
from efr.models.litert import DEFAULT_RUNTIME, RUNTIMES
from efr.io.parallel import bounded_map

log = logging.getLogger("efr.predict")

NO_FACE = "no_face"
# --subject-norm on videos and cameras: a face track's first frames, before it has enough to centre on
TOO_FEW_FRAMES = "too_few_frames"
FORMATS = ("csv", "json")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_BATCH_SIZE = 32
ANNOTATED_DIR = "annotated"
PREDICTIONS_NAME = "predictions"
VIDEO_FOURCC = "mp4v"
CSV_FIXED = ("source", "frame", "face", "x", "y", "w", "h", "label", "confidence")
GUI_HELP = (
    'install the desktop OpenCV build: pip uninstall -y opencv-python-headless && pip install "opencv-python<5"'
)


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
# The model and how a face is prepared for it


def _image_size(meta, model_path):
    size = meta.get("image_size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    raise EFRError(f"{model_path}: EFR metadata has no valid image_size ({size!r}); use a model saved by efe_cnn.py")


def check_meta(meta, model_path):
    """Class names and (height, width) from a model's EFR metadata, or a clear error."""
    names = meta.get("class_names")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise EFRError(f"{model_path}: EFR metadata has no class_names; use a model saved by efe_cnn.py")
    return list(names), _image_size(meta, model_path)


class Predictor:
    """A loaded model plus the face finder that matches how its training crops were made.

    The crop settings come from the model's metadata (``meta["crop"]``: cascade,
    margin, size, detection settings, as crop.py recorded them) when present, else from
    efr.faces.detect' defaults, which are crop.py's defaults; arguments override both.
    """

    def __init__(self, model, meta, model_path="model", cascade=None, margin=None, faces_only=False,
                 batch_size=DEFAULT_BATCH_SIZE, max_faces=None, runtime="keras"):
        self.model = model
        self.meta = meta
        self.model_path = model_path
        self.class_names, self.image_size = check_meta(meta, model_path)
        outputs = model.output_shape[-1] if hasattr(model, "output_shape") else None
        if outputs is not None and outputs != len(self.class_names):
            raise EFRError(
                f"{model_path}: the model has {outputs} outputs but its metadata names "
                f"{len(self.class_names)} classes; the file is inconsistent: re-save it with efe_cnn.py"
            )
        crop = meta.get("crop") or {}
        self.cascade_name = cascade or crop.get("cascade") or faces.DEFAULT_CASCADE
        self.margin = float(crop.get("margin", faces.DEFAULT_MARGIN) if margin is None else margin)
        # Side of the crops the model was trained on before its pipeline resized them;
        # cropping at that side first repeats the same two resampling steps.
        self.crop_size = int(crop.get("size") or max(self.image_size))
        self.detect_kwargs = {
            "max_side": int(crop.get("detect_max_side", faces.DETECT_MAX_SIDE)),
            "scale_factor": float(crop.get("scale_factor", faces.DEFAULT_SCALE_FACTOR)),
            "min_neighbors": int(crop.get("min_neighbors", faces.DEFAULT_MIN_NEIGHBORS)),
            "min_size": float(crop.get("min_face", faces.DEFAULT_MIN_FACE)),
        }
        # crop.py's second, finer pass for photos the first one finds no face in
        self.retry_max_side = int(crop.get("retry_max_side", faces.RETRY_MAX_SIDE))
        self.faces_only = faces_only
        self.batch_size = max(1, int(batch_size))
        self.max_faces = max_faces
        faces.load_cascade(self.cascade_name)  # fail now, not in a worker thread
        self._local = threading.local()
        # Models trained on eye-levelled crops (crop.py --align eyes) get eye-levelled faces here too.
        self.align = crop.get("align") == "eyes" and not faces_only
        self.fusion = None
        from efr.models.fusion import FusionRunner, is_fusion

        if is_fusion(meta):
            self.fusion = FusionRunner(model, meta)
        # Plain classifiers run in LiteRT when it gives the same outputs (efr.models.litert); else in Keras.
        self.lite = None
        if self.fusion is None and runtime != "keras":
            from efr.models.litert import lite_classifier

            self.lite = lite_classifier(model, model_path, runtime)
        # Single-threaded interpreters that worker threads borrow to classify side by side (Runner).
        self._spare_lites = queue.SimpleQueue()
        if self.align:
            from efr.faces.landmarks import mesh_model_path

            mesh_model_path()  # fail now if the face mesh is not installed

    @property
    def subject_norm(self):
        """Whether the model centres each person's features (--subject-norm): it needs groups of faces."""
        return self.fusion is not None and self.fusion.spec.subject_norm

    def _mesh(self):
        if not hasattr(self._local, "mesh"):
            from efr.faces.landmarks import FaceMesh

            self._local.mesh = FaceMesh()
        return self._local.mesh

    def _cascade(self):
        # A CascadeClassifier is not safe to share between threads: one per thread.
        if not hasattr(self._local, "cascade"):
            self._local.cascade = faces.load_cascade(self.cascade_name)
        return self._local.cascade

    def to_model_input(self, face_bgr):
        """A BGR face crop -> RGB uint8 at the model's input size."""
        height, width = self.image_size
        if face_bgr.shape[:2] != (height, width):
            shrinking = face_bgr.shape[0] >= height and face_bgr.shape[1] >= width
            face_bgr = cv2.resize(face_bgr, (width, height),
                                  interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        return cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB)

    def locate(self, image):
        """Square face boxes in a BGR image, largest first (the whole image with faces_only)."""
        if self.faces_only:
            return [(0, 0, image.shape[1], image.shape[0])]
        boxes = faces.find_faces(self._cascade(), image, retry_max_side=self.retry_max_side, **self.detect_kwargs)
        boxes = [faces.square_box(b, image.shape, self.margin) for b in boxes]
        return boxes[: self.max_faces] if self.max_faces else boxes

    def face_crop(self, image, box):
        """The BGR face crop for ``box`` as crop.py cut it (eye-levelled for --align eyes models)."""
        if self.align:
            points = self._mesh().points(image, box)
            if points is not None:
                from efr.faces.align import align_crop

                return align_crop(image, points, self.crop_size, self.margin)[0]
        return faces.crop_square(image, box, self.crop_size)

    def crops(self, image, boxes):
        """The model inputs for ``boxes`` of ``image``: RGB uint8 at the model's size (fusion: BGR crops)."""
        prepare = (lambda face: face) if self.fusion is not None else self.to_model_input
        if self.faces_only:
            return [prepare(image)]
        return [prepare(self.face_crop(image, box)) for box in boxes]

    @property
    def runtime(self):
        """What classifies the faces: "litert" or "keras"."""
        return "litert" if self.lite is not None else "keras"

    @property
    def classifies_in_workers(self):
        """Whether worker threads can each classify their own photos (LiteRT: one interpreter per thread)."""
        return self.lite is not None

    @contextlib.contextmanager
    def _worker_lite(self):
        """A single-threaded LiteRT interpreter for this thread, kept for reuse by the next run."""
        try:
            lite = self._spare_lites.get_nowait()
        except queue.Empty:
            lite = self.lite.single_threaded()
        try:
            yield lite
        finally:
            self._spare_lites.put(lite)

    def _run_batch(self, batch, lite=None):
        lite = lite or self.lite  # a worker's own interpreter, else the shared one (None: Keras)
        if lite is not None:
            return lite(batch)
        return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)

    @property
    def tta(self):
        """The model's test-time augmentation ("flip": each face and its mirror image), as trained."""
        return self.meta.get("tta") or "none"

    def features(self, crops, flip=False):
        """Fusion models: the fused feature vectors of BGR crops (for per-person centring)."""
        return self.fusion.raw_features([cv2.flip(c, 1) for c in crops] if flip else crops)

    def classify(self, crops, in_worker=False):
        """Probabilities (N, classes) for a list of crops (from ``crops``), in batches.

        ``in_worker``: called from one of several threads classifying at once
        (``classifies_in_workers``); each uses its own single-threaded interpreter.
        """
        if not crops:
            return np.zeros((0, len(self.class_names)), np.float32)
        if self.fusion is not None:
            if self.subject_norm:
                raise EFRError("this model was trained with --subject-norm: predict with --subject-norm")
            return self.fusion.predict(crops, tta=self.tta)
        if in_worker and self.classifies_in_workers:
            with self._worker_lite() as lite:
                return self._classify_batches(crops, lite)
        return self._classify_batches(crops)

    def _classify_batches(self, crops, lite=None):
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(crops[start : start + self.batch_size]).astype(np.float32)
            probs = self._run_batch(batch, lite)
            if self.tta == "flip":
                probs = (probs + self._run_batch(np.ascontiguousarray(batch[:, :, ::-1]), lite)) / 2.0
            out.append(probs)
        probs = np.concatenate(out)
        if probs.ndim != 2 or probs.shape[1] != len(self.class_names):
            raise EFRError(f"the model returned shape {probs.shape}, expected (N, {len(self.class_names)})")
        return probs

    def rows_for(self, source, frame, boxes, probs):
        if not boxes:
            return [FaceRow(source, frame, None, None, NO_FACE, None, {})]
        rows = []
        for index, (box, p) in enumerate(zip(boxes, probs)):
            best = int(np.argmax(p))
            rows.append(FaceRow(
                source, frame, index, tuple(int(v) for v in box), self.class_names[best], float(p[best]),
                {name: float(v) for name, v in zip(self.class_names, p)},
            ))
        return rows


def load_predictor(model_path, allow_unfinished=False, runtime=DEFAULT_RUNTIME, **options):
    """Load ``model_path`` (a .keras saved by EFR, in Keras safe mode) into a Predictor.

    A model from a run that did not finish (efr.io.runstate) is refused unless ``allow_unfinished``.
    ``runtime``: "auto" (LiteRT when the model converts and gives Keras' outputs, else Keras),
    "litert" or "keras" (efr.models.litert).
    """
    from efr.models.modelio import load_model, read_meta

    model_path = Path(model_path)
    if model_path.is_dir():
        raise EFRError(f"--model {model_path} is a folder: give the .keras file, e.g. {model_path / 'best.keras'}")
    check_meta(read_meta(model_path), model_path)  # a bad file is refused before TensorFlow loads (seconds)
    runstate.check_model_finished(model_path, allow_unfinished, log)
    model, meta = load_model(model_path)
    return Predictor(model, meta, model_path=model_path, runtime=runtime, **options)


# ---------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class InputItem:
    path: Path
    kind: str  # "image" or "video"
    rel: Path  # name under the output folder's annotated/


def is_video_file(path):
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def is_predictions_file(path):
    """True for a predictions file written by predict.py (CSV or JSON, whatever it is called now)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".json"):
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(512).decode("utf-8", "replace")
    except OSError:
        return False
    if path.suffix.lower() == ".csv":
        return head.startswith(",".join(CSV_FIXED) + ",prob_")
    return head.lstrip().startswith("{") and ('"efr": "predictions"' in head
                                             or ('"model"' in head and '"class_names"' in head and '"rows"' in head))


def earlier_outputs(root):
    """Folders under ``root`` that an earlier predict.py --out wrote: they hold a predictions file.

    Their annotated copies must not be taken for new photos.  When ``root`` itself is
    one (--out was the input folder), only its annotated/ folder is left out.
    """
    root = Path(root)
    folders = []
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if any(f.is_file() and is_predictions_file(f) for f in folder.iterdir()):
            folders.append(folder / ANNOTATED_DIR if folder == root else folder)
            log.info("leaving out %s: it holds predictions of an earlier predict.py run",
                     folders[-1] if folder != root else f"{folder / ANNOTATED_DIR}")
    return folders


def collect_inputs(inputs, out_dir=None):
    """Expand files and folders (recursively) into InputItems; a path that doesn't exist is an error.

    Files that are neither images nor videos inside folders are ignored; given by name,
    they are kept (and later skipped as unreadable if they are not images).
    """
    items, used = [], {}
    for raw in inputs:
        path = raw if isinstance(raw, Path) else Path(raw)
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)  # one system call for both questions
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise EFRError(f"input {path} does not exist: give photos, folders or videos (or --camera INDEX)") from None
        except OSError as err:
            raise EFRError(f"input {path} cannot be read ({err.strerror}): fix it or leave it out") from None
        if is_dir:
            found = sorted(p for p in path.rglob("*") if p.is_file() and (is_image_file(p) or is_video_file(p)))
            if out_dir is not None:
                # This run's outputs: the whole --out folder, or only its annotated/ when --out is the
                # input folder (or holds it), whose photos are the inputs.
                own = Path(out_dir) / ANNOTATED_DIR if _inside(path, out_dir) else Path(out_dir)
                found = [p for p in found if not _inside(p, own)]
            skipped = earlier_outputs(path)
            found = [p for p in found if not any(_inside(p, folder) for folder in skipped)]
            if not found:
                log.warning("%s: no photos or videos found in this folder", path)
            top = path.name or "input"
            for file in found:
                items.append(_item(file, f"{top}/{file.relative_to(path).as_posix()}", used))
        else:
            items.append(_item(path, path.name, used))
    return items


def _item(path, rel, used):
    """The InputItem of ``path``.

    ``rel``: its name under annotated/, '/'-separated; ``used``: {output name, lower case:
    last number tried for it}.  Names are built as strings (a Path each cost more than
    reading a small crop: BENCHMARKS.md) and made a Path once.
    """
    kind = "video" if is_video_file(path) else "image"
    folder, _, name = rel.rpartition("/")
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:]) if 0 < dot < len(name) - 1 else (name, "")  # pathlib's rule
    if kind == "video":
        stem, suffix = f"{stem}_annotated", ".mp4"
    prefix = f"{folder}/" if folder else ""

    def numbered(n):
        return f"{prefix}{stem}{suffix}" if n == 1 else f"{prefix}{stem}_{n}{suffix}"

    # Two inputs with the same name (from different folders) must not share an output:
    # name, name_2, name_3, ...; the last number tried is kept, so many copies stay cheap.
    key = numbered(1).lower()
    n = used.get(key, 1)
    candidate = numbered(n)
    while candidate.lower() in used:
        n += 1
        candidate = numbered(n)
    used.setdefault(candidate.lower(), 1)
    used[key] = n
    return InputItem(path, kind, Path(candidate))


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
            text = f"{row.label} {row.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y - th - base - 2 * thickness) if row.box is not None else y
        cv2.rectangle(out, (x, top), (x + tw + 2 * thickness, top + th + base + 2 * thickness), colour, -1)
        cv2.putText(out, text, (x + thickness, top + th + thickness), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class _Found:
    """A photo or frame after detection, waiting for its faces to be classified."""

    source: str
    frame: int | None
    image: object  # BGR array, or None when it could not be read
    boxes: list
    crops: list
    error: str = ""
    analysed: bool = True  # video frames between --every steps are only drawn, not analysed
    rel: Path | None = None  # photos: the annotated copy's path under annotated/


def box_iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


class TrackCentring:
    """--subject-norm on videos and cameras: each face is centred on the running mean of its face track.

    A track follows a face from one analysed frame to the next by box overlap (IoU at
    least ``min_iou``); a face that overlaps no track of the previous frame starts a new
    one.  A track's first ``min_group - 1`` faces get the label ``too_few_frames`` and no
    probabilities: a mean of fewer faces would centre away the expression itself.
    Transductive like the photo case: a face's label depends on the track's earlier frames.
    """

    def __init__(self, predictor, min_group=None, min_iou=0.3):
        from efr.models.features import MIN_GROUP

        self.predictor = predictor
        self.min_group = int(min_group or MIN_GROUP)
        self.min_iou = min_iou
        self.tracks = []  # [{"box", "sum", "count"}] of the previous analysed frame

    def _match(self, boxes):
        """Index of the previous frame's track for each box, or None (greedy by overlap)."""
        pairs = sorted(((box_iou(b, t["box"]), i, j) for i, b in enumerate(boxes) for j, t in enumerate(self.tracks)),
                       reverse=True)
        matched, used = [None] * len(boxes), set()
        for iou, i, j in pairs:
            if iou >= self.min_iou and matched[i] is None and j not in used:
                matched[i] = j
                used.add(j)
        return matched

    def rows(self, found):
        predictor = self.predictor
        if not found.boxes:
            return predictor.rows_for(found.source, found.frame, found.boxes, [])
        raw = predictor.features(found.crops)
        tracks = []
        for box, index, vector in zip(found.boxes, self._match(found.boxes), raw):
            track = dict(self.tracks[index]) if index is not None else {"sum": np.zeros_like(vector), "count": 0}
            track.update(box=box, sum=track["sum"] + vector, count=track["count"] + 1)
            tracks.append(track)
        self.tracks = tracks
        means = np.stack([t["sum"] / t["count"] for t in tracks])
        probs = predictor.fusion.probabilities(raw, means)
        rows = predictor.rows_for(found.source, found.frame, found.boxes, probs)
        for row, track in zip(rows, tracks):
            if track["count"] < self.min_group:
                row.label, row.confidence, row.probabilities = TOO_FEW_FRAMES, None, {}
        return rows


# Photos are handed to LiteRT workers in runs; at least this many per worker (see Runner._photos_classified).
RUNS_PER_WORKER = 4


class Runner:
    """Feeds photos and frames through detection (threads) and the model (batches)."""

    def __init__(self, predictor, out_dir=None, workers=None, progress=True, show=False):
        self.predictor = predictor
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        self.show = show
        self.result = PredictionResult(class_names=predictor.class_names)
        self.stopped = False  # set when the user closes the --show window
        self.tracks = None  # TrackCentring while a video or camera runs with --subject-norm

    # -- detection, in worker threads --------------------------------------------------

    @property
    def window(self):
        """Photos in flight: a whole batch ahead, so that reading and detection go on while the model runs."""
        return 4 * self.workers + 2 * self.predictor.batch_size

    def _find(self, image, source, frame):
        boxes = self.predictor.locate(image)
        return _Found(source, frame, image, boxes, self.predictor.crops(image, boxes))

    def _find_in_file(self, item):
        try:
            image = read_image(item.path)
        except UnreadableImageError as err:
            return _Found(str(item.path), None, None, [], [], error=str(err))
        found = self._find(image, str(item.path), None)
        found.rel = item.rel
        return found

    def _find_in_frame(self, task):
        index, frame, analyse, source = task
        if not analyse:
            return _Found(source, index, frame, [], [], analysed=False)
        return self._find(frame, source, index)

    # -- classification, in batches -----------------------------------------------------

    def _classified(self, found_items):
        """Yield (found, rows) in order, classifying faces batch_size at a time."""
        waiting, n_crops = [], 0
        for found in found_items:
            waiting.append(found)
            n_crops += len(found.crops)
            # Flush on a full batch of faces, or on many photos/frames without faces
            # (a long video with nobody in it must not pile up in memory).
            if n_crops >= self.predictor.batch_size or len(waiting) >= 4 * self.predictor.batch_size:
                yield from self._flush(waiting)
                waiting, n_crops = [], 0
        yield from self._flush(waiting)

    def _flush(self, waiting):
        if self.tracks is not None:  # --subject-norm on a video or camera: frame by frame, in order
            for found in waiting:
                yield found, ([] if found.error or not found.analysed else self.tracks.rows(found))
            return
        yield from self._with_rows(waiting, self.predictor.classify([c for f in waiting for c in f.crops]))

    def _with_rows(self, waiting, probs):
        """(found, its rows) for each of ``waiting``, given the probabilities of all their crops in order."""
        start = 0
        for found in waiting:
            if found.error or not found.analysed:
                yield found, []
                continue
            n = len(found.crops)
            yield found, self.predictor.rows_for(found.source, found.frame, found.boxes, probs[start : start + n])
            start += n

    # -- photos ---------------------------------------------------------------------------

    def _photos_classified(self, items):
        """Yield (found, rows) for every photo, in order.

        LiteRT models: each worker thread reads, detects, classifies and draws a run of
        photos by itself, on its own single-threaded interpreter, so no thread waits for
        another (18 % more faces/s than workers feeding one 2-thread interpreter on 2
        cores: BENCHMARKS.md).  Keras models: workers read and detect, and this thread
        classifies their faces in batches.
        """
        if not (self.predictor.classifies_in_workers and self.workers > 1):
            found_items = bounded_map(self._find_in_file, items, self.workers, window=self.window)
            for found, rows in self._classified(found_items):
                self._write_annotated(found, rows)
                yield found, rows
            return
        # Runs of at most a batch, and at least RUNS_PER_WORKER per worker, so that the last ones
        # to finish (while the other workers have nothing left) are short.
        size = max(1, min(self.predictor.batch_size, -(-len(items) // (RUNS_PER_WORKER * self.workers))))
        runs = [items[start : start + size] for start in range(0, len(items), size)]
        for pairs in bounded_map(self._run_of_photos, runs, self.workers, window=2 * self.workers):
            yield from pairs

    def _run_of_photos(self, items):
        """In a worker: [(found, rows)] for ``items``, annotated copies written, images let go."""
        found_items = [self._find_in_file(item) for item in items]
        crops = [c for f in found_items for c in f.crops]
        pairs = list(self._with_rows(found_items, self.predictor.classify(crops, in_worker=True)))
        for found, rows in pairs:
            self._write_annotated(found, rows)
            found.image = found.crops = None
        return pairs

    def _write_annotated(self, found, rows):
        if self.out_dir is not None and not found.error:
            write_image(self._annotated_path(found), annotate(found.image, rows))

    def _annotated_path(self, found):
        return self.out_dir / ANNOTATED_DIR / found.rel

    def run_images(self, items):
        bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not self.progress)
        try:
            for found, rows in self._photos_classified(items):
                bar.update()
                if found.error:
                    self.result.skipped.append((found.source, found.error))
                    log.warning("skipped %s", found.error)
                    continue
                self.result.photos += 1
                self.result.rows.extend(rows)
                if self.out_dir is not None:
                    self.result.outputs.append(self._annotated_path(found))
        finally:
            bar.close()

    def run_images_grouped(self, items, subjects):
        """--subject-norm: every face's features first, then each person's mean, then the head.

        ``subjects``: {photo path: person}.  Transductive: a face's label depends on the
        other photos of the same person given in this run.
        """
        bar = tqdm(total=len(items), desc="photos", unit="photo", disable=not self.progress)
        found_items = bounded_map(self._find_in_file, items, self.workers, window=self.window)
        kept, blocks, mirrored, groups = [], [], [], []
        flip = self.predictor.tta == "flip"
        try:
            for found in found_items:
                bar.update()
                if found.error:
                    self.result.skipped.append((found.source, found.error))
                    log.warning("skipped %s", found.error)
                    continue
                if found.crops:
                    blocks.append(self.predictor.features(found.crops))
                    if flip:
                        mirrored.append(self.predictor.features(found.crops, flip=True))
                    groups += [subjects[found.source]] * len(found.crops)
                found.image, found.crops = None, [len(found.crops)]
                kept.append(found)
        finally:
            bar.close()
        fusion = self.predictor.fusion
        probs = np.zeros((0, len(self.predictor.class_names)), np.float32)
        if blocks:
            raw = np.concatenate(blocks)
            probs = fusion.probabilities(raw, fusion.offsets(raw, groups, where="the photos given"))
            if flip:
                raw = np.concatenate(mirrored)
                probs = (probs + fusion.probabilities(raw, fusion.offsets(raw, groups, where="the photos given"))) / 2
        start = 0
        for found in kept:
            n = found.crops[0]
            rows = self.predictor.rows_for(found.source, found.frame, found.boxes, probs[start : start + n])
            start += n
            self.result.photos += 1
            self.result.rows.extend(rows)
            if self.out_dir is not None:
                path = self._annotated_path(found)
                write_image(path, annotate(read_image(found.source), rows))
                self.result.outputs.append(path)

    # -- videos and cameras ---------------------------------------------------------------

    def run_video(self, item, every=1, max_frames=None):
        capture = cv2.VideoCapture(str(item.path))
        if not capture.isOpened():
            capture.release()
            reason = f"{item.path}: OpenCV cannot open this video (damaged, or a codec it lacks)"
            self.result.skipped.append((str(item.path), reason))
            log.warning("skipped %s", reason)
            return
        out_path = None if self.out_dir is None else self.out_dir / ANNOTATED_DIR / item.rel
        self._run_stream(capture, str(item.path), out_path, every, max_frames, live=False)

    def run_camera(self, index, every=1, max_frames=None):
        capture = cv2.VideoCapture(int(index))
        if not capture.isOpened():
            capture.release()
            raise EFRError(f"camera {index} could not be opened: check that it is connected and not in use, "
                           "or try another index (--camera 1)")
        out_path = None if self.out_dir is None else self.out_dir / ANNOTATED_DIR / f"camera{index}_annotated.mp4"
        self._run_stream(capture, f"camera:{index}", out_path, every, max_frames, live=True)

    def _frames(self, capture, source, every, max_frames):
        index = 0
        while (max_frames is None or index < max_frames) and not self.stopped:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield index, frame, index % every == 0, source
            index += 1

    def _run_stream(self, capture, source, out_path, every, max_frames, live):
        try:
            with contextlib.ExitStack() as stack:
                # keep_suffix: VideoWriter picks the container from the extension
                tmp = stack.enter_context(atomic_path(out_path, keep_suffix=True)) if out_path is not None else None
                frames_read = self._stream(capture, source, tmp, every, max_frames, live)
                if frames_read == 0:
                    raise _NoFrames()  # leaves no empty video behind
        except _NoFrames:
            reason = f"{source}: no frame could be read"
            self.result.skipped.append((source, reason))
            log.warning("skipped %s", reason)
            return
        finally:
            capture.release()
        self.result.videos += 1
        if out_path is not None:
            self.result.outputs.append(out_path)

    def _stream(self, capture, source, tmp, every, max_frames, live):
        """Analyse frames, draw them into ``tmp`` (a video) and/or a window; return frames read."""
        every = max(1, int(every))
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if 1.0 <= fps <= 240.0 else 25.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if max_frames:
            total = min(total, max_frames) if total > 0 else max_frames
        bar = tqdm(total=total if total > 0 else None, desc=f"frames of {Path(source).name}", unit="frame",
                   disable=not self.progress, leave=False)
        writer, last_rows, frames_read = None, [], 0
        self.tracks = TrackCentring(self.predictor) if self.predictor.subject_norm else None
        # Frames are read in order in this thread; the pool overlaps detection of the
        # next frames with classification of the current batch.  A camera is classified
        # frame by frame so that the window and the rows keep up with it.
        frames = self._frames(capture, source, every, max_frames)
        found_items = bounded_map(self._find_in_frame, frames, self.workers, 1 if live else 2 * self.workers + 2)
        stream = self._one_by_one(found_items) if live else self._classified(found_items)
        try:
            for found, rows in stream:
                frames_read += 1
                bar.update()
                if found.analysed:
                    self.result.frames += 1
                    self.result.rows.extend(rows)
                    last_rows = [r for r in rows if r.box is not None]
                if tmp is None and not self.show:
                    continue
                # Frames between --every steps show the latest analysed boxes.
                drawn = annotate(found.image, last_rows)
                if tmp is not None:
                    if writer is None:
                        height, width = drawn.shape[:2]
                        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps,
                                                 (width, height))
                        if not writer.isOpened():
                            raise EFRError(f"OpenCV cannot write an {VIDEO_FOURCC} video to {tmp.parent}")
                    writer.write(drawn)
                if self.show:
                    self._show(source, drawn)
        except KeyboardInterrupt:
            if not live:
                raise
            log.info("%s: stopped (Ctrl-C); keeping the %d frames analysed", source, self.result.frames)
        finally:
            stream.close()
            if writer is not None:
                writer.release()
            bar.close()
        return frames_read

    def _one_by_one(self, found_items):
        for found in found_items:
            yield from self._flush([found])

    def _show(self, source, image):
        cv2.imshow(f"EFR - {source} (q to stop)", image)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stopped = True


class _NoFrames(Exception):
    """A video that opened but gave no frame (internal signal)."""


def check_gui():
    """Raise EFRError unless cv2.imshow can open a window here."""
    info = cv2.getBuildInformation()
    gui = ""
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("", "NONE"):
        raise EFRError(f"--show needs an OpenCV build with windows, but this one is headless: {GUI_HELP}")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise EFRError("--show needs a display, and none is set (DISPLAY): run it on a desktop session, "
                       "or drop --show and use --out DIR for an annotated video")


# ---------------------------------------------------------------------------------------
# Writing the table


def rows_to_csv(rows, class_names):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_FIXED) + [f"prob_{n}" for n in class_names],
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
    for source, reason in result.skipped[:10]:
        text += f"\nskipped: {reason}"
    if len(result.skipped) > 10:
        text += f"\n... and {len(result.skipped) - 10} more skipped files"
    return text


# ---------------------------------------------------------------------------------------
# The whole stage


def photo_subjects(items, subject_regex=None):
    """{photo path: person} from RaFD names or ``subject_regex``; an error naming photos with neither."""
    from efr.crop.run import compile_subject_regex
    from efr.io.rafd import rafd_subject

    regex = compile_subject_regex(subject_regex) if subject_regex else None
    subjects, missing = {}, []
    for item in items:
        name = Path(item.path).name
        match = regex.search(name) if regex else None
        subject = match.group(1) if match else ("" if regex else rafd_subject(name))
        if subject:
            subjects[str(item.path)] = subject
        else:
            missing.append(name)
    if missing:
        how = f"--subject-regex {subject_regex!r} does not match" if regex else "no RaFD name and no --subject-regex for"
        raise EFRError(
            f"--subject-norm needs the person in every photo: {how} {len(missing)} photo(s), e.g. "
            f"{', '.join(missing[:3])}. Give --subject-regex with the subject in its first group "
            r"(e.g. '^([A-Z]{2})\.' for JAFFE)"
        )
    return subjects


def predict(model_path, inputs=(), camera=None, out_dir=None, fmt="csv", batch_size=DEFAULT_BATCH_SIZE,
            every=1, max_frames=None, faces_only=False, cascade=None, margin=None, max_faces=None, show=False,
            workers=None, progress=True, subject_norm=False, subject_regex=None, allow_unfinished=False,
            runtime=DEFAULT_RUNTIME):
    """Predict every face in ``inputs`` (photos, folders, videos) or a camera; return a PredictionResult.

    ``model_path``: a model file, or a Predictor already loaded (load_predictor) to reuse it
    across calls (then the loading options, cascade, margin, batch_size, max_faces and
    runtime, are the Predictor's own).

    Raises EFRError for an unusable model, a missing input path, or when nothing at all
    could be read.  With ``out_dir``: writes predictions.<fmt> and annotated copies.
    ``subject_norm``: for fusion models trained with --subject-norm: faces are centred on
    their person's mean (photos: people from RaFD names or ``subject_regex``; videos and
    cameras: the running mean of each face track).
    """
    if fmt not in FORMATS:
        raise EFRError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if camera is None and not inputs:
        raise EFRError("nothing to predict: give photos, folders or videos, or --camera INDEX")
    if camera is not None and inputs:
        raise EFRError("give either input files/folders or --camera, not both")
    if int(every) < 1:
        raise EFRError(f"--every {every}: expected 1 or more (analyse every Nth frame)")
    if int(batch_size) < 1:
        raise EFRError(f"--batch-size {batch_size}: expected 1 or more")
    if runtime not in RUNTIMES:
        raise EFRError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    for option, value, least in (("--max-frames", max_frames, 1), ("--max-faces", max_faces, 1),
                                 ("--workers", workers, 1), ("--camera", camera, 0)):
        if value is not None and int(value) < least:
            raise EFRError(f"{option} {value}: expected {least} or more")
    if margin is not None and not 0.0 <= float(margin) <= 2.0:
        raise EFRError(f"--margin {margin}: expected a fraction of the face side between 0 and 2 (e.g. 0.1)")
    if show:
        check_gui()
    items = collect_inputs(inputs, out_dir) if inputs else []
    if inputs and not items:
        raise EFRError(f"no photos or videos found in {', '.join(str(i) for i in inputs)}")
    subjects = None
    if subject_norm:
        # Photos are grouped by person; video and camera faces by face track (TrackCentring).
        subjects = photo_subjects([i for i in items if i.kind == "image"], subject_regex)
    if isinstance(model_path, Predictor):
        predictor, model_path = model_path, model_path.model_path
        if predictor.faces_only != bool(faces_only):
            raise EFRError("faces_only differs from the loaded Predictor's: load it with faces_only="
                           f"{bool(faces_only)}")
    else:
        if runtime == "auto" and Path(model_path).is_file():
            from efr.models.litert import worth_converting

            photos = sum(1 for i in items if i.kind == "image")
            if not worth_converting(model_path, photos, len(items) - photos + (camera is not None)):
                runtime = "keras"  # a short job: converting for LiteRT would cost more than it saves
        predictor = load_predictor(model_path, allow_unfinished=allow_unfinished, cascade=cascade, margin=margin,
                                   faces_only=faces_only, batch_size=batch_size, max_faces=max_faces,
                                   runtime=runtime)
    if predictor.subject_norm and not subject_norm:
        raise EFRError(
            f"{model_path} was trained with --subject-norm: it classifies a face relative to the other photos of "
            "the same person, so predict with --subject-norm (people from RaFD names or --subject-regex)"
        )
    if subject_norm and not predictor.subject_norm:
        raise EFRError(f"--subject-norm: {model_path} was not trained with --subject-norm (efe_cnn.py --model "
                       "fusion --subject-norm); leave the option out")
    log.info("model %s: %d classes (%s), input %dx%d, run by %s", model_path, len(predictor.class_names),
             ", ".join(predictor.class_names), predictor.image_size[1], predictor.image_size[0], predictor.runtime)
    runner = Runner(predictor, out_dir=out_dir, workers=workers, progress=progress, show=show)
    try:
        if camera is not None:
            runner.run_camera(camera, every=every, max_frames=max_frames)
        images = [i for i in items if i.kind == "image"]
        videos = [i for i in items if i.kind == "video"]
        if images and subjects is not None:
            runner.run_images_grouped(images, subjects)
        elif images:
            runner.run_images(images)
        for item in videos:
            if runner.stopped:
                break
            runner.run_video(item, every=every, max_frames=max_frames)
    finally:
        if show:
            cv2.destroyAllWindows()
    result = runner.result
    if not result.rows:
        raise EFRError(
            f"nothing could be read: {len(result.skipped)} input(s) skipped"
            + (f" (first: {result.skipped[0][1]})" if result.skipped else "")
        )
    if out_dir is not None:
        result.predictions_file = write_predictions(result, out_dir, fmt, model_path)
        result.outputs.append(result.predictions_file)
    return result
