"""One run on Train / Valid / Test: fit, stop early on Valid, evaluate on Test, write the run folder."""

import logging
import time

from efr.data import pipelines as efr_data
from efr.evaluate import metrics as evaluate, report
from efr.io import runstate
from efr.io.imageio import write_text_atomic
from efr.io.manifest import SPLITS
from efr.io.runinfo import write_json
from efr.train.dataset import _check_enough, prepare_single_run, synthetic_dataset
from efr.train.evidence import (_base_args, _coverage_notes, _model_args, _per_class_table, _summary_rows,
                                _transductive_note, accuracy_evidence, epoch_histories, provenance, settings_rows)
from efr.train.rundir import make_run_dir
from efr.train.score import _build, _model_meta, fit_and_score, predictions_csv, train_batch
from efr.train.settings import RunResult, is_fusion, kept_when_interrupted

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------
# One run on Train / Valid / Test


def train_once(settings, strategy, view=None):
    """Train on Train, stop early on Valid, evaluate on Test; write (or resume) the run folder."""
    view = view or prepare_single_run(settings)
    samples, skipped, class_names = view.samples, view.skipped, view.class_names
    train, valid, test = view.parts["train"], view.parts["valid"], view.parts["test"]
    _check_enough(len(train), train_batch(settings), f"{settings.dataset}/Train", strategy.num_replicas_in_sync)

    # Build first: a model that cannot be built (weights missing offline) leaves no empty run folder.
    built = _build(settings, len(class_names), strategy)
    run_dir, resuming = make_run_dir(settings, prefix=settings.model)
    with runstate.tracked_run(run_dir, resuming, kept_when_interrupted(settings)):
        result = _train_once_in(run_dir, resuming, built, settings, strategy, view)
    runstate.remove_checkpoint(run_dir)  # only once the state says finished
    return result


def _train_once_in(run_dir, resuming, built, settings, strategy, view):
    class_names, test = view.class_names, view.parts["test"]
    log.info("run folder %s", run_dir)
    meta = _model_meta(built, class_names, settings, run_dir.name)
    if not resuming:
        write_json(run_dir / "args.json", _run_args(run_dir, built, settings, strategy, view))
    unit, train_seconds = _fit_timed(built, settings, strategy, view, meta, run_dir)
    fit, test_paths, y_true, probs = unit.fit, unit.test_paths, unit.y_true, unit.probs

    metrics = evaluate.write_evaluation(run_dir, y_true, probs, class_names)
    write_text_atomic(run_dir / "test_predictions.csv", predictions_csv(test_paths, y_true, probs, class_names))
    history = evaluate.read_history(run_dir / "history.csv")
    evaluate.plot_history(history, run_dir / "curves.png", title=f"{run_dir.name}: training curves")
    test_subjects = [s.subject for s in test]
    evidence = accuracy_evidence(probs.argmax(axis=1) == y_true, test_subjects, settings.seed)
    results = _test_results(metrics, evidence, fit, view, train_seconds, resuming)
    notes = []
    if "probs_plain" in unit.predicted:
        plain = float((unit.predicted["probs_plain"].argmax(axis=1) == y_true).mean())
        results.update(plain_test_accuracy=plain, transductive=True)
        notes.append(_transductive_note(plain, metrics["accuracy"]))
    wrong = evaluate.misclassified(test_paths, y_true, probs, class_names, limit=settings.gallery_size,
                                   subjects=test_subjects)
    n_wrong = int((probs.argmax(axis=1) != y_true).sum())
    # metrics.json and report.html mark a finished run: written last, just before its state says so.
    write_json(run_dir / "metrics.json", results)
    flags = _report_flags(settings, metrics, [("", history)], evidence)
    _write_run_report(run_dir, settings, built, view, metrics, evidence, results, notes, wrong, n_wrong, flags)
    log.info("test accuracy %.3f (chance %.3f), macro-F1 %.3f; report %s", metrics["accuracy"],
             metrics["chance_accuracy"], metrics["macro_f1"], run_dir / "report.html")
    return RunResult(run_dir, results)


def _run_args(run_dir, built, settings, strategy, view):
    """args.json of a single run: the settings, the model, and what the Dataset held."""
    samples, skipped, class_names, parts = view.samples, view.skipped, view.class_names, view.parts
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    size = built.image_size
    args = _base_args(settings, strategy)
    args.update(
        run_dir=str(run_dir),
        class_names=class_names,
        model=_model_args(built),
        dataset={
            "path": str(settings.dataset),
            "images": {"Train": len(train), "Valid": len(valid), "Test": len(test)},
            "by_split_kind": efr_data.count_by(samples, "split", "kind"),
            "by_split_emotion": efr_data.count_by(samples, "split", "emotion"),
            "subjects": {s: len({x.subject for x in efr_data.select(samples, s) if x.subject}) for s in SPLITS},
            "skipped_unreadable": [[str(p), why] for p, why in skipped],
        },
        cache={"train": efr_data.resolve_cache(settings.cache, len(train), size),
               "valid": efr_data.resolve_cache(settings.cache, len(valid), size)},
    )
    return args


