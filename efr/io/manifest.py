"""Dataset/manifest.csv: one row per photo, from source to split to augmented copies.

The manifest is how a subject id travels with every image from crop.py to the final
evaluation, so that any split can be checked for leaks, and how data_aug.py knows
which files it made (and may remove) and which are the user's originals.
"""

import csv
from collections import defaultdict
from pathlib import Path

from efr.io.errors import EFRError
from efr.io.imageio import atomic_path

MANIFEST_NAME = "manifest.csv"
SPLITS = ("Train", "Valid", "Test")
ORIGINAL, AUGMENTED = "original", "augmented"  # the manifest's `kind` of a photo

# status of a source photo: ok (cropped and written), no_face, unreadable, filtered
# (left out by the angle/gaze filters), unknown_label.  kind: original or augmented.
FIELDS = (
    "source", "subject", "emotion", "gaze", "angle", "split", "fold",
    "x", "y", "w", "h", "output", "status", "reason",
    "kind", "parent", "recipe", "transform", "seed",
)


def manifest_path(dataset_dir):
    return Path(dataset_dir) / MANIFEST_NAME


def read_manifest(dataset_dir):
    """Rows of the manifest as dicts (every field a string); [] when there is none."""
    path = manifest_path(dataset_dir)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise EFRError(f"{path}: not an EFR manifest (missing columns {', '.join(sorted(missing))})")
        return [{field: row.get(field) or "" for field in FIELDS} for row in reader]


def write_manifest(dataset_dir, rows):
    """Write all rows atomically (unknown keys are an error, missing ones are blank).

    The rows stream into the temporary file: no copy of the whole text is held in memory.
    """
    with atomic_path(manifest_path(dataset_dir)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            unknown = set(row) - set(FIELDS)
            if unknown:
                raise ValueError(f"manifest rows have no column(s) {', '.join(sorted(unknown))}")
            writer.writerow({field: "" if row.get(field) is None else row.get(field) for field in FIELDS})


def subjects_by_split(rows):
    """{split: set of subjects} over rows with an output file."""
    found = defaultdict(set)
    for row in rows:
        if row["output"] and row["split"] and row["subject"]:
            found[row["split"]].add(row["subject"])
    return dict(found)


def check_subject_disjoint(rows):
    """Raise EFRError naming any subject that appears in more than one split."""
    splits = subjects_by_split(rows)
    names = sorted(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = splits[first] & splits[second]
            if shared:
                raise EFRError(
                    f"subjects {', '.join(sorted(shared)[:5])} appear in both {first} and {second}: "
                    "the split leaks identities; re-run crop.py to make a subject-disjoint split"
                )
