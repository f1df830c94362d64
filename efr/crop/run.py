"""Stage 1: a folder of raw face photos -> Dataset/{Train,Valid,Test}/<Emotion>/ face crops.

What happens, in order:

1. scan   every file under --src (recursively); images are .jpg/.png/.bmp/.tif, the rest
          is counted and ignored.
2. label  each photo: subject, emotion, gaze and camera angle from its RaFD name, or the
          emotion from its <Emotion>/ folder and the subject from --subject-regex.
3. filter RaFD photos by camera angle and gaze (default: frontal camera, frontal gaze).
4. split  subjects (not photos) into Train/Valid/Test, seeded; optionally k folds.
5. crop   in a process pool, one cascade per worker: detect the largest face on a
          downscaled grey copy, square it with a margin, resize, write a PNG atomically.
6. record one manifest row per source photo (ok / no_face / unreadable / filtered /
          unknown_label, with the reason), crop_settings.json and crop_summary.json.

Nothing under --src is ever written, moved or deleted.  Re-running with the same
settings reuses every crop the manifest lists as ok whose file exists, so an
interrupted run completes where it stopped; other settings are refused unless
--overwrite is given, so one dataset folder never mixes two recipes.

This module must not import TensorFlow or Keras: cropping needs OpenCV only.
"""

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from efr.faces import detect as faces, landmarks
from efr.faces.align import ALIGN_MODES, align_crop
from efr.io.emotions import EMOTIONS, UnknownEmotionError, canonical_emotion
from efr.io.errors import EFRError
from efr.io.imageio import PARTIAL_SUFFIX, UnreadableImageError, diagnose_file, is_image_file, read_image, write_image
from efr.io.manifest import FIELDS, MANIFEST_NAME, SPLITS, check_subject_disjoint, read_manifest, write_manifest
from efr.io.rafd import ANGLES, FRONTAL_ANGLE, GAZES, RAFD_NAME, RafdNameError, parse_rafd_name
from efr.io.runinfo import library_versions, machine_info, write_json
from efr.data.split import DEFAULT_FRACTIONS, assign_folds, split_subjects_by_class
from efr.data.synthetic.render import MARKER_NAME as SYNTHETIC_MARKER

log = logging.getLogger("efr.crop")

LAYOUTS = ("auto", "rafd", "folders")
ON_MISS = ("skip", "center", "fail")
STATUSES = ("ok", "no_face", "unreadable", "filtered", "unknown_label")
SETTINGS_NAME = "crop_settings.json"
SUMMARY_NAME = "crop_summary.json"
OUTPUT_EXT = ".png"  # lossless: the crops are training data, not previews
CHECKPOINT_SECONDS = 10.0  # how often the manifest is saved during a run, for resuming
MIN_PHOTOS_PER_WORKER = 4  # below this many photos per worker, a thread is not worth starting
UNALIGNED_REASON = "no landmarks found"


