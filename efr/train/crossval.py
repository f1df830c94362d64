"""Subject-disjoint K-fold cross-validation: plan the folds, run (or resume) each, pool the held-out
predictions into one evaluation and report."""

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

from efr.data import pipelines as efr_data
from efr.evaluate import metrics as evaluate, report
from efr.io import runstate
from efr.io.errors import EFRError
from efr.io.imageio import write_text_atomic
from efr.io.runinfo import write_json
from efr.train.dataset import _check_enough, prepare_cross_validation
from efr.train.evidence import (_base_args, _model_args, _per_class_table, _transductive_note, accuracy_evidence,
                                evidence_rows, provenance, settings_rows)
from efr.train.fit import set_seeds
from efr.train.rundir import FOLD_RESULT_NAME, make_run_dir
from efr.train.score import _build, _model_meta, fit_and_score, predictions_csv, train_batch
from efr.train.settings import RunResult, is_fusion, kept_when_interrupted
from efr.train.single import _report_flags

log = logging.getLogger(__name__)


def cross_validate(settings, strategy, view=None):
    """Subject-disjoint K-fold cross-validation over every original photo of the Dataset (resumable by fold)."""
    k = int(settings.folds)
    if k < 2:
        raise EFRError(f"--folds {k}: cross-validation needs at least 2 folds")
    view = view or prepare_cross_validation(settings)
    samples, skipped, class_names, plans = view.samples, view.skipped, view.class_names, view.parts
    originals = efr_data.select(samples, include_augmented=False)
    for plan in plans:
        _check_enough(len(plan["train"]), train_batch(settings), f"fold {plan['fold']} training set",
                      strategy.num_replicas_in_sync)

    _build(settings, len(class_names), strategy)  # fail on missing weights before making the run folder
    run_dir, resuming = make_run_dir(settings, prefix=f"{settings.model}-cv{k}")
    with runstate.tracked_run(run_dir, resuming, kept_when_interrupted(settings)):
        result = _cross_validate_in(run_dir, resuming, settings, strategy, samples, skipped, originals,
                                    class_names, plans)
    for plan in plans:
        runstate.remove_checkpoint(run_dir / f"fold{plan['fold']}")
    return result


def _run_fold(run_dir, plan, k, settings, strategy, class_names):
    """Train and score one fold (or resume it); its result is kept in fold<k>/fold_result.json."""
    import keras

    fold = plan["fold"]
    fold_dir = run_dir / f"fold{fold}"
    keras.backend.clear_session()
    set_seeds(settings.seed + fold, settings.deterministic)
    built = _build(settings, len(class_names), strategy)
    fold_dir.mkdir(exist_ok=True)
    meta = _model_meta(built, class_names, settings, run_dir.name)
    log.info("fold %d/%d: train %d images (%d augmented), valid %d (subjects %s), test %d (subjects %s)",
             fold, k, len(plan["train"]), plan["augmented_in_train"], len(plan["valid"]),
             ", ".join(plan["valid_subjects"]), len(plan["test"]), ", ".join(plan["test_subjects"]))
    unit = fit_and_score(built, settings, strategy, plan, class_names, meta, fold_dir, seed=settings.seed + fold,
                         save_files=False, prefix=f"fold {fold}: ", where=f"the test subjects of fold {fold}")
    fit = unit.fit
    metrics = evaluate.compute_metrics(unit.y_true, unit.probs, class_names)
    if "probs_plain" in unit.predicted:
        metrics["plain_accuracy"] = float((unit.predicted["probs_plain"].argmax(axis=1) == unit.y_true).mean())
    evaluate.plot_history(evaluate.read_history(fold_dir / "history.csv"), fold_dir / "curves.png",
                          title=f"fold {fold}: training curves")
    write_json(fold_dir / "metrics.json", dict(metrics, **fit, test_subjects=plan["test_subjects"],
                                               valid_subjects=plan["valid_subjects"]))
    row = {
        "fold": fold, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
        **({"plain_accuracy": metrics["plain_accuracy"]} if "plain_accuracy" in metrics else {}),
        "train_images": len(plan["train"]), "augmented_in_train": plan["augmented_in_train"],
        "valid_images": len(plan["valid"]), "test_images": len(plan["test"]),
        "epochs_run": fit["epochs_run"], "best_epoch": fit["best_epoch"],
        "test_subjects": " ".join(plan["test_subjects"]), "valid_subjects": " ".join(plan["valid_subjects"]),
    }
    log.info("fold %d/%d: accuracy %.3f, macro-F1 %.3f", fold, k, metrics["accuracy"], metrics["macro_f1"])
    result = {"row": row, "model": _model_args(built), "image_size": built.image_size,
              "test_paths": [str(p) for p in unit.test_paths], "y_true": unit.y_true.tolist(),
              "probs": unit.probs.tolist()}
    write_json(fold_dir / FOLD_RESULT_NAME, result)  # the fold is done once this file exists
    runstate.remove_checkpoint(fold_dir)
    return result


