"""Stage 2: write augmented copies of a Dataset's Train (and Valid) photos beside the originals.

The folders stay the truth for training (``Dataset/<Split>/<Emotion>/*.png``); the
manifest says which files this stage made.  An augmented file

- sits in its source photo's split and emotion folder, so its label cannot drift;
- is named ``<stem>__aug-<recipe>-<k>-<transforms>.png``, so neither this stage nor a
  person mistakes it for an original;
- has a manifest row (kind=augmented, parent=the source's output path, recipe,
  transform with its parameters, seed, and the parent's subject, emotion and split),
  so a re-run never augments an augmented file or makes a duplicate, ``--clean``
  removes exactly these files, and the subject-disjoint check still covers them.

Each photo's random numbers come from (seed, parent path, copy index) alone, so the
same seed (and PNG writer) gives the same files byte for byte whatever the worker scheduling.  The
new rows are written to the manifest as ``pending`` before any image, and images are
written atomically: an interrupted run leaves only complete files, all listed, and
re-running the same command finishes the job with the same result.

A Dataset holds one augmentation at a time: asking for a different recipe, a
different seed or fewer copies than it has is refused with a message saying to run
``--clean`` first; asking for more copies adds the missing ones (the first ones do
not change).  Test is never augmented.
"""

import contextlib
import heapq
import logging
import multiprocessing
import operator
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from efr.data import augment
from efr.data.augmented import (
    DEFAULT_SPLITS,
    RUN_INFO_NAME,
    _existing_augmentation,
    augmented_name,
    count_images,
    normalise_splits,
    scan_dataset,
)
from efr.io.errors import EFRError
from efr.io.imageio import UnreadableImageError, check_png_writer, read_image, write_image
from efr.io.manifest import AUGMENTED, FIELDS, ORIGINAL, check_subject_disjoint, read_manifest, write_manifest
from efr.io.parallel import bounded_map
from efr.io.rafd import rafd_subject
from efr.io.runinfo import library_versions, machine_info, write_json

log = logging.getLogger(__name__)


def check_compatible(rows, recipe, seed, copies, dataset_dir):
    """Refuse to mix recipes, seeds, or to shrink the copy count, in one Dataset."""
    recipes, seeds, existing_copies = _existing_augmentation(rows)
    clean = f"first remove them with: python data_aug.py --dataset {dataset_dir} --clean"
    if recipes and recipes != {recipe}:
        raise EFRError(
            f"{dataset_dir} already holds augmented files of recipe {', '.join(sorted(recipes))}; "
            f"to switch to --recipe {recipe}, {clean}"
        )
    if recipe == augment.DEFAULT_RECIPE and seeds and seeds != {str(seed)}:
        raise EFRError(
            f"{dataset_dir} already holds augmented files made with --seed {', '.join(sorted(seeds))}; "
            f"to use --seed {seed}, {clean} (or keep the old seed)"
        )
    if recipe == augment.DEFAULT_RECIPE and copies < existing_copies:
        raise EFRError(
            f"{dataset_dir} already holds {existing_copies} augmented copies per photo; "
            f"for --copies {copies}, {clean} (asking for more copies adds the missing ones)"
        )


def plan_photo(photo, recipe, copies, seed):
    """[(output rel path, spec, transform description)] for one photo.

    ``spec`` is a params dict (default recipe) or a transform name (original recipe).
    Nothing is read: the plan depends on (seed, path, recipe, copies) only.
    """
    parent_dir = photo.rel.rsplit("/", 1)[0]
    plan = []
    if recipe == augment.DEFAULT_RECIPE:
        for index in range(copies):
            params = augment.draw_default_params(augment.photo_rng(seed, photo.rel, index))
            name = augmented_name(photo.path.name, recipe, index, augment.params_short_name(params))
            plan.append((f"{parent_dir}/{name}", params, augment.params_description(params)))
    else:
        for index, transform in enumerate(augment.ORIGINAL_TRANSFORMS):
            name = augmented_name(photo.path.name, recipe, index, transform)
            plan.append((f"{parent_dir}/{name}", transform, transform))
    return plan


def augment_photo(source, outputs, png_writer=None):
    """Read ``source`` once and write each (output path, spec) of ``outputs``; return how many.

    A plain top-level function, so it runs in a thread or a process pool alike.
    """
    image = read_image(source)
    for path, spec in outputs:
        if isinstance(spec, dict):
            out = augment.apply_default_params(image, spec)
        else:
            out = augment.ORIGINAL_TRANSFORMS[spec](image)
        write_image(path, out, png_writer=png_writer)
    return len(outputs)


