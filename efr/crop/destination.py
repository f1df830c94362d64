"""The destination folder: the settings a dataset was cropped with, and what a new run removes or keeps."""

import json
import logging
from dataclasses import asdict
from pathlib import Path

from efr.crop.options import CropOptions, check_folders, check_options
from efr.crop.sources import detect_layout, scan_source
from efr.crop.summary import SUMMARY_NAME
from efr.faces import landmarks
from efr.io.errors import EFRError
from efr.io.imageio import PARTIAL_SUFFIX
from efr.io.manifest import MANIFEST_NAME, SPLITS, read_manifest

log = logging.getLogger("efr.crop")

SETTINGS_NAME = "crop_settings.json"


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
