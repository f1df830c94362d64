"""Augmented files in a Dataset: how they are named, the dataset scan and its counts, whether an
augmentation finished, and removing them again."""

import json
import logging
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from efr.data import augment
from efr.io.emotions import EMOTIONS, UnknownEmotionError, canonical_emotion
from efr.io.errors import EFRError
from efr.io.imageio import list_images
from efr.io.manifest import AUGMENTED, ORIGINAL, SPLITS, read_manifest, write_manifest

log = logging.getLogger(__name__)

AUGMENTABLE_SPLITS = ("Train", "Valid")

DEFAULT_SPLITS = AUGMENTABLE_SPLITS

RUN_INFO_NAME = "augment.json"

OUTPUT_EXT = ".png"  # lossless, whatever the source's format

# <stem>__aug-<recipe>-<k>-<transforms>: the mark of a file this stage wrote.
AUGMENTED_MARKER = "__aug-"

AUGMENTED_STEM = re.compile(AUGMENTED_MARKER + r"(?P<recipe>[a-z]+)-(?P<index>\d+)-(?P<transform>[A-Za-z0-9_]+)$")


def is_augmented_name(path):
    """True when the file name carries the augmentation suffix."""
    return AUGMENTED_STEM.search(Path(path).stem) is not None


def augmented_name(parent_name, recipe, index, short_transform):
    """File name of copy ``index`` of ``parent_name`` (always .png)."""
    return f"{Path(parent_name).stem}{AUGMENTED_MARKER}{recipe}-{index}-{short_transform}{OUTPUT_EXT}"


def normalise_splits(splits):
    """Canonical split names (any case); Test and unknown names are refused."""
    names = []
    for split in splits:
        match = [s for s in SPLITS if s.lower() == str(split).strip().lower()]
        if not match:
            raise EFRError(f"unknown split {split!r}: choose from {', '.join(AUGMENTABLE_SPLITS)}")
        if match[0] not in AUGMENTABLE_SPLITS:
            raise EFRError(
                "Test is never augmented: it must stay the untouched photos the model is judged on; "
                f"choose from {', '.join(AUGMENTABLE_SPLITS)}"
            )
        if match[0] not in names:
            names.append(match[0])
    if not names:
        raise EFRError(f"no splits given: choose from {', '.join(AUGMENTABLE_SPLITS)}")
    return names


@dataclass
class Photo:
    """An original photo of the Dataset: where it is, its label, its manifest row (if any)."""

    path: Path
    rel: str  # path relative to the Dataset folder, posix: the manifest's `output`
    split: str
    emotion: str
    row: dict | None = None


@dataclass
class Scan:
    photos: list = field(default_factory=list)
    orphans: list = field(default_factory=list)  # suffixed files the manifest does not list
    warnings: list = field(default_factory=list)


def _emotion_folders(split_dir, warnings):
    """[(folder, canonical emotion)] of a split folder; unknown folders are warned about and skipped."""
    found = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            emotion = canonical_emotion(folder.name)
        except UnknownEmotionError:
            warnings.append(
                f"{folder}: not one of the eight emotions ({', '.join(EMOTIONS)}); skipped. "
                "Rename it to the emotion it holds, or move it out of the Dataset"
            )
            continue
        if emotion != folder.name:
            log.info("%s: read as %s", folder, emotion)
        found.append((folder, emotion))
    return found


def scan_dataset(dataset_dir, splits, augmented_outputs):
    """Find the original photos in ``splits`` (files without the suffix) and the orphans
    (files with the suffix that ``augmented_outputs``, the manifest's set, does not list)."""
    dataset_dir = Path(dataset_dir)
    scan = Scan()
    for split in splits:
        split_dir = dataset_dir / split
        if not split_dir.is_dir():
            scan.warnings.append(f"{split_dir}: no such folder; {split} skipped (choose splits with --splits)")
            continue
        loose = list_images(split_dir, recursive=False)
        if loose:
            scan.warnings.append(
                f"{split_dir}: {len(loose)} image(s) directly in the split folder, outside any emotion "
                "folder; ignored (move them into <Split>/<Emotion>/)"
            )
        for folder, emotion in _emotion_folders(split_dir, scan.warnings):
            images = list_images(folder, recursive=False)
            if not images:
                scan.warnings.append(f"{folder}: empty class folder (no images); nothing to augment there")
                continue
            for path in images:
                rel = path.relative_to(dataset_dir).as_posix()
                if rel in augmented_outputs:
                    continue
                if is_augmented_name(path):
                    if rel not in augmented_outputs:
                        scan.orphans.append(rel)
                    continue
                scan.photos.append(Photo(path=path, rel=rel, split=split, emotion=emotion))
    return scan


def count_images(dataset_dir):
    """{(split, emotion): Counter(original=n, augmented=n)} over every split and emotion folder on disk."""
    dataset_dir = Path(dataset_dir)
    counts = {}
    for split in SPLITS:
        split_dir = dataset_dir / split
        if not split_dir.is_dir():
            continue
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            try:
                emotion = canonical_emotion(folder.name)
            except UnknownEmotionError:
                continue
            tally = counts.setdefault((split, emotion), Counter())
            for path in list_images(folder, recursive=False):
                tally[AUGMENTED if is_augmented_name(path) else ORIGINAL] += 1
    return counts


