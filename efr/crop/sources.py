"""The source photos: found, their layout detected (RaFD names or <Emotion>/ folders), labelled with
subject and emotion, given output names and a subject-disjoint split."""

import hashlib
import os
from collections import Counter
from pathlib import Path

from efr.crop.options import compile_subject_regex
from efr.crop.workers import OUTPUT_EXT
from efr.data.split import assign_folds, split_subjects_by_class
from efr.data.synthetic.render import MARKER_NAME as SYNTHETIC_MARKER
from efr.io.emotions import EMOTIONS, UnknownEmotionError, canonical_emotion
from efr.io.imageio import diagnose_file, is_image_file
from efr.io.manifest import FIELDS
from efr.io.rafd import RAFD_NAME, RafdNameError, parse_rafd_name


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
