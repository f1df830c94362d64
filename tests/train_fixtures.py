"""Tiny synthetic Dataset folders for tests that train or read datasets.

``make_tiny_dataset`` draws RaFD-like faces with efr.data.synthetic.render, crops them with
efr.faces.detect (Haar face box, centre square when none is found), writes
Dataset/{Train,Valid,Test}/<Emotion>/<RaFD name>.png and a manifest.csv, the layout
crop.py makes.  Subjects are split subject-disjoint.  A few hundred 48 px images
take a few seconds to make; each face is drawn and detected once per test process
(``_photo``), however many datasets use it.
"""

import functools
from pathlib import Path

import cv2

from efr.io.emotions import EMOTIONS
from efr.faces.detect import center_box, crop_square, detect_faces, load_cascade, square_box
from efr.io.imageio import write_image
from efr.io.manifest import write_manifest
from efr.io.rafd import format_rafd_name
from efr.data.split import assign_folds, split_subjects
from efr.data.synthetic.render import render_face

RENDER_SIZE = (170, 256)  # (width, height): a RaFD frame at a quarter of its size


@functools.lru_cache(maxsize=None)
def _photo(subject, emotion, gaze, seed):
    """(frame, face box) of one synthetic photo, read-only; drawing and detecting cost ~25 ms."""
    frame = render_face(subject, emotion, gaze=gaze, seed=seed, size=RENDER_SIZE)
    boxes = detect_faces(_cascade(), frame)
    box = square_box(boxes[0], frame.shape, margin=0.1) if boxes else center_box(frame.shape)
    frame.flags.writeable = False
    return frame, box


@functools.lru_cache(maxsize=1)
def _cascade():
    return load_cascade()


def make_tiny_dataset(root, subjects=10, size=48, seed=0, gazes=("frontal", "left", "right"), emotions=EMOTIONS,
                      fractions=(0.6, 0.2, 0.2), folds=0, augmented=0):
    """Write a synthetic Dataset folder under ``root`` and return its path (root/Dataset).

    ``subjects`` people x ``emotions`` x ``gazes`` photos, ``size`` px square PNGs,
    Train/Valid/Test by subject with ``fractions``; ``folds`` > 0 fills the
    manifest's fold column; ``augmented`` > 0 adds that many flipped/brightened
    copies per Train and Valid photo (named and listed as data_aug.py does).
    """
    dataset = Path(root) / "Dataset"
    ids = [f"{n:02d}" for n in range(1, subjects + 1)]
    split_of = split_subjects(ids, fractions, seed=seed)
    fold_of = assign_folds(ids, folds, seed=seed) if folds else {}
    rows = []
    for subject in ids:
        split = split_of[subject]
        for emotion in emotions:
            for gaze in gazes:
                frame, box = _photo(int(subject), emotion, gaze, seed)
                face = crop_square(frame, box, size)
                source = format_rafd_name(subject, "Caucasian", "female", emotion, gaze)
                rel = f"{split}/{emotion}/{Path(source).stem}.png"
                write_image(dataset / rel, face)
                row = {"source": source, "subject": subject, "emotion": emotion, "gaze": gaze, "angle": "090",
                       "split": split, "fold": fold_of.get(subject, ""), "x": box[0], "y": box[1], "w": box[2],
                       "h": box[3], "output": rel, "status": "ok", "kind": "original"}
                rows.append(row)
                if split == "Test":
                    continue
                for index in range(augmented):
                    copy = cv2.flip(face, 1) if index % 2 == 0 else face
                    copy = cv2.convertScaleAbs(copy, alpha=1.0, beta=8 * (index + 1))
                    copy_rel = f"{split}/{emotion}/{Path(source).stem}__aug-default-{index}-flipbright.png"
                    write_image(dataset / copy_rel, copy)
                    rows.append(dict(row, output=copy_rel, kind="augmented", parent=rel, recipe="default",
                                     transform="flip+brightness", x="", y="", w="", h=""))
    write_manifest(dataset, rows)
    return dataset


def chromium():
    """Path of a headless-capable Chromium, or None (the report rendering tests then skip)."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render_check(html_path, browser, tmp_dir):
    """Load ``html_path`` in headless Chromium; return the page's render-check marker and image count.

    report.html sets data-render-check="pass"/"fail" and data-images-loaded="k/n" on
    <body> once the page has loaded; --dump-dom prints the DOM after that.
    """
    import re
    import subprocess

    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_dir}",
         "--dump-dom", Path(html_path).resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    body = re.search(r"<body[^>]*>", result.stdout)
    if body is None:
        raise AssertionError(f"chromium printed no page (exit {result.returncode}): {result.stderr[-1000:]}")
    check = re.search(r'data-render-check="(\w+)"', body.group(0))
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', body.group(0))
    return (check.group(1) if check else None), (tuple(map(int, loaded.groups())) if loaded else None)
