"""FER2013 as a dataset: the original ``fer2013.csv`` or its ``<Split>/<Emotion>/`` image folders.

FER2013 (Goodfellow et al. 2013) is 35,887 web photos of faces, 48x48 greyscale, labelled with
seven expressions (no contempt), in three splits named by its ``Usage`` column: ``Training``,
``PublicTest`` (the usual validation split) and ``PrivateTest`` (the usual test split).  The
photos are faces already: they are read as they are, never cropped again.  FER2013 has no subject
ids, so one person may appear in more than one split; every report of a model trained on it says so.

Two layouts are read, both as they are:

- ``fer2013.csv`` with the columns ``emotion`` (0-6: angry, disgust, fear, happy, sad, surprise,
  neutral), ``pixels`` (2,304 space-separated grey values) and ``Usage``;
- a folder of ``<Split>/<Emotion>/*.jpg|png`` (the emotion folder names EFR's canonical ones or
  their aliases, e.g. ``angry``, ``disgust``).

``load_split`` returns uint8 arrays (N, 48, 48) and integer labels in the order of
``FER2013_EMOTIONS``, EFR's canonical order without Contemptuous.
"""

import csv
from pathlib import Path

import numpy as np

from efr.io.emotions import EMOTIONS
from efr.io.errors import EFRError

SIDE = 48
SPLITS = ("Training", "PublicTest", "PrivateTest")
# The csv's label numbers -> EFR's names (the source's order: angry, disgust, fear, happy, sad, surprise, neutral)
CSV_LABELS = ("Angry", "Disgusted", "Fearful", "Happy", "Sad", "Surprised", "Neutral")
FER2013_EMOTIONS = tuple(name for name in EMOTIONS if name in CSV_LABELS)  # EFR's order, 7 classes
NOTE = ("FER2013 has no subject ids: one person may appear in more than one of its splits, so its "
        "validation and test accuracies are not subject-disjoint")


def find_csv(source):
    """``source`` itself when it is the csv file, or the fer2013.csv inside the folder ``source``; else None."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return source
    candidate = source / "fer2013.csv"
    return candidate if candidate.is_file() else None


def _read_csv(path, split):
    images, labels = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or ())
        if missing:
            raise EFRError(f"{path}: not FER2013's csv (no column {', '.join(sorted(missing))}); "
                           f"give fer2013.csv or a folder of <Split>/<Emotion>/ images")
        for line, row in enumerate(reader, start=2):
            if row["Usage"].strip() != split:
                continue
            pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            if pixels.size != SIDE * SIDE:
                raise EFRError(f"{path}, line {line}: {pixels.size} pixels, not {SIDE}x{SIDE}; the file is damaged")
            images.append(pixels.reshape(SIDE, SIDE))
            labels.append(FER2013_EMOTIONS.index(CSV_LABELS[int(row["emotion"])]))
    return images, labels


def _read_folders(folder, progress=None):
    import cv2

    from efr.io.emotions import canonical_emotion

    images, labels, skipped = [], [], []
    for emotion_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = canonical_emotion(emotion_dir.name)
        if name not in FER2013_EMOTIONS:
            raise EFRError(f"{emotion_dir}: folder name is not one of FER2013's emotions "
                           f"({', '.join(FER2013_EMOTIONS)})")
        files = sorted(p for p in emotion_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for path in files:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                skipped.append(str(path))
                continue
            if image.shape != (SIDE, SIDE):
                image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
            images.append(image)
            labels.append(FER2013_EMOTIONS.index(name))
            if progress is not None:
                progress(1)
    return images, labels, skipped


def load_split(source, split, progress=None):
    """(images uint8 (N, 48, 48), labels int64 (N,), skipped file names) of one split of FER2013 at ``source``."""
    if split not in SPLITS:
        raise EFRError(f"unknown FER2013 split {split!r}: use one of {', '.join(SPLITS)}")
    source = Path(source)
    csv_path = find_csv(source)
    skipped = []
    if csv_path is not None:
        images, labels = _read_csv(csv_path, split)
    elif (source / split).is_dir():
        images, labels, skipped = _read_folders(source / split, progress)
    else:
        raise EFRError(f"{source}: no fer2013.csv and no {split}/ folder; give FER2013's csv or a folder "
                       f"with {split}/<Emotion>/ images")
    if not images:
        raise EFRError(f"{source}: FER2013 split {split} has no images")
    return np.stack(images), np.asarray(labels, dtype=np.int64), skipped


def check_source(source):
    """Refuse a ``source`` that is neither FER2013's csv nor a folder with Training/ and PublicTest/ (fast)."""
    source = Path(source)
    if not source.exists():
        raise EFRError(f"--data {source}: not found; give fer2013.csv or a folder with Training/ and PublicTest/")
    if find_csv(source) is not None:
        return
    missing = [split for split in ("Training", "PublicTest") if not (source / split).is_dir()]
    if missing:
        raise EFRError(f"--data {source}: no fer2013.csv and no {' or '.join(missing)}/ folder; give FER2013's csv "
                       f"or a folder of Training/<Emotion>/ and PublicTest/<Emotion>/ images")