def _augment_job(job):
    """augment_photo(*job), an unreadable photo returned rather than raised (pool workers)."""
    try:
        return augment_photo(*job)
    except UnreadableImageError as err:
        return err


def _row(**values):
    """A manifest row with every field present (blank unless given)."""
    return {**dict.fromkeys(FIELDS, ""), **values}


def _original_row(photo):
    """The manifest row of a photo the manifest does not list (a hand-made Dataset)."""
    subject = rafd_subject(photo.path.name)
    reason = "no manifest row: listed by data_aug.py" + ("" if subject else " (subject unknown)")
    return _row(**{
        "source": photo.rel, "subject": subject, "split": photo.split, "emotion": photo.emotion,
        "output": photo.rel, "status": "ok", "reason": reason, "kind": ORIGINAL,
    })


def _augmented_row(photo, output, recipe, description, seed, status="pending"):
    parent = photo.row or {}
    return _row(**{
        "source": parent.get("source", photo.rel), "subject": parent.get("subject", ""),
        "emotion": photo.emotion, "gaze": parent.get("gaze", ""), "angle": parent.get("angle", ""),
        "split": photo.split, "fold": parent.get("fold", ""), "output": output, "status": status,
        "kind": AUGMENTED, "parent": photo.rel, "recipe": recipe, "transform": description,
        "seed": str(seed) if recipe == augment.DEFAULT_RECIPE else "",
    })


def _sorted_rows(rows, fresh=()):
    """Originals in their existing order, then augmented rows by path: one order for one content.

    ``fresh``: more augmented rows, already in path order (made one by one as they are written).
    """
    by_path = operator.itemgetter("output")
    yield from (r for r in rows if r["kind"] != AUGMENTED)
    yield from heapq.merge(sorted((r for r in rows if r["kind"] == AUGMENTED), key=by_path), fresh, key=by_path)


@dataclass
class AugmentResult:
    photos: int = 0  # originals found in the chosen splits
    written: int = 0  # augmented files written this run
    already_done: int = 0  # planned files already present and recorded
    unreadable: list = field(default_factory=list)  # (rel path, message)
    unlisted: int = 0  # originals the manifest did not list (now listed)
    no_subject: int = 0  # originals without a subject id
    orphans: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    seconds: float = 0.0


def _make_executor(kind, workers):
    if kind == "process":
        # Spawned, not forked, workers: see efr.crop.run._pool_context.
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    raise EFRError(f"unknown executor {kind!r}: choose thread or process")


