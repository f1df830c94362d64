"""The evidence a finished run reports: accuracy intervals, the summary rows and tables of its report,
provenance, the arguments recorded in args.json."""

import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from efr.evaluate import report
from efr.evaluate.stats import format_interval, subject_bootstrap_interval, wilson_interval
from efr.io.runinfo import library_versions, machine_info, provenance_rows
from efr.train.fit import strategy_info
from efr.train.rundir import RUN_FILES
from efr.train.settings import is_fusion


def _transductive_note(plain_accuracy, accuracy):
    return (f"--subject-norm is TRANSDUCTIVE: each test person's photos were centred on that person's mean "
            f"features, so the model looked at all of a person's test photos together (and needs several of them). "
            f"Accuracy with it {accuracy:.3f}; the same head without centring (inductive, one photo at a time) "
            f"{plain_accuracy:.3f}.")


def _base_args(settings, strategy):
    return {
        "settings": asdict(settings),
        "seed": settings.seed,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cwd": os.getcwd(),  # a relative --dataset is relative to this (efe_cnn.py --resume from elsewhere)
        "distribution": strategy_info(strategy),
        "versions": library_versions(),
        "machine": machine_info(),
    }


def _model_args(built):
    model = built.model
    return {
        "name": model.name,
        "image_size": built.image_size,
        "parameters": int(model.count_params()),
        "two_phase": getattr(built, "backbone", None) is not None,
        "weights": dict(getattr(built, "weights_info", {}) or {}),
    }


def settings_rows(settings):
    """The report's rows for what made the data and the model: crop, alignment, augmentation, fusion, TTA.

    Read from the Dataset's crop_settings.json and augment.json, so a result made from
    crops of other settings (a stale run) shows it in the table, not only in the command line.
    """
    from efr.crop.destination import read_settings as read_crop_settings
    from efr.data.augmented import RUN_INFO_NAME

    crop = read_crop_settings(settings.dataset) or {}
    rows = []
    if crop:
        subjects = crop.get("subject_regex") or ("file name" if crop.get("layout") == "rafd" else "photo")
        rows.append(("crop", f"{crop.get('size')} px, margin {crop.get('margin')}, cascade {crop.get('cascade')}, "
                             f"layout {crop.get('layout')}, subjects by {subjects}"))
        rows.append(("alignment", crop.get("align", "none")))
    else:
        rows.append(("crop", "unknown (the Dataset has no crop_settings.json)"))
    augment_path = Path(settings.dataset) / RUN_INFO_NAME
    augment = {}
    if settings.offline_aug and augment_path.is_file():
        try:
            augment = json.loads(augment_path.read_text(encoding="utf-8")).get("settings") or {}
        except (OSError, ValueError, AttributeError):
            augment = {}
    offline = (f"data_aug {augment.get('recipe')} x{augment.get('copies')} (seed {augment.get('seed')})" if augment
               else "data_aug files: " + ("none" if settings.offline_aug else "ignored"))
    rows.append(("augmentation", f"online: {settings.augment}; {offline}"))
    if is_fusion(settings):
        rows.append(("fusion", f"backbone {settings.backbone}, parts {settings.fusion_parts}, "
                               f"subject-norm {'on (TRANSDUCTIVE)' if settings.subject_norm else 'off'}"))
    rows.append(("test-time augmentation", settings.tta))
    return rows


def _summary_rows(metrics, evidence, extra):
    rows = [(k, v) for k, v in extra]
    rows += [
        ("test accuracy", metrics["accuracy"]),
        *evidence_rows(evidence),
        ("chance accuracy", metrics["chance_accuracy"]),
        ("macro-F1", metrics["macro_f1"]),
    ]
    return rows


def _coverage_notes(missing):
    notes = []
    if missing.get("Test"):
        notes.append(f"Not scored: {', '.join(missing['Test'])}. Test has no images of "
                     f"{'this class' if len(missing['Test']) == 1 else 'these classes'}, so the test accuracy says "
                     "nothing about them; macro-F1 is over the classes Test has.")
    if missing.get("Valid"):
        notes.append(f"Valid has no images of {', '.join(missing['Valid'])}: early stopping could not watch "
                     f"{'it' if len(missing['Valid']) == 1 else 'them'}.")
    return notes


def _per_class_table(metrics, class_names):
    return [
        (c, metrics["per_class_precision"][c], metrics["per_class_recall"][c], metrics["per_class_f1"][c],
         metrics["support"][c])
        for c in class_names
    ]


def accuracy_evidence(correct, subjects, seed=0):
    """Wilson 95 % interval, subject-bootstrap 95 % interval and subject count of 0/1 results per photo."""
    correct = np.asarray(correct, dtype=int)
    known = [s for s in subjects if s]
    bootstrap = subject_bootstrap_interval(correct, subjects, seed=seed) if len(known) == len(correct) else None
    wilson = list(wilson_interval(int(correct.sum()), len(correct)))
    return {
        "accuracy_ci95": wilson,
        "accuracy_ci95_method": "Wilson score interval over photos",
        "accuracy_ci95_wilson": wilson,
        "accuracy_ci95_subject_bootstrap": None if bootstrap is None else list(bootstrap),
        "test_photos": int(len(correct)),
        "test_subject_count": len(set(known)) if known else None,
    }


def evidence_rows(evidence):
    """Summary rows for the interval(s) and the photos / subjects they rest on."""
    rows = [("accuracy 95% interval (Wilson, photos)", format_interval(evidence["accuracy_ci95_wilson"]))]
    if evidence.get("accuracy_ci95_subject_bootstrap"):
        rows.append(("accuracy 95% interval (bootstrap over subjects)",
                     format_interval(evidence["accuracy_ci95_subject_bootstrap"])))
    subjects = evidence.get("test_subject_count")
    rows.append(("test photos / subjects", f"{evidence['test_photos']} / {'unknown' if subjects is None else subjects}"))
    return rows


def epoch_histories(settings, histories):
    """The histories the over-fitting flag reads: Keras epochs (a fusion history is a sweep over C, not epochs)."""
    return [] if is_fusion(settings) else histories


def provenance(run_dir):
    """(provenance rows, links to the run's files) for report.html; versions and start time from args.json."""
    try:
        args = json.loads((Path(run_dir) / "args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        args = {}
    return provenance_rows(args.get("versions"), args.get("started_utc")), report.existing_links(run_dir, RUN_FILES)