def _finished_fold(run_dir, plan):
    """A fold's saved result when an earlier (interrupted) run finished it, else None."""
    path = run_dir / f"fold{plan['fold']}" / FOLD_RESULT_NAME
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # unreadable: train the fold again
    if result.get("test_paths") != [str(s.path) for s in plan["test"]]:
        raise EFRError(f"{path}: this finished fold held out other photos than the Dataset gives it now (was the "
                       "Dataset changed?); pass --exist-ok to start the cross-validation again")
    log.info("fold %d: finished before the interruption, kept (accuracy %.3f)", plan["fold"],
             result["row"]["accuracy"])
    return result


def _cross_validate_in(run_dir, resuming, settings, strategy, samples, skipped, originals, class_names, plans):
    k = len(plans)
    log.info("run folder %s: %d-fold cross-validation over %d photos of %d subjects", run_dir, k, len(originals),
             len({s.subject for s in originals}))
    args = _base_args(settings, strategy)
    args.update(
        run_dir=str(run_dir),
        class_names=class_names,
        dataset={
            "path": str(settings.dataset),
            "original_images": len(originals),
            "subjects": len({s.subject for s in originals}),
            "by_split_kind": efr_data.count_by(samples, "split", "kind"),
            "by_emotion": efr_data.count_by(originals, "emotion"),
            "skipped_unreadable": [[str(p), why] for p, why in skipped],
        },
        folds=[{key: (len(v) if isinstance(v, list) and key in ("train", "valid", "test") else v)
                for key, v in plan.items()} for plan in plans],
    )
    if not resuming:
        write_json(run_dir / "args.json", args)

    fold_rows, all_paths, all_true, all_probs, all_folds = [], [], [], [], []
    size = None
    for plan in plans:
        fold = plan["fold"]
        done = _finished_fold(run_dir, plan) if resuming else None
        if done is None:
            done = _run_fold(run_dir, plan, k, settings, strategy, class_names)
            runstate.write_state(run_dir, runstate.RUNNING, folds_done=fold)
        if fold == 1 and not resuming:
            args["model"] = done["model"]
            write_json(run_dir / "args.json", args)
        size = done["image_size"]
        fold_rows.append(done["row"])
        all_paths += [Path(p) for p in done["test_paths"]]
        all_true.append(np.asarray(done["y_true"], dtype=int))
        all_probs.append(np.asarray(done["probs"], dtype=np.float32).reshape(len(done["y_true"]), len(class_names)))
        all_folds += [fold] * len(done["test_paths"])
    return _finish_cv(settings, run_dir, k, class_names, originals, size, fold_rows, all_paths, all_true, all_probs,
                      all_folds)


def _finish_cv(settings, run_dir, k, class_names, originals, size, fold_rows, all_paths, all_true, all_probs,
               all_folds):
    y_true = np.concatenate(all_true)
    probs = np.concatenate(all_probs)
    _write_cv_csv(run_dir / "cv.csv", fold_rows)
    pooled = evaluate.write_evaluation(run_dir, y_true, probs, class_names, title_suffix=f", {k} folds summed")
    write_text_atomic(run_dir / "test_predictions.csv",
                      predictions_csv(all_paths, y_true, probs, class_names, extra={"fold": all_folds}))
    evaluate.plot_fold_scores(fold_rows, run_dir / "cv_scores.png")
    subject_of = {str(s.path): s.subject for s in originals}
    all_subjects = [subject_of.get(str(p), "") for p in all_paths]
    evidence = _cv_evidence(probs.argmax(axis=1) == y_true, all_subjects, settings.seed)
    results = _cv_results(k, fold_rows, evidence, pooled, class_names, originals)
    summary_extra, notes = _plain_scores(fold_rows, results)
    write_json(run_dir / "metrics.json", results)
    wrong = evaluate.misclassified(all_paths, y_true, probs, class_names, limit=settings.gallery_size,
                                   subjects=all_subjects)
    histories = [(f"Fold {r['fold']}: ", evaluate.read_history(run_dir / f"fold{r['fold']}" / "history.csv"))
                 for r in fold_rows]
    flags = _report_flags(settings, pooled, histories, evidence)
    rows, links = provenance(run_dir)
    report.write_report(
        run_dir / "report.html",
        f"EFR {k}-fold cross-validation {run_dir.name}",
        _cv_summary_rows(settings, size, originals, results, evidence, pooled, summary_extra),
        tables=_cv_tables(settings, fold_rows, pooled, class_names),
        figures=[("fold scores", run_dir / "cv_scores.png"),
                 ("confusion matrix, folds summed (counts)", run_dir / "confusion_matrix.png"),
                 ("confusion matrix, folds summed (row-normalised)", run_dir / "confusion_matrix_normalized.png")],
        gallery=wrong,
        gallery_total=int((probs.argmax(axis=1) != y_true).sum()),
        notes=["Every photo is predicted once, by the model of the fold that held its subject out.", *notes],
        flags=flags,
        provenance=rows,
        links=links,
    )
    log.info("cross-validation: accuracy %.3f ± %.3f, macro-F1 %.3f ± %.3f over %d folds; report %s",
             results["accuracy_mean"], results["accuracy_std"], results["macro_f1_mean"], results["macro_f1_std"],
             k, run_dir / "report.html")
    return RunResult(run_dir, results)


