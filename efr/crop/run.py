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

import logging
import os
import time
from collections import Counter
from dataclasses import asdict

from efr.crop.destination import SETTINGS_NAME, prepare_destination, remove_partial_files, settings_record
from efr.crop.options import CropOptions, check_folders, check_options
from efr.crop.sources import (
    assign_splits,
    coverage_message,
    detect_layout,
    drop_unreadable_sources,
    label_photos,
    looks_like_rafd,
    output_names,
    scan_source,
)
from efr.crop.summary import SUMMARY_NAME, _clean, _manifest_rows, make_summary
from efr.crop.workers import CHECKPOINT_SECONDS, MIN_PHOTOS_PER_WORKER, run_tasks
from efr.faces import detect as faces, landmarks
from efr.io.errors import EFRError
from efr.io.writable import check_writable
from efr.io.manifest import SPLITS, check_subject_disjoint, read_manifest, write_manifest
from efr.io.runinfo import library_versions, machine_info, write_json

log = logging.getLogger("efr.crop")


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
    check_writable(dst, "--dst")
    images, ignored = _scan_images(src)
    relative = [p.relative_to(src).as_posix() for p in images]
    layout = _choose_layout(relative, options)
    rows, mapped, pending = _label_rows(relative, layout, options, src)
    by_image = layout == "folders" and not options.subject_regex
    warnings = _split_rows(pending, options, by_image)
    output_names(pending)

    state = _open_destination(src, dst, layout, options, overwrite)
    # Re-use what an earlier run with these settings finished.
    old_rows = read_manifest(dst) if state == "resume" else []
    done, tasks, task_rows = _plan_crops(pending, old_rows, src, dst, options)
    reused = len(done)
    # Rows data_aug.py added for images it found in the folders (their source is the
    # dataset file itself) are not crop.py's to judge: keep them as they are.
    listed = [r for r in old_rows if r["kind"] == "original" and r["source"] and r["source"] == r["output"]]
    _remove_stale_crops(old_rows, listed, {r["output"] for r in pending}, dst)
    fixed = [_clean(r) for r in rows if r["status"]]  # filtered and unknown_label: no work

    augmented = [r for r in old_rows if r["kind"] != "original"] + listed

    # Landmarks of the crops (--align eyes): those of reused crops come from the earlier run's file.
    old_points = landmarks.read_landmarks_file(dst) if state == "resume" and options.align == "eyes" else {}
    points = {r["output"]: old_points[r["output"]] for r in done if r["output"] in old_points}

    if reused:
        log.info("%d crop(s) already done by an earlier run with the same settings", reused)
    _run_crops(tasks, task_rows, done, points, src, dst, options, workers, progress,
               save=lambda: _save_records(dst, options.align, points, fixed + done + augmented))
    kept = _drop_stale_augmented(augmented, listed, done, dst)
    _save_records(dst, options.align, points, fixed + done + kept)

    final = fixed + done
    if not by_image:
        check_subject_disjoint(final)
    written = sum(r["status"] == "ok" for r in done) - reused
    summary = make_summary(src, dst, layout, final, ignored, mapped, written, reused, by_image, warnings)
    summary.align = options.align
    write_json(dst / SUMMARY_NAME, asdict(summary))
    return summary


def _scan_images(src):
    """(images, ignored files) under ``src``; an EFRError when there is no image at all."""
    images, ignored = scan_source(src)
    if ignored:
        log.info("ignoring %d non-image file(s) under %s (e.g. %s)", len(ignored), src, ignored[0].name)
    if not images:
        raise EFRError(
            f"no images (jpg, png, bmp, tif) under {src}"
            + (f"; {len(ignored)} other file(s) ignored, e.g. {ignored[0].name}" if ignored else " (empty folder)")
            + ": give --src the folder that holds the photos"
        )
    return images, ignored


def _choose_layout(relative, options):
    """The layout ("rafd" or "folders") of the photos; say which options it makes irrelevant."""
    layout = options.layout
    if layout == "auto":
        layout = detect_layout(relative)
        log.info("layout: %s (%d of %d file names follow the RaFD rule)", layout,
                 sum(looks_like_rafd(p) for p in relative), len(relative))
    if layout == "rafd" and options.subject_regex:
        log.warning("--subject-regex is ignored: RaFD names carry the subject")
    defaults = CropOptions()
    if layout == "folders" and (options.angles, options.gazes) != (defaults.angles, defaults.gazes):
        log.info("--angle/--gaze filters apply to RaFD names only; folder layout keeps every photo")
    return layout