@dataclass(frozen=True)
class CropOptions:
    """Everything that decides what the dataset contains (stored in crop_settings.json)."""

    layout: str = "auto"
    subject_regex: str | None = None
    angles: tuple | None = (FRONTAL_ANGLE,)  # None keeps every camera angle
    gazes: tuple | None = ("frontal",)  # None keeps every gaze
    cascade: str = faces.DEFAULT_CASCADE
    margin: float = faces.DEFAULT_MARGIN
    size: int = faces.DEFAULT_IMAGE_SIZE
    fractions: tuple = DEFAULT_FRACTIONS
    seed: int = 0
    folds: int = 0
    on_miss: str = "skip"
    # Posed data sets (RaFD, KDEF, JAFFE, CK+) show one face filling 40-50% of the
    # frame's shorter side, so the cascade needs neither full resolution nor small
    # windows: a 256 px copy and faces >= 20% of the shorter side find the faces the
    # original full-frame search finds in RaFD, JAFFE and synthetic frames, several
    # times faster (bench/bench_crop.py); a photo with no face there gets a second
    # look at 512 px.
    detect_max_side: int = faces.DETECT_MAX_SIDE
    retry_max_side: int = faces.RETRY_MAX_SIDE
    scale_factor: float = faces.DEFAULT_SCALE_FACTOR
    min_neighbors: int = faces.DEFAULT_MIN_NEIGHBORS
    min_face: float = faces.DEFAULT_MIN_FACE
    # "eyes": the face mesh (efr.faces.landmarks) finds the eyes in the Haar box and the crop is
    # turned so that they are level, with the Haar crops' framing (efr.faces.align).
    align: str = "none"

    def detect_kwargs(self):
        """The keyword arguments of ``efr.faces.detect.find_faces`` these options give."""
        return {"max_side": self.detect_max_side, "retry_max_side": self.retry_max_side,
                "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors, "min_size": self.min_face}


# ---------------------------------------------------------------------------------------
# Options and folders


def parse_choice_list(value, choices, option):
    """'090' / '045,090' / 'all' -> tuple of choices, or None for all."""
    if value is None or str(value).strip().lower() == "all":
        return None
    items = [v.strip() for v in str(value).replace(" ", ",").split(",") if v.strip()]
    if option == "--gaze":
        items = [v.lower() for v in items]
    bad = [v for v in items if v not in choices]
    if bad or not items:
        raise EFRError(f"{option} {value}: expected 'all' or one or more of {', '.join(choices)} (comma-separated)")
    return tuple(sorted(set(items), key=choices.index))


def parse_angles(value):
    return parse_choice_list(value, ANGLES, "--angle")


def parse_gazes(value):
    return parse_choice_list(value, GAZES, "--gaze")


def check_options(options):
    """Raise EFRError for option values that cannot work, before any file is touched."""
    if options.layout not in LAYOUTS:
        raise EFRError(f"--layout {options.layout}: expected one of {', '.join(LAYOUTS)}")
    if options.on_miss not in ON_MISS:
        raise EFRError(f"--on-miss {options.on_miss}: expected one of {', '.join(ON_MISS)}")
    if options.size < 8:
        raise EFRError(f"--size {options.size}: the crop side must be at least 8 pixels")
    if not 0.0 <= options.margin <= 2.0:
        raise EFRError(f"--margin {options.margin}: expected a fraction of the face side between 0 and 2 (e.g. 0.1)")
    if options.folds < 0 or options.folds == 1:
        raise EFRError(f"--folds {options.folds}: use 0 (no folds) or 2 or more")
    if options.min_neighbors < 0:
        raise EFRError(f"--min-neighbors {options.min_neighbors}: expected 0 or more")
    if not 0.0 <= options.min_face <= 1.0:
        raise EFRError(f"--min-face {options.min_face}: expected a fraction of the photo's shorter side, 0 to 1")
    if options.subject_regex is not None:
        compile_subject_regex(options.subject_regex)
    faces.cascade_path(options.cascade)
    if options.align not in ALIGN_MODES:
        raise EFRError(f"--align {options.align}: expected one of {', '.join(ALIGN_MODES)}")
    if options.align == "eyes":
        landmarks.mesh_model_path()  # the model file must be there before any photo is read


def compile_subject_regex(pattern):
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise EFRError(f"--subject-regex {pattern!r} is not a valid regular expression: {err}") from err
    if regex.groups < 1:
        raise EFRError(
            f"--subject-regex {pattern!r} has no group: put the subject id in parentheses, "
            r"e.g. '^([A-Z]{2})\.' for JAFFE's KA.AN1.39.tiff"
        )
    return regex


def check_folders(src, dst):
    """Resolve --src and --dst; refuse a missing source and any nesting of the two."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.exists():
        raise EFRError(f"source folder {src} does not exist: give --src the folder that holds the photos")
    if not src.is_dir():
        raise EFRError(f"--src {src} is a file, not a folder: give the folder that holds the photos")
    src_abs, dst_abs = src.resolve(), dst.resolve()
    if dst_abs == src_abs or dst_abs.is_relative_to(src_abs):
        raise EFRError(
            f"output folder {dst} is inside the source folder {src}: crop.py never writes under --src; "
            "choose a --dst outside it (e.g. a sibling folder named Dataset)"
        )
    if src_abs.is_relative_to(dst_abs):
        raise EFRError(
            f"source folder {src} is inside the output folder {dst}: choose a --dst that does not contain the photos"
        )
    if dst.exists() and not dst.is_dir():
        raise EFRError(f"--dst {dst} is a file: give a folder (it is created if missing)")
    return src_abs, dst_abs


# ---------------------------------------------------------------------------------------
# Scanning and labelling


def scan_source(src):
    """(image paths, ignored paths) under ``src``, both sorted; hidden folders are skipped.

    efr.data.synthetic.render's marker file (it says the photos are drawn, for the reports) is not
    counted as an ignored file.
    """
    images, ignored = [], []
    for folder, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name == SYNTHETIC_MARKER:
                continue
            path = Path(folder) / name
            (images if is_image_file(path) else ignored).append(path)
    return images, ignored


def looks_like_rafd(path):
    return RAFD_NAME.match(Path(path).stem) is not None


def detect_layout(relative_paths):
    """'rafd' when most file names follow the RaFD rule, else 'folders'."""
    matching = sum(looks_like_rafd(p) for p in relative_paths)
    return "rafd" if matching * 2 > len(relative_paths) else "folders"


def new_row(source):
    row = dict.fromkeys(FIELDS, "")
    row.update(source=source, kind="original")
    return row


def label_rafd(row, angles, gazes):
    """Fill subject/emotion/gaze/angle from the RaFD name; mark unknown or filtered photos."""
    try:
        name = parse_rafd_name(row["source"])
    except (RafdNameError, UnknownEmotionError) as err:
        row.update(status="unknown_label", reason=str(err))
        return row
    row.update(subject=name.subject, emotion=name.emotion, gaze=name.gaze, angle=name.angle)
    if angles is not None and name.angle not in angles:
        row.update(status="filtered", reason=f"camera angle {name.angle} not kept (--angle {','.join(angles)})")
    elif gazes is not None and name.gaze not in gazes:
        row.update(status="filtered", reason=f"gaze {name.gaze} not kept (--gaze {','.join(gazes)})")
    return row


def emotion_from_folders(source):
    """(emotion, folder name) from the nearest enclosing folder named after an emotion, else (None, top folder)."""
    folders = source.split("/")[:-1]
    for folder in reversed(folders):
        try:
            return canonical_emotion(folder), folder
        except UnknownEmotionError:
            continue
    return None, (folders[0] if folders else None)


def label_folders(row, subject_regex):
    """Fill emotion from the folder name and subject from the file name (``subject_regex``)."""
    emotion, folder = emotion_from_folders(row["source"])
    if emotion is None:
        where = f"folder {folder!r} is not" if folder else "the photo is not inside"
        row.update(
            status="unknown_label",
            reason=f"{where} an emotion folder: expected one of {', '.join(EMOTIONS)} "
            "(or an alias such as anger, fear, happiness)",
        )
        return row
    row.update(emotion=emotion, folder=folder)
    if subject_regex is not None:
        match = subject_regex.search(row["source"].rsplit("/", 1)[-1])
        if not match or not match.group(1):
            row.update(
                status="unknown_label",
                reason=f"file name does not match --subject-regex {subject_regex.pattern!r}, so its subject is unknown",
            )
        else:
            row["subject"] = match.group(1)
    return row


def label_photos(relative_paths, layout, options):
    """Manifest rows (without split/output yet) for every image; status '' means 'to crop'."""
    regex = compile_subject_regex(options.subject_regex) if options.subject_regex else None
    rows = []
    for source in relative_paths:
        row = new_row(source)
        if layout == "rafd":
            label_rafd(row, options.angles, options.gazes)
        else:
            label_folders(row, regex)
        rows.append(row)
    return rows


def output_names(rows):
    """Output path per pending row: <split>/<Emotion>/<stem>.png, made unique when stems collide."""
    stems = Counter((r["split"], r["emotion"], Path(r["source"]).stem.lower()) for r in rows)
    for row in rows:
        stem = Path(row["source"]).stem
        if stems[(row["split"], row["emotion"], stem.lower())] > 1:
            # Two photos with one name (e.g. a.jpg and a.png, or the same name in two subfolders).
            stem += "_" + hashlib.sha1(row["source"].encode("utf-8")).hexdigest()[:8]
        row["output"] = f"{row['split']}/{row['emotion']}/{stem}{OUTPUT_EXT}"


def assign_splits(rows, options, by_image):
    """Give every pending row its split (and fold) from its subject, or from itself when by_image.

    Subject-disjoint and class-aware (efr.data.split.split_subjects_by_class): returns
    ({key: split}, {split: [classes it could not get]}).
    """
    keys = [r["source"] if by_image else r["subject"] for r in rows]
    subject_classes = {}
    for row, key in zip(rows, keys):
        subject_classes.setdefault(key, set()).add(row["emotion"])
    splits, missing = split_subjects_by_class(subject_classes, options.fractions, options.seed)
    folds = {}
    if options.folds:
        # Folds deal out every subject, independent of the split: cross-validation
        # (efe_cnn.py --folds) pools the splits and holds out one fold at a time.
        folds = assign_folds(list(splits), options.folds, options.seed)
    for row, key in zip(rows, keys):
        row["split"] = splits[key]
        row["fold"] = folds.get(key, "")
    return splits, missing


def coverage_message(missing, rows):
    """Say which classes could not reach which split, and why (too few subjects have them)."""
    parts = []
    for split, classes in missing.items():
        for emotion in classes:
            holders = len({r["subject"] or r["source"] for r in rows if r["emotion"] == emotion})
            parts.append(f"{split} has no {emotion} ({holders} subject(s) have {emotion} photos; "
                         f"{'Train' if split != 'Train' else 'another split'} got them first)")
    return ("class-aware split: " + "; ".join(parts) + ". efe_cnn.py trains on this and reports what a missing "
            "class means (none in Valid: weaker early stopping; none in Test: that class is not scored)")


def drop_unreadable_sources(rows, src):
    """Mark pending rows whose photo is no image at all (a quick look at its bytes) as unreadable.

    Done before the split, so that a subject with no usable photo takes no split slot.
    """
    for row in rows:
        problem = diagnose_file(Path(src) / row["source"])
        if problem:
            row.update(status="unreadable",
                       reason=f"{Path(src) / row['source']}: {problem}; replace it with a photo, re-copy it, or remove it")


# ---------------------------------------------------------------------------------------
# The settings a dataset folder was made with


def settings_record(src, layout, options):
    """The JSON-able settings that decide the dataset's content."""
    record = asdict(options)
    record["src"] = str(src)
    record["layout"] = layout
    record["angles"] = "all" if options.angles is None else list(options.angles)
    record["gazes"] = "all" if options.gazes is None else list(options.gazes)
    record["fractions"] = [round(f, 6) for f in options.fractions]
    record["cascade"] = str(options.cascade)
    return record


def read_settings(dst):
    path = Path(dst) / SETTINGS_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError) as err:
        raise EFRError(f"{path}: unreadable ({err}); delete it or use a new --dst") from err