def _write_cv_csv(path, fold_rows):
    """cv.csv: one row per fold."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fold_rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(fold_rows)
    write_text_atomic(path, buffer.getvalue())


def _cv_evidence(correct, subjects, seed):
    """accuracy_evidence of the pooled held-out predictions, its headline interval the subject bootstrap."""
    evidence = accuracy_evidence(correct, subjects, seed)
    # For CV the headline interval is the subject bootstrap (photos of one person are not independent).
    if evidence["accuracy_ci95_subject_bootstrap"]:
        evidence["accuracy_ci95"] = evidence["accuracy_ci95_subject_bootstrap"]
        evidence["accuracy_ci95_method"] = "percentile bootstrap over subjects (2000 resamples), pooled folds"
    return evidence


def _cv_results(k, fold_rows, evidence, pooled, class_names, originals):
    """metrics.json of a cross-validation: mean and spread over the folds, and the pooled scores."""
    accuracies = np.array([r["accuracy"] for r in fold_rows])
    f1s = np.array([r["macro_f1"] for r in fold_rows])
    return {
        "folds": k,
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std(ddof=1)),
        **evidence,
        "macro_f1_mean": float(f1s.mean()),
        "macro_f1_std": float(f1s.std(ddof=1)),
        "test_accuracy": pooled["accuracy"],  # pooled over all held-out photos
        "macro_f1": pooled["macro_f1"],
        "chance_accuracy": pooled["chance_accuracy"],
        "per_class_recall": pooled["per_class_recall"],
        "class_names": class_names,
        "images": {"original": len(originals), "augmented_used": sum(r["augmented_in_train"] for r in fold_rows)},
        "per_fold": fold_rows,
        "confusion_matrix": pooled["confusion_matrix"],
    }


def _plain_scores(fold_rows, results):
    """With --subject-norm: add the folds' accuracy without it to ``results``; return (summary rows, notes)."""
    summary_extra, notes = [], []
    if fold_rows and "plain_accuracy" in fold_rows[0]:
        plain = np.array([r["plain_accuracy"] for r in fold_rows])
        results.update(plain_accuracy_mean=float(plain.mean()), plain_accuracy_std=float(plain.std(ddof=1)),
                       transductive=True)
        summary_extra.append(("accuracy without --subject-norm (inductive)",
                              f"{plain.mean():.3f} ± {plain.std(ddof=1):.3f}"))
        notes.append(_transductive_note(plain.mean(), results["accuracy_mean"]))
    return summary_extra, notes


def _cv_summary_rows(settings, size, originals, results, evidence, pooled, summary_extra):
    """The summary table of the cross-validation report."""
    return [
        ("model", f"{settings.model} ({size} x {size})"),
        ("dataset", str(settings.dataset)),
        ("photos / subjects", f"{len(originals)} / {len({s.subject for s in originals})}"),
        ("accuracy mean ± std over folds" + (" (TRANSDUCTIVE: --subject-norm)" if summary_extra else ""),
         f"{results['accuracy_mean']:.3f} ± {results['accuracy_std']:.3f}"),
        ("macro-F1 mean ± std over folds", f"{results['macro_f1_mean']:.3f} ± {results['macro_f1_std']:.3f}"),
        *summary_extra,
        ("pooled accuracy", pooled["accuracy"]),
        *evidence_rows(evidence),
        ("chance accuracy", pooled["chance_accuracy"]),
        *settings_rows(settings),
        ("seed", settings.seed),
    ]


def _cv_tables(settings, fold_rows, pooled, class_names):
    """The tables of the cross-validation report: the folds, and the pooled scores per class."""
    return [
        ("Folds", ("fold", "accuracy", "macro-F1", "train", "valid", "test",
                   "C values tried" if is_fusion(settings) else "epochs", "test subjects"),
         [(r["fold"], r["accuracy"], r["macro_f1"], r["train_images"], r["valid_images"], r["test_images"],
           r["epochs_run"], r["test_subjects"]) for r in fold_rows]),
        ("Per class (pooled held-out folds)", ("class", "precision", "recall", "F1", "support"),
         _per_class_table(pooled, class_names)),
    ]