def _fit_timed(built, settings, strategy, view, meta, run_dir):
    """Fit the model and score it on Test (fit_and_score); return (its result, seconds it took)."""
    class_names, parts = view.class_names, view.parts
    size = built.image_size
    # A fusion model is only its frozen feature trunk until the head is fitted: say so, then the saved count.
    counted = (f"frozen features ({built.model.count_params():,} trunk parameters); the head is fitted next"
               if is_fusion(settings) else f"{built.model.count_params():,} parameters")
    log.info("training %s (%d x %d, %s) on %d images, validating on %d; classes: %s",
             settings.model, size, size, counted, len(parts["train"]), len(parts["valid"]), ", ".join(class_names))
    started = time.perf_counter()
    unit = fit_and_score(built, settings, strategy, parts, class_names, meta, run_dir, seed=settings.seed)
    if is_fusion(settings):
        log.info("fusion model fitted: %s parameters, trunk and head (the model saved and reported)",
                 f"{built.model.count_params():,}")
    return unit, time.perf_counter() - started


def _test_results(metrics, evidence, fit, view, train_seconds, resuming):
    """metrics.json of a single run: the Test scores, the images and how the fit went."""
    train, valid, test = view.parts["train"], view.parts["valid"], view.parts["test"]
    return {
        "test_accuracy": metrics["accuracy"],
        **evidence,
        "macro_f1": metrics["macro_f1"],
        "chance_accuracy": metrics["chance_accuracy"],
        "per_class_recall": metrics["per_class_recall"],
        "per_class_precision": metrics["per_class_precision"],
        "per_class_f1": metrics["per_class_f1"],
        "class_names": view.class_names,
        "images": {"Train": len(train), "Valid": len(valid), "Test": len(test)},
        "test_subjects": sorted({s.subject for s in test if s.subject}),
        "epochs_run": fit["epochs_run"],
        "best_epoch": fit["best_epoch"],
        "best_val_loss": fit["best_val_loss"],
        "phases": fit["phases"],
        "train_seconds": round(train_seconds, 2),
        "resumed": resuming,
        "missing_classes": view.missing,  # {split: classes with no image there}
        "unscored_classes": view.missing.get("Test", []),
        "confusion_matrix": metrics["confusion_matrix"],
    }


def _report_flags(settings, metrics, histories, evidence):
    """The report's warning flags for these test ``metrics``; ``histories``: [(label, epoch history)]."""
    return evaluate.report_flags(metrics["per_class_recall"], metrics["chance_accuracy"], metrics["support"],
                                 histories=epoch_histories(settings, histories),
                                 test_subjects=evidence["test_subject_count"],
                                 synthetic=synthetic_dataset(settings.dataset))


def _write_run_report(run_dir, settings, built, view, metrics, evidence, results, notes, wrong, n_wrong, flags):
    """report.html of a single run."""
    class_names, size = view.class_names, built.image_size
    train, valid, test = view.parts["train"], view.parts["valid"], view.parts["test"]
    rows, links = provenance(run_dir)
    report.write_report(
        run_dir / "report.html",
        f"EFR training run {run_dir.name}",
        _summary_rows(metrics, evidence, [
            ("model", f"{settings.model} ({size} x {size}, {built.model.count_params():,} parameters)"),
            ("dataset", str(settings.dataset)),
            ("images Train / Valid / Test", f"{len(train)} / {len(valid)} / {len(test)}"),
            # A fusion head is fitted once per point of its C grid, not over epochs.
            ("C values tried (best)" if is_fusion(settings) else "epochs run (best)",
             f"{results['epochs_run']} ({results['best_epoch']})"),
            *settings_rows(settings),
            ("seed", settings.seed),
        ]),
        tables=[("Per class (test)", ("class", "precision", "recall", "F1", "support"),
                 _per_class_table(metrics, class_names))],
        figures=[("training curves", run_dir / "curves.png"),
                 ("confusion matrix (counts)", run_dir / "confusion_matrix.png"),
                 ("confusion matrix (row-normalised)", run_dir / "confusion_matrix_normalized.png")],
        gallery=wrong,
        gallery_total=n_wrong,
        notes=[f"Test subjects never seen in training: {', '.join(results['test_subjects']) or 'unknown (no manifest)'}.",
               *notes]
        + _coverage_notes(view.missing)
        + (["This run was interrupted and resumed from its last completed epoch."] if results["resumed"] else []),
        flags=flags,
        provenance=rows,
        links=links,
    )