_OPTION_NAMES = {
    "src": "--src", "layout": "--layout", "subject_regex": "--subject-regex", "angles": "--angle",
    "gazes": "--gaze", "cascade": "--cascade", "margin": "--margin", "size": "--size", "fractions": "--split",
    "seed": "--seed", "folds": "--folds", "on_miss": "--on-miss", "min_neighbors": "--min-neighbors",
    "min_face": "--min-face", "detect_max_side": "detection size", "retry_max_side": "detection retry size",
    "scale_factor": "detection scale factor", "align": "--align",
}


def settings_differences(old, new):
    """Human-readable list of settings that differ between two records."""
    keys = sorted(set(old) | set(new))
    return [
        f"{_OPTION_NAMES.get(k, k)} was {old.get(k)!r}, now {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)
    ]


def _our_entries(dst):
    """The record files crop.py (and data_aug.py, augment.json) keep at the top of a Dataset folder."""
    return [Path(dst) / name for name in (MANIFEST_NAME, SETTINGS_NAME, SUMMARY_NAME, "augment.json",
                                          landmarks.LANDMARKS_NAME)]


def prepare_destination(dst, settings, overwrite):
    """Check --dst against the settings it was made with; clear it when --overwrite. Returns 'new'/'resume'."""
    dst = Path(dst)
    old = read_settings(dst)
    non_empty = dst.is_dir() and any(dst.iterdir())
    if non_empty and not overwrite:
        if old is None:
            raise EFRError(
                f"output folder {dst} is not empty and was not made by crop.py (no {SETTINGS_NAME}): "
                "choose a new or empty --dst, or add --overwrite to replace its Train/Valid/Test folders"
            )
        differences = settings_differences(old, settings)
        if differences:
            raise EFRError(
                f"output folder {dst} was made with other settings ({'; '.join(differences)}): "
                "choose a new --dst, or add --overwrite to replace it"
            )
        return "resume"
    if non_empty and overwrite:
        remove_previous_output(dst)
    return "new"