def augment_dataset(
    dataset_dir,
    recipe=augment.DEFAULT_RECIPE,
    copies=augment.DEFAULT_COPIES,
    splits=DEFAULT_SPLITS,
    seed=0,
    workers=None,
    executor="thread",
    png_writer=None,
    progress=True,
):
    """Augment the original photos of ``splits`` in ``dataset_dir``; return an AugmentResult.

    Writes the new files beside their sources and records them in the manifest (see the
    module docstring).  ``png_writer`` is "fpng" or "opencv" (default: fpng when
    installed): the same pixels either way, other bytes.  Raises EFRError for a missing
    Dataset, a Test split, an incompatible earlier augmentation, an unknown PNG writer,
    or when there is nothing at all to augment.
    """
    started = time.perf_counter()
    dataset_dir, copies, splits, workers, png_writer = _checked_arguments(
        dataset_dir, recipe, copies, splits, workers, png_writer)
    rows = _read_checked_manifest(dataset_dir, recipe, seed, copies)
    by_output = {r["output"]: r for r in rows if r["output"]}
    augmented_outputs = {out for out, r in by_output.items() if r["kind"] == AUGMENTED}
    result = AugmentResult(before=count_images(dataset_dir))
    scan = _scan_photos(dataset_dir, splits, augmented_outputs, result)
    _attach_rows(scan.photos, rows, by_output, result)
    jobs, new = _plan_jobs(scan.photos, recipe, copies, seed, by_output, dataset_dir, result)
    finished, failed_parents = set(), set()  # photos written in full in this run; photos that could not be read

    settings = {"recipe": recipe, "copies": copies, "splits": splits, "seed": seed,
                "workers": workers, "executor": executor, "png_writer": png_writer}
    if jobs:
        # The plan first: what a complete run makes (the pending rows) and how to complete it.
        write_json(dataset_dir / RUN_INFO_NAME, {"stage": "data_aug", "state": "running", "settings": settings,
                                                 "planned": sum(len(outputs) for _, outputs in jobs)})
        write_manifest(dataset_dir, _manifest_rows(rows, new, finished, failed_parents, recipe, seed, dataset_dir))

    log.info(
        "augmenting %d photo(s) in %s with recipe %s (%d per photo), %d worker(s); %d file(s) already done",
        len(jobs), ", ".join(splits), recipe, copies, workers, result.already_done,
    )
    work = _work(jobs, recipe, copies, seed, dataset_dir, png_writer)
    try:
        _run_jobs(jobs, work, executor, workers, progress, by_output, result, finished, failed_parents)
    finally:
        # Rows of photos that could not be read go; rows still pending stay, so a re-run
        # (or --clean) knows about any file an interruption may have left.
        rows = [r for r in rows if not (r["kind"] == AUGMENTED and r["parent"] in failed_parents
                                        and not (dataset_dir / r["output"]).is_file())]
        if jobs:
            write_manifest(dataset_dir, _manifest_rows(rows, new, finished, failed_parents, recipe, seed, dataset_dir))

    result.unreadable.sort()
    if result.unreadable:
        log.warning("warning: %d unreadable photo(s) skipped, e.g. %s", len(result.unreadable), result.unreadable[0][1])
    if len(result.unreadable) == len(scan.photos):
        raise EFRError(f"{dataset_dir}: none of the {len(scan.photos)} photo(s) could be read; nothing augmented")
    check_subject_disjoint(rows)
    result.after = count_images(dataset_dir)
    result.seconds = time.perf_counter() - started
    _write_finished(dataset_dir, settings, result)
    return result


def _checked_arguments(dataset_dir, recipe, copies, splits, workers, png_writer):
    """Refuse unusable arguments; return (dataset_dir, copies, splits, workers, png_writer) as used."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise EFRError(f"{dataset_dir}: no such Dataset folder; make one with crop.py or give --dataset")
    if recipe not in augment.RECIPES:
        raise EFRError(f"unknown recipe {recipe!r}: choose from {', '.join(augment.RECIPES)}")
    copies = len(augment.ORIGINAL_TRANSFORMS) if recipe == augment.ORIGINAL_RECIPE else int(copies)
    if copies < 1:
        raise EFRError(f"--copies must be at least 1 (got {copies})")
    splits = normalise_splits(splits)
    if workers is not None and int(workers) < 1:
        raise EFRError(f"--workers {workers}: expected 1 or more")
    workers = max(1, workers or os.cpu_count() or 1)
    png_writer = check_png_writer(png_writer)
    return dataset_dir, copies, splits, workers, png_writer


def _read_checked_manifest(dataset_dir, recipe, seed, copies):
    """The Dataset's manifest rows, checked for subject leaks and for an incompatible earlier augmentation."""
    rows = read_manifest(dataset_dir)
    if not rows:
        log.warning("%s: no manifest.csv; subjects are unknown, so splits cannot be checked for leaks", dataset_dir)
    check_subject_disjoint(rows)
    check_compatible(rows, recipe, seed, copies, dataset_dir)
    return rows


def _scan_photos(dataset_dir, splits, augmented_outputs, result):
    """Find the original photos of ``splits`` (counted in ``result``); an EFRError when there is none."""
    scan = scan_dataset(dataset_dir, splits, augmented_outputs)
    result.photos, result.orphans, result.warnings = len(scan.photos), scan.orphans, scan.warnings
    for message in scan.warnings:
        log.warning("warning: %s", message)
    if scan.orphans:
        log.warning(
            "warning: %d file(s) carry the augmentation suffix but are not in the manifest, e.g. %s; "
            "they are neither augmented again nor removed by --clean: delete them by hand if unwanted",
            len(scan.orphans), scan.orphans[0],
        )
    if not scan.photos:
        raise EFRError(
            f"{dataset_dir}: no original photos found in {', '.join(splits)} "
            "(expected <Dataset>/<Split>/<Emotion>/*.png, e.g. made by crop.py)"
        )
    return scan


