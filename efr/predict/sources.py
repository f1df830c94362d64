"""What to predict on: photos, folders (earlier outputs left out), videos; subjects of photos."""

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from efr.io.errors import EFRError
from efr.io.imageio import is_image_file
from efr.predict.writers import CSV_FIXED

log = logging.getLogger("efr.predict")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

ANNOTATED_DIR = "annotated"


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
# The whole stage


def photo_subjects(items, subject_regex=None):
    """{photo path: person} from RaFD names or ``subject_regex``; an error naming photos with neither."""
    from efr.crop.options import compile_subject_regex
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