def remove_previous_output(dst):
    """--overwrite: remove what an earlier crop.py (and data_aug.py) run made, and nothing else.

    Only files its manifest lists (crops and augmented copies), its own record files and
    temporary files are removed; emotion and split folders go once empty.  Any other file
    under Train/Valid/Test (a photo of the user's own, a file the manifest does not know)
    stops the run before anything is deleted, naming the files.
    """
    dst = Path(dst)
    listed = {r["output"] for r in read_manifest(dst) if r["output"]}
    ours, foreign = [], []
    for split in SPLITS:
        split_dir = dst / split
        if not split_dir.is_dir():
            continue
        for path in sorted(p for p in split_dir.rglob("*") if p.is_file() or p.is_symlink()):
            rel = path.relative_to(dst).as_posix()
            (ours if rel in listed or PARTIAL_SUFFIX in path.name else foreign).append(path)
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise EFRError(
            f"--overwrite stops: {len(foreign)} file(s) under {dst} are not listed in its {MANIFEST_NAME}, so crop.py "
            f"did not make them and will not delete them: {shown}. Move them out of {dst} (or choose a new --dst)"
        )
    log.info("--overwrite: removing %d file(s) listed in %s", len(ours), dst / MANIFEST_NAME)
    for path in ours:
        path.unlink()
    for split in SPLITS:  # folders left empty, deepest first
        split_dir = dst / split
        if split_dir.is_dir():
            for folder in sorted((p for p in split_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(folder.iterdir()):
                    folder.rmdir()
            if not any(split_dir.iterdir()):
                split_dir.rmdir()
    for entry in _our_entries(dst):
        if entry.is_file():
            entry.unlink()


def remove_partial_files(dst):
    """Temporary files left by a killed run (atomic writes that never got renamed)."""
    removed = 0
    for split in SPLITS:
        for path in (Path(dst) / split).glob(f"**/.*{PARTIAL_SUFFIX}*"):
            path.unlink()
            removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)


# ---------------------------------------------------------------------------------------
# Cropping one photo (runs in the worker threads)

# Each worker thread's own cascade and face mesh (neither is safe to share between threads).
_WORKER = threading.local()


def init_worker(cascade_file, detect_kwargs, align="none"):
    """Thread-pool initializer: load the cascade (and the face mesh for --align eyes) once per thread."""
    _WORKER.cascade = faces.load_cascade(cascade_file)
    _WORKER.detect = detect_kwargs
    _WORKER.mesh = landmarks.FaceMesh() if align == "eyes" else None


def crop_one(task):
    """Detect, crop and write one photo. ``task`` = (source file, output file, size, margin, on_miss).

    Returns {"status", "reason", "box", "landmarks"}; a bad photo is a result, never an
    exception.  With the face mesh loaded (--align eyes) the crop is eye-levelled and
    "landmarks" holds the 468 points in crop pixels (None where the mesh found no face:
    that crop stays unaligned and its reason says so).
    """
    source, output, size, margin, on_miss = task
    try:
        image = read_image(source)
    except UnreadableImageError as err:
        return {"status": "unreadable", "reason": str(err), "box": None, "landmarks": None}
    try:
        boxes = faces.find_faces(_WORKER.cascade, image, **_WORKER.detect)
    except cv2.error as err:  # an image OpenCV decodes but cannot process; keep going
        return {"status": "unreadable", "reason": f"{source}: OpenCV failed on it ({err.err})", "box": None,
                "landmarks": None}
    reasons = []
    if boxes:
        box = faces.square_box(boxes[0], image.shape, margin)
        if len(boxes) > 1:
            reasons.append(f"{len(boxes)} faces found; kept the largest")
    elif on_miss == "center":
        box = faces.center_box(image.shape)
        reasons.append("no face found; centre square crop (--on-miss center)")
    else:
        return {"status": "no_face", "reason": "no face found by the Haar cascade", "box": None, "landmarks": None}
    mesh = _WORKER.mesh
    points = mesh.points(image, boxes[0]) if mesh is not None and boxes else None
    if points is not None:
        crop, crop_points = align_crop(image, points, size, margin)
    else:
        crop, crop_points = faces.crop_square(image, box, size), None
        if mesh is not None:
            reasons.append(f"{UNALIGNED_REASON}: unaligned crop")
    write_image(output, crop)
    return {"status": "ok", "reason": "; ".join(reasons), "box": box, "landmarks": crop_points}


def run_tasks(tasks, cascade_file, detect_kwargs, workers, progress, align="none"):
    """Yield (index, result) for every task, in a pool of ``workers`` threads (inline for 1).

    Threads, not processes: OpenCV releases the GIL while it decodes, detects, resizes and
    encodes, so 2 threads crop 1.8x one on 2 cores, with none of a process pool's ~1 s
    start-up (which made small runs slower than large ones).  While the pool runs, OpenCV's
    own thread pool is set to one thread (the workers already use every core) and restored after.
    """
    bar = tqdm(total=len(tasks), desc="cropping", unit="photo", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(tasks) <= 1:
            init_worker(cascade_file, detect_kwargs, align=align)
            for index, task in enumerate(tasks):
                yield index, crop_one(task)
                bar.update()
            return
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, initializer=init_worker,
                                                     initargs=(cascade_file, detect_kwargs, align))
        try:
            for index, result in enumerate(pool.map(crop_one, tasks)):
                yield index, result
                bar.update()
        finally:
            # Ctrl-C or an error: photos not started are dropped, the ones being cropped finish (atomic writes).
            pool.shutdown(wait=True, cancel_futures=True)
            cv2.setNumThreads(cv_threads)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------
# The summary


@dataclass
class CropSummary:
    """What a crop run did: counts per status, images per split x emotion, what was left out and why."""

    src: str
    dst: str
    layout: str
    counts: dict = field(default_factory=dict)  # status -> photos
    table: dict = field(default_factory=dict)  # split -> emotion -> crops written or reused
    subjects: dict = field(default_factory=dict)  # split -> number of subjects with crops
    written: int = 0
    reused: int = 0
    centre_crops: int = 0
    several_faces: int = 0
    align: str = "none"
    unaligned: list = field(default_factory=list)  # --align eyes: crops whose landmarks were not found
    ignored_files: int = 0
    ignored_examples: list = field(default_factory=list)
    mapped_folders: dict = field(default_factory=dict)  # folder name -> canonical emotion
    unknown_labels: dict = field(default_factory=dict)  # reason -> photos
    no_face: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # [source, reason]
    split_by_image: bool = False
    warnings: list = field(default_factory=list)

    @property
    def usable(self):
        return self.counts.get("ok", 0)

    def format(self):
        """The summary as text for the terminal."""
        lines = [f"crop: {self.src} -> {self.dst} (layout: {self.layout})"]
        lines.append(
            "photos: " + ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES)
            + f"; {self.ignored_files} non-image file(s) ignored"
        )
        lines.append(f"crops: {self.written} written, {self.reused} already done; {self.centre_crops} centre crops")
        if self.align == "eyes":
            lines.append(f"eye-levelled: {self.usable - len(self.unaligned)} of {self.usable} crops "
                         f"({len(self.unaligned)} without landmarks kept unaligned; landmarks in "
                         f"{landmarks.LANDMARKS_NAME})")
        emotions = [e for e in EMOTIONS if any(self.table.get(s, {}).get(e) for s in SPLITS)]
        if emotions:
            unit = "images (split by image)" if self.split_by_image else "subjects"
            width = max(len(e) for e in emotions + ["emotion", unit])
            lines.append("")
            lines.append(f"{'emotion':<{width}} " + " ".join(f"{s:>6}" for s in (*SPLITS, "total")))
            for emotion in emotions:
                cells = [self.table.get(s, {}).get(emotion, 0) for s in SPLITS]
                lines.append(f"{emotion:<{width}} " + " ".join(f"{c:>6}" for c in (*cells, sum(cells))))
            totals = [sum(self.table.get(s, {}).values()) for s in SPLITS]
            lines.append(f"{'total':<{width}} " + " ".join(f"{c:>6}" for c in (*totals, sum(totals))))
            lines.append(f"{unit:<{width}} " + " ".join(f"{self.subjects.get(s, 0):>6}" for s in SPLITS))
        if self.mapped_folders:
            lines.append("")
            lines.append("folders mapped: " + ", ".join(f"{k} -> {v}" for k, v in sorted(self.mapped_folders.items())))
        for title, items in (
            ("no face found", self.no_face),
            ("no landmarks found (unaligned crop)", self.unaligned),
            ("unreadable", [f"{s}: {r}" for s, r in self.unreadable]),
            ("unknown labels", [f"{n} x {r}" for r, n in sorted(self.unknown_labels.items())]),
            ("non-image files ignored (e.g.)", self.ignored_examples),
        ):
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  {item}" for item in items[:10])
                if len(items) > 10:
                    lines.append(f"  ... {len(items) - 10} more (see {MANIFEST_NAME})")
        for warning in self.warnings:
            lines.append(f"WARNING: {warning}")
        return "\n".join(lines)

    def raise_if_unusable(self):
        """Raise EFRError when the run produced no crop at all."""
        if not self.usable:
            raise EFRError(
                f"no face crops came out of {self.src}: "
                + ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES if self.counts.get(s))
                + f"; see {Path(self.dst) / MANIFEST_NAME} for the reason per photo"
                + ("; try --on-miss center if the photos are already face crops" if self.counts.get("no_face") else "")
            )