def _attach_rows(photos, rows, by_output, result):
    """Give each photo its manifest row; list photos the manifest does not know (a hand-made Dataset)."""
    for photo in photos:
        photo.row = by_output.get(photo.rel)
        if photo.row is None:
            photo.row = _original_row(photo)
            rows.append(photo.row)
            by_output[photo.rel] = photo.row
            result.unlisted += 1
        if not photo.row["subject"]:
            result.no_subject += 1
    if result.unlisted:
        log.warning("warning: %d photo(s) not in the manifest: listed now as originals, subject from the RaFD "
                    "file name where there is one", result.unlisted)
        check_subject_disjoint(rows)
    if result.no_subject:
        log.warning(
            "warning: %d photo(s) have no subject id (no manifest row and no RaFD name, or a blank subject); "
            "their copies are recorded with subject unknown, so a leak check cannot cover them", result.no_subject,
        )


def _plan_jobs(photos, recipe, copies, seed, by_output, dataset_dir, result):
    """(jobs: [(photo, [output still to write])], new: [(output, description, photo)] without a row yet).

    Only names and descriptions are kept: rows are built when the manifest is written,
    and the transform parameters drawn again just before a photo goes to a worker (the
    plan depends on seed, path, recipe and copies only), so memory stays flat.
    """
    jobs, new = [], []
    for photo in photos:
        outputs = []
        for output, _, description in plan_photo(photo, recipe, copies, seed):
            row = by_output.get(output)
            if row is not None and row["status"] == "ok" and (dataset_dir / output).is_file():
                result.already_done += 1
                continue
            if row is None:
                new.append((output, description, photo))
            outputs.append(output)
        if outputs:
            jobs.append((photo, outputs))
    new.sort(key=lambda entry: entry[0])
    return jobs, new


def _manifest_rows(rows, new, finished, failed_parents, recipe, seed, dataset_dir):
    """The manifest: ``rows``, then a row for each of this run's ``new`` outputs (see ``_sorted_rows``).

    A new output's row says ok once its photo is written in full, else pending; those of
    a photo that could not be read are left out unless their file exists.
    """
    fresh = (_augmented_row(photo, output, recipe, description, seed,
                            status="ok" if photo.rel in finished else "pending")
             for output, description, photo in new
             if photo.rel not in failed_parents or (dataset_dir / output).is_file())
    return _sorted_rows(rows, fresh)


def _work(jobs, recipe, copies, seed, dataset_dir, png_writer):
    """augment_photo's arguments for each job, its transform parameters drawn again from the plan."""
    for photo, outputs in jobs:
        specs = {output: spec for output, spec, _ in plan_photo(photo, recipe, copies, seed)}
        yield photo.path, [(dataset_dir / output, specs[output]) for output in outputs], png_writer


def _run_jobs(jobs, work, executor, workers, progress, by_output, result, finished, failed_parents):
    """Augment each job's photo in the pool: count in ``result``, note the photo in ``finished`` or ``failed_parents``.

    Marks the rows an earlier run left pending ok once their photo is written.
    """
    # A few photos per worker in flight, not every photo queued at once: memory stays flat.
    with _make_executor(executor, workers) as pool, \
            contextlib.closing(bounded_map(_augment_job, work, workers, 4 * workers, pool=pool)) as done, \
            tqdm(total=len(jobs), unit="photo", disable=not progress, desc="augment") as bar:
        for (photo, outputs), written in zip(jobs, done):
            if isinstance(written, UnreadableImageError):
                result.unreadable.append((photo.rel, str(written)))
                failed_parents.add(photo.rel)
                log.warning("warning: skipped %s", written)
            else:
                result.written += written
                finished.add(photo.rel)
                for output in outputs:
                    if output in by_output:  # a row from an earlier run
                        by_output[output]["status"] = "ok"
            bar.update(1)


def _write_finished(dataset_dir, settings, result):
    """Write the run information of a finished run."""
    write_json(dataset_dir / RUN_INFO_NAME, {
        "stage": "data_aug",
        "state": "finished",
        "settings": settings,
        "photos": result.photos, "written": result.written, "already_done": result.already_done,
        "unreadable": [rel for rel, _ in result.unreadable], "unlisted": result.unlisted,
        "no_subject": result.no_subject,
        "orphans": result.orphans, "seconds": round(result.seconds, 3),
        "counts_after": {f"{s}/{e}": dict(c) for (s, e), c in sorted(result.after.items())},
        "versions": library_versions(), "machine": machine_info(),
    })
