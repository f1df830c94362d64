"""The run folder: create it, or find the unfinished run to resume and check it can be resumed."""

import json
import logging
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from efr.io import runstate
from efr.io.errors import EFRError
from efr.train.settings import TrainSettings

log = logging.getLogger(__name__)

# The run's own files a report links to (those that exist).
RUN_FILES = ("args.json", "history.csv", "metrics.json", "test_predictions.csv", "cv.csv", "classification_report.txt",
             "confusion_matrix.csv")

# Files a finished run has and an unfinished one must not: removed when a run starts again.
FOLD_RESULT_NAME = "fold_result.json"  # a cross-validation fold's scores and predictions, once it is done

FINISHED_ONLY = ("metrics.json", "report.html", "cv.csv", "cv_scores.png")

RESUME_IGNORED_SETTINGS = ("name", "runs_dir", "exist_ok")


def make_run_dir(settings, prefix="seed"):
    """Create or reopen the run folder; return (run_dir, resuming).

    Without ``settings.name`` a new time-stamped folder.  An existing non-empty
    ``--name`` folder is resumed when its state.json says the run did not finish
    (interrupted, killed or failed) and it was started with the same settings;
    ``exist_ok`` starts it again instead; anything else is refused.
    """
    runs_dir = Path(settings.runs_dir)
    name = settings.name
    resuming = False
    if name:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise EFRError(f"--name {name!r}: give a plain folder name (it goes under --runs-dir {runs_dir})")
        run_dir = runs_dir / name
        if run_dir.exists() and any(run_dir.iterdir()):
            if settings.exist_ok:
                info = runstate.read_state(run_dir)
                if runstate.is_live(info):
                    raise EFRError(f"run folder {run_dir} is {runstate.describe(info)}: --exist-ok does not "
                                   "restart a run that is still training; wait for it or choose another --name")
                clear_run_outputs(run_dir)
            else:
                resuming = _check_resumable(run_dir, settings)
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = runs_dir / f"{prefix}-{stamp}"
        number = 2
        while run_dir.exists():
            run_dir = runs_dir / f"{prefix}-{stamp}-{number}"
            number += 1
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EFRError(f"cannot create run folder {run_dir}: {err.strerror}") from err
    return run_dir, resuming


def _check_resumable(run_dir, settings):
    """True when run_dir holds an unfinished run of the same settings; else a clear refusal."""
    info = runstate.read_state(run_dir)
    state = runstate.effective_state(info)
    choices = "choose another --name, leave --name out for a new folder, or pass --exist-ok to start it again"
    if state is None or state == runstate.FINISHED:
        what = "a finished run" if state else "files"
        raise EFRError(f"run folder {run_dir} already exists and holds {what}: {choices}")
    if state == runstate.RUNNING:
        raise EFRError(f"run folder {run_dir} is {runstate.describe(info)}: wait for it, or {choices}")
    saved = _saved_settings(run_dir)
    differences = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in _comparable(asdict(settings)).items()
                   if key in saved and _comparable(saved).get(key) != value]
    if differences:
        raise EFRError(
            f"run folder {run_dir} holds an unfinished run ({runstate.describe(info)}) with other settings "
            f"({'; '.join(differences)}): resume it with `{runstate.resume_command(run_dir)}`, or {choices}"
        )
    log.info("run folder %s is %s: resuming it", run_dir, runstate.describe(info))
    return True


def _comparable(settings):
    values = {k: v for k, v in settings.items() if k not in RESUME_IGNORED_SETTINGS}
    if values.get("dataset"):
        values["dataset"] = os.path.normpath(str(values["dataset"]))
    if isinstance(values.get("distribute"), bool):  # args.json before --distribute took a mode
        values["distribute"] = "mirrored" if values["distribute"] else ""
    return values


def _saved_settings(run_dir):
    path = Path(run_dir) / "args.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EFRError(f"{path}: missing or unreadable, so the run cannot be resumed; pass --exist-ok to start "
                       "it again") from err


def resume_settings(run_dir):
    """TrainSettings of an unfinished run folder, for ``efe_cnn.py --resume``: its args.json's."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EFRError(f"--resume {run_dir}: no such run folder (give runs/<name>)")
    info = runstate.read_state(run_dir)
    if info is None:
        raise EFRError(f"--resume {run_dir}: not a resumable run folder (no {runstate.STATE_NAME}): give a folder "
                       "made by efe_cnn.py, or start a new run")
    if runstate.effective_state(info) == runstate.FINISHED:
        raise EFRError(f"--resume {run_dir}: the run is finished, nothing to resume (its report: "
                       f"{run_dir / 'report.html'})")
    saved = json.loads((run_dir / "args.json").read_text(encoding="utf-8")) if (run_dir / "args.json").is_file() \
        else {"settings": _saved_settings(run_dir)}
    values = {k: v for k, v in saved["settings"].items() if k in TrainSettings.__dataclass_fields__}
    dataset, cwd = Path(values.get("dataset", "Dataset")), saved.get("cwd")
    if not dataset.is_absolute() and cwd and not dataset.is_dir():
        values["dataset"] = str(Path(cwd) / dataset)
    return TrainSettings(**dict(values, runs_dir=str(run_dir.parent), name=run_dir.name, exist_ok=False))


def clear_run_outputs(run_dir):
    """Remove what says a run finished or where it was (state, checkpoints, fold results) before it restarts."""
    run_dir = Path(run_dir)
    for name in (*FINISHED_ONLY, runstate.STATE_NAME, runstate.CHECKPOINT_NAME, "history.csv"):
        (run_dir / name).unlink(missing_ok=True)
    for fold_dir in run_dir.glob("fold*"):
        if fold_dir.is_dir():
            for name in (runstate.CHECKPOINT_NAME, FOLD_RESULT_NAME, "metrics.json", "history.csv"):
                (fold_dir / name).unlink(missing_ok=True)