def make_summary(src, dst, layout, rows, ignored, mapped, written, reused, by_image, warnings):
    summary = CropSummary(src=str(src), dst=str(dst), layout=layout, written=written, reused=reused)
    summary.counts = dict(Counter(r["status"] for r in rows if r.get("kind", "original") == "original"))
    table = defaultdict(Counter)
    subjects = defaultdict(set)
    for row in rows:
        if row.get("kind", "original") != "original":
            continue
        if row["status"] == "ok":
            table[row["split"]][row["emotion"]] += 1
            subjects[row["split"]].add(row["source"] if by_image else row["subject"])
            summary.centre_crops += row["reason"].startswith("no face found")
            summary.several_faces += "faces found" in row["reason"]
            if UNALIGNED_REASON in row["reason"]:
                summary.unaligned.append(row["source"])
        elif row["status"] == "no_face":
            summary.no_face.append(row["source"])
        elif row["status"] == "unreadable":
            summary.unreadable.append([row["source"], row["reason"]])
    summary.table = {s: dict(table[s]) for s in SPLITS if s in table}
    summary.subjects = {s: len(subjects[s]) for s in SPLITS if s in subjects}
    reasons = Counter(_short_reason(r) for r in rows if r["status"] == "unknown_label")
    summary.unknown_labels = dict(reasons)
    summary.ignored_files = len(ignored)
    summary.ignored_examples = [str(p) for p in ignored[:10]]
    summary.mapped_folders = dict(mapped)
    summary.split_by_image = by_image
    summary.warnings = list(warnings)
    for split in SPLITS:
        if not summary.table.get(split) and written + reused:
            summary.warnings.append(f"{split} has no crops (no face found for its subjects?)")
    return summary