def _label_rows(relative, layout, options, src):
    """(every row, {folder: emotion it was read as}, the rows still to crop); an EFRError when none is left."""
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
    return rows, mapped, pending


def _split_rows(pending, options, by_image):
    """Give each pending row its split (and fold); return the warnings for the summary."""
    warnings = []
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
    return warnings


def _open_destination(src, dst, layout, options, overwrite):
    """Make ``dst`` ready for these settings; return its state ("new", "resume", ...)."""
    settings = settings_record(src, layout, options)
    state = prepare_destination(dst, settings, overwrite)
    dst.mkdir(parents=True, exist_ok=True)
    if state == "new":
        write_json(dst / SETTINGS_NAME, {
            "settings": settings, "requested_layout": options.layout,
            "versions": library_versions(), "machine": machine_info(),
        })
    remove_partial_files(dst)
    return state


def _plan_crops(pending, old_rows, src, dst, options):
    """(rows of crops an earlier run finished, crop tasks for the pool, the row of each task)."""
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
    return done, tasks, task_rows


def _remove_stale_crops(old_rows, listed, planned, dst):
    """Delete the crops of photos that are gone or moved split (``planned``: this run's outputs)."""
    for row in old_rows:  # crops of photos that are gone or moved split: ours to remove
        output = row["output"]
        if row in listed:
            continue
        if row["kind"] == "original" and output and output not in planned and (dst / output).is_file():
            log.info("removing stale crop %s (no longer in the plan)", output)
            (dst / output).unlink()


def _save_records(dst, align, points, rows):
    """Write the manifest (and with --align eyes the landmarks file) as they stand."""
    if align == "eyes":
        landmarks.write_landmarks_file(dst, points)
    write_manifest(dst, _manifest_rows(rows))


def _run_crops(tasks, task_rows, done, points, src, dst, options, workers, progress, save):
    """Crop every task in a process pool, adding a row to ``done`` (and landmarks to ``points``) for each.

    ``save()`` records the progress every CHECKPOINT_SECONDS and when the run is stopped,
    so that a re-run resumes.
    """
    # Starting a worker costs about half a second (a fresh interpreter importing OpenCV),
    # more than cropping a dozen photos: small jobs get fewer workers, tiny ones none.
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) // MIN_PHOTOS_PER_WORKER))
    detect_kwargs = options.detect_kwargs()
    cascade_file = str(faces.cascade_path(options.cascade))
    last_save = time.monotonic()
    try:
        for index, result in run_tasks(tasks, cascade_file, detect_kwargs, workers, progress, options.align):
            row = _result_row(task_rows[index], result, points)
            done.append(row)
            if result["status"] == "no_face" and options.on_miss == "fail":
                raise EFRError(
                    f"no face found in {src / row['source']} (--on-miss fail): remove the photo, or use "
                    "--on-miss skip (leave it out) or --on-miss center (centre square crop)"
                )
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                save()
                last_save = time.monotonic()
    except BaseException as err:
        # Interrupted or stopped: record the finished crops so that a re-run resumes.
        save()
        if type(err) is KeyboardInterrupt:  # efr.commands.cli.run prints its message
            raise KeyboardInterrupt(
                f"interrupted: {sum(r['status'] == 'ok' for r in done)} crop(s) kept in {dst} (its manifest.csv "
                f"lists them); re-run the same command to crop the other {len(tasks) - len(done)} photo(s)"
            ) from None
        raise


def _result_row(task_row, result, points):
    """The manifest row of one cropped photo; its landmarks (if any) go into ``points``."""
    row = _clean(task_row)
    if result.get("landmarks") is not None:
        points[row["output"]] = result["landmarks"]
    row.update(status=result["status"], reason=result["reason"])
    if result["box"] is not None:
        row.update(zip("xywh", result["box"]))
    else:
        row["output"] = ""
    return row


def _drop_stale_augmented(augmented, listed, done, dst):
    """The augmented rows to keep; copies data_aug.py made from crops no longer in the dataset are deleted."""
    ok_outputs = {r["output"] for r in done if r["status"] == "ok"}
    kept = []
    for row in augmented:
        if row in listed or row["parent"] in ok_outputs:
            kept.append(row)
        elif row["output"] and (dst / row["output"]).is_file():
            log.info("removing augmented copy %s of a crop no longer in the dataset", row["output"])
            (dst / row["output"]).unlink()
    return kept