def format_counts_table(before, after):
    """A plain-text table: images per split and emotion before and after the run."""
    keys = sorted(set(before) | set(after), key=lambda k: (SPLITS.index(k[0]), EMOTIONS.index(k[1])))
    lines = [f"{'split':<6} {'emotion':<13} {'originals':>9} {'before':>7} {'after':>7}"]
    totals = {}
    for key in keys:
        b, a = before.get(key, Counter()), after.get(key, Counter())
        row = (a["original"], b.total(), a.total())
        lines.append(f"{key[0]:<6} {key[1]:<13} {row[0]:>9} {row[1]:>7} {row[2]:>7}")
        total = totals.setdefault(key[0], [0, 0, 0])
        for i, value in enumerate(row):
            total[i] += value
    for split, (originals, b, a) in totals.items():
        lines.append(f"{split:<6} {'(all)':<13} {originals:>9} {b:>7} {a:>7}")
    return "\n".join(lines)


def _existing_augmentation(rows):
    """(recipes, seeds of default rows, highest copy count per parent) of the manifest's augmented rows."""
    recipes = {r["recipe"] for r in rows if r["kind"] == AUGMENTED}
    seeds = {r["seed"] for r in rows if r["kind"] == AUGMENTED and r["recipe"] == augment.DEFAULT_RECIPE}
    copies = 0
    for row in rows:
        match = AUGMENTED_STEM.search(Path(row["output"]).stem) if row["kind"] == AUGMENTED else None
        if match and row["recipe"] == augment.DEFAULT_RECIPE:
            copies = max(copies, int(match["index"]) + 1)
    return recipes, seeds, copies


def unfinished_augmentation(dataset_dir, rows=None):
    """What an interrupted data_aug.py left undone, or None when its augmentation is complete.

    Returns {"pending": [rel paths planned but not confirmed written], "by_folder":
    {"Train/Sad": n}, "complete": the command that completes it, "clean": the one that
    removes it}.  The plan is the manifest's ``pending`` rows, written before any image.
    """
    dataset_dir = Path(dataset_dir)
    rows = read_manifest(dataset_dir) if rows is None else rows
    pending = sorted(r["output"] for r in rows if r["kind"] == AUGMENTED and r["status"] == "pending")
    if not pending:
        return None
    info = {}
    try:
        info = json.loads((dataset_dir / RUN_INFO_NAME).read_text(encoding="utf-8")).get("settings", {})
    except (OSError, ValueError, AttributeError):
        pass
    recipe = info.get("recipe") or next((r["recipe"] for r in rows if r["output"] == pending[0]), "")
    parts = [f"python data_aug.py --dataset {shlex.quote(str(dataset_dir))}"]
    if recipe:
        parts.append(f"--recipe {recipe}")
    if recipe == augment.DEFAULT_RECIPE and info.get("copies"):
        parts.append(f"--copies {info['copies']}")
    if info.get("splits"):
        parts.append("--splits " + " ".join(info["splits"]))
    seed = info.get("seed", next((r["seed"] for r in rows if r["output"] == pending[0] and r["seed"]), None))
    if seed not in (None, ""):
        parts.append(f"--seed {seed}")
    return {
        "pending": pending,
        "by_folder": dict(Counter(p.rsplit("/", 1)[0] for p in pending)),
        "complete": " ".join(parts),
        "clean": f"python data_aug.py --dataset {shlex.quote(str(dataset_dir))} --clean",
    }


@dataclass
class CleanResult:
    removed: int = 0  # files deleted
    rows_removed: int = 0  # manifest rows dropped (files deleted or already missing)
    kept_unsuffixed: list = field(default_factory=list)  # augmented rows whose file lacks the suffix
    orphans: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)


def _inside(path, folder):
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def clean_augmented(dataset_dir, splits=None):
    """Delete the files this stage made: manifest rows of kind augmented whose file carries
    the suffix (in ``splits``, default all).  Originals are never touched: a row without
    the suffix, or a suffixed file the manifest does not list, is reported and kept."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise EFRError(f"{dataset_dir}: no such Dataset folder; give --dataset")
    unknown = [s for s in splits or () if str(s).lower() not in {x.lower() for x in SPLITS}]
    if unknown:
        raise EFRError(f"unknown split {unknown[0]!r}: choose from {', '.join(SPLITS)}")
    chosen = set(SPLITS if splits is None else [s for s in SPLITS if s.lower() in {str(x).lower() for x in splits}])
    rows = read_manifest(dataset_dir)
    result = CleanResult(before=count_images(dataset_dir))
    keep = []
    for row in rows:
        if row["kind"] != AUGMENTED or row["split"] not in chosen:
            keep.append(row)
            continue
        path = dataset_dir / row["output"]
        if not row["output"] or not is_augmented_name(path) or not _inside(path, dataset_dir):
            result.kept_unsuffixed.append(row["output"])
            keep.append(row)
            continue
        if path.is_file():
            path.unlink()
            result.removed += 1
        result.rows_removed += 1
    if result.kept_unsuffixed:
        log.warning(
            "warning: %d manifest row(s) marked augmented name a file without the __aug- suffix, e.g. %s; "
            "kept (never deleting what may be an original)", len(result.kept_unsuffixed), result.kept_unsuffixed[0],
        )
    if result.rows_removed:
        write_manifest(dataset_dir, keep)
    if not any(r["kind"] == AUGMENTED for r in keep):
        (dataset_dir / RUN_INFO_NAME).unlink(missing_ok=True)  # its record describes files that are gone
    listed = {r["output"] for r in keep if r["kind"] == AUGMENTED}
    result.orphans = scan_dataset(dataset_dir, [s for s in SPLITS if s in chosen and (dataset_dir / s).is_dir()],
                                  listed).orphans
    if result.orphans:
        log.warning(
            "warning: %d file(s) carry the augmentation suffix but are not in the manifest, e.g. %s; kept "
            "(delete them by hand if they are not yours)", len(result.orphans), result.orphans[0],
        )
    result.after = count_images(dataset_dir)
    return result