def _short_reason(row):
    # Group unknown labels by what was wrong, without the per-file name.
    reason = row["reason"]
    return reason.split(": ", 1)[1] if reason.startswith("'") and ": " in reason else reason


# ---------------------------------------------------------------------------------------
# The stage


def _manifest_rows(rows):
    return sorted(rows, key=lambda r: (r.get("kind", "original") != "original", r["source"], r.get("output", "")))


def _clean(row):
    return {k: v for k, v in row.items() if k != "folder"}


def crop_dataset(src, dst, options=CropOptions(), workers=None, overwrite=False, progress=True):
    """Run stage 1 (see the module docstring) and return a CropSummary.

    Raises EFRError for a problem with the folders or options; a bad photo only
    becomes a manifest row.  The caller decides what an empty result means
    (``summary.raise_if_unusable()``).
    """
    check_options(options)
    if workers is not None and int(workers) < 1:
        raise EFRError(f"--workers {workers}: expected 1 or more")
    src, dst = check_folders(src, dst)
    images, ignored = scan_source(src)
    if ignored:
        log.info("ignoring %d non-image file(s) under %s (e.g. %s)", len(ignored), src, ignored[0].name)
    if not images:
        raise EFRError(
            f"no images (jpg, png, bmp, tif) under {src}"
            + (f"; {len(ignored)} other file(s) ignored, e.g. {ignored[0].name}" if ignored else " (empty folder)")
            + ": give --src the folder that holds the photos"
        )
    relative = [p.relative_to(src).as_posix() for p in images]

    layout = options.layout
    if layout == "auto":
        layout = detect_layout(relative)
        log.info("layout: %s (%d of %d file names follow the RaFD rule)", layout,
                 sum(looks_like_rafd(p) for p in relative), len(relative))
    warnings = []
    if layout == "rafd" and options.subject_regex:
        log.warning("--subject-regex is ignored: RaFD names carry the subject")
    defaults = CropOptions()
    if layout == "folders" and (options.angles, options.gazes) != (defaults.angles, defaults.gazes):
        log.info("--angle/--gaze filters apply to RaFD names only; folder layout keeps every photo")

    rows = label_photos(relative, layout, options)
    mapped = {r["folder"]: r["emotion"] for r in rows if r.get("folder") and r["folder"] != r["emotion"]}
    for folder, emotion in sorted(mapped.items()):
        log.info("folder %r read as emotion %s", folder, emotion)
    drop_unreadable_sources([r for r in rows if not r["status"]], src)
    pending = [r for r in rows if not r["status"]]
    unknown = [r for r in rows if r["status"] == "unknown_label"]
    if unknown:
        log.warning("%d photo(s) have no usable label, e.g. %s: %s", len(unknown), unknown[0]["source"],
                    unknown[0]["reason"])
    if not pending:
        raise EFRError(
            f"none of the {len(rows)} photos under {src} can be used: "
            + ", ".join(f"{n} {s}" for s, n in Counter(r['status'] for r in rows).items())
            + (f" (e.g. {unknown[0]['source']}: {unknown[0]['reason']})" if unknown else "")
            + "; expected RaFD file names or <Emotion>/ folders, and check --angle/--gaze"
        )

    by_image = layout == "folders" and not options.subject_regex
    if by_image:
        message = (
            "no --subject-regex: subjects are unknown, so photos are split one by one and the SAME PERSON "
            "CAN BE IN TRAIN AND TEST; test scores will then be optimistic. Give --subject-regex "
            r"(e.g. '^([A-Z]{2})\.' for JAFFE) to split by person."
        )
        log.warning("WARNING: %s", message)
        warnings.append(message)
    splits, missing = assign_splits(pending, options, by_image)
    if missing:
        warnings.append(coverage_message(missing, pending))
        log.warning("warning: %s", warnings[-1])
    log.info("split: %s", ", ".join(f"{s} {sum(v == s for v in splits.values())}" for s in SPLITS)
             + (" images" if by_image else " subjects"))
    output_names(pending)

    settings = settings_record(src, layout, options)
    state = prepare_destination(dst, settings, overwrite)
    dst.mkdir(parents=True, exist_ok=True)
    if state == "new":
        write_json(dst / SETTINGS_NAME, {
            "settings": settings, "requested_layout": options.layout,
            "versions": library_versions(), "machine": machine_info(),
        })
    remove_partial_files(dst)

    # Re-use what an earlier run with these settings finished.
    old_rows = read_manifest(dst) if state == "resume" else []
    old_ok = {
        (r["source"], r["output"]): r for r in old_rows
        if r["kind"] == "original" and r["status"] == "ok" and (dst / r["output"]).is_file()
    }
    done, tasks, task_rows = [], [], []
    for row in pending:
        previous = old_ok.get((row["source"], row["output"]))
        if previous is not None:
            # The crop is done; labels, split and fold come from this run's plan.
            done.append(_clean(row) | {k: previous[k] for k in ("x", "y", "w", "h", "status", "reason")})
        else:
            tasks.append((str(src / row["source"]), str(dst / row["output"]), options.size, options.margin,
                          options.on_miss))
            task_rows.append(row)
    reused = len(done)
    planned = {r["output"] for r in pending}
    # Rows data_aug.py added for images it found in the folders (their source is the
    # dataset file itself) are not crop.py's to judge: keep them as they are.
    listed = [r for r in old_rows if r["kind"] == "original" and r["source"] and r["source"] == r["output"]]
    for row in old_rows:  # crops of photos that are gone or moved split: ours to remove
        output = row["output"]
        if row in listed:
            continue
        if row["kind"] == "original" and output and output not in planned and (dst / output).is_file():
            log.info("removing stale crop %s (no longer in the plan)", output)
            (dst / output).unlink()
    fixed = [_clean(r) for r in rows if r["status"]]  # filtered and unknown_label: no work

    augmented = [r for r in old_rows if r["kind"] != "original"] + listed

    # Landmarks of the crops (--align eyes): those of reused crops come from the earlier run's file.
    old_points = landmarks.read_landmarks_file(dst) if state == "resume" and options.align == "eyes" else {}
    points = {r["output"]: old_points[r["output"]] for r in done if r["output"] in old_points}

    def save(extra=augmented):
        if options.align == "eyes":
            landmarks.write_landmarks_file(dst, points)
        write_manifest(dst, _manifest_rows(fixed + done + list(extra)))

    if reused:
        log.info("%d crop(s) already done by an earlier run with the same settings", reused)
    # Starting a worker costs about half a second (a fresh interpreter importing OpenCV),
    # more than cropping a dozen photos: small jobs get fewer workers, tiny ones none.
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) // MIN_PHOTOS_PER_WORKER))
    detect_kwargs = options.detect_kwargs()
    cascade_file = str(faces.cascade_path(options.cascade))
    last_save = time.monotonic()
    try:
        for index, result in run_tasks(tasks, cascade_file, detect_kwargs, workers, progress, options.align):
            row = _clean(task_rows[index])
            if result.get("landmarks") is not None:
                points[row["output"]] = result["landmarks"]
            row.update(status=result["status"], reason=result["reason"])
            if result["box"] is not None:
                row.update(zip("xywh", result["box"]))
            else:
                row["output"] = ""
            done.append(row)
            if result["status"] == "no_face" and options.on_miss == "fail":
                raise EFRError(
                    f"no face found in {src / row['source']} (--on-miss fail): remove the photo, or use "
                    "--on-miss skip (leave it out) or --on-miss center (centre square crop)"
                )
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                save()
                last_save = time.monotonic()
    except BaseException:
        # Interrupted or stopped: record the finished crops so that a re-run resumes.
        save()
        raise
    # Copies data_aug.py made from crops that are no longer in the dataset are stale too.
    ok_outputs = {r["output"] for r in done if r["status"] == "ok"}
    kept = []
    for row in augmented:
        if row in listed or row["parent"] in ok_outputs:
            kept.append(row)
        elif row["output"] and (dst / row["output"]).is_file():
            log.info("removing augmented copy %s of a crop no longer in the dataset", row["output"])
            (dst / row["output"]).unlink()
    save(kept)

    final = fixed + done
    if not by_image:
        check_subject_disjoint(final)
    written = sum(r["status"] == "ok" for r in done) - reused
    summary = make_summary(src, dst, layout, final, ignored, mapped, written, reused, by_image, warnings)
    summary.align = options.align
    write_json(dst / SUMMARY_NAME, asdict(summary))
    return summary


def settings_changed(src, dst, options=CropOptions()):
    """True when ``dst`` is a dataset crop.py made with settings other than these (a re-run needs --overwrite).

    False for a new folder, and for one made with the same settings (a re-run reuses its crops).
    """
    check_options(options)
    src, dst = check_folders(src, dst)
    old = read_settings(dst)
    if old is None:
        return False
    layout = options.layout
    if layout == "auto":
        images, _ = scan_source(src)
        layout = detect_layout([p.relative_to(src).as_posix() for p in images])
    return bool(settings_differences(old, settings_record(src, layout, options)))
