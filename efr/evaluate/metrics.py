"""Metrics, confusion matrices and plots for a trained model's test predictions.

Everything here works on plain arrays (true class indices, predicted
probabilities) and writes files into a run folder; nothing trains or loads models.
scikit-learn computes the numbers, matplotlib (Agg, no display) draws the plots.
"""

import csv
import io
import logging
from pathlib import Path

import numpy as np

from efr.io.imageio import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)


def confusion(y_true, y_pred, num_classes):
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def compute_metrics(y_true, probs, class_names):
    """Accuracy, macro-F1, per-class recall/precision/F1 and the confusion matrix.

    ``probs``: (n, classes) predicted probabilities; the prediction is the argmax.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(probs).argmax(axis=1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Over the classes the true labels have: a class with no test image cannot be scored.
        "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true.tolist())) or labels, average="macro",
                                   zero_division=0)),
        "per_class_recall": {name: float(r) for name, r in zip(class_names, recall)},
        "per_class_precision": {name: float(p) for name, p in zip(class_names, precision)},
        "per_class_f1": {name: float(v) for name, v in zip(class_names, f1)},
        "support": {name: int(s) for name, s in zip(class_names, support)},
        "chance_accuracy": 1.0 / len(class_names),
        "confusion_matrix": confusion(y_true, y_pred, len(class_names)).tolist(),
    }


def classification_report_text(y_true, y_pred, class_names):
    from sklearn.metrics import classification_report

    return classification_report(
        y_true, y_pred, labels=list(range(len(class_names))), target_names=list(class_names), digits=3,
        zero_division=0,
    )


def confusion_csv(matrix, class_names):
    """Rows true class, columns predicted class, with header row and column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *class_names])
    for name, row in zip(class_names, matrix):
        writer.writerow([name, *[int(v) for v in row]])
    return buffer.getvalue()


def _figure_png(fig):
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix, class_names, path, normalize=False, title=None):
    """Save a confusion matrix as PNG: counts, or rows normalised to recall."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, matrix.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix (counts)"))
    threshold = (1 if normalize else matrix.max()) / 2.0
    for i in range(n):
        for j in range(n):
            text = f"{matrix[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    write_bytes_atomic(path, _figure_png(fig))


def read_history(path):
    """history.csv rows as dicts of floats (the phase column stays a string)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                parsed[key] = value
        out.append(parsed)
    return out


def plot_history(history, path, title="training curves"):
    """Save loss and accuracy per epoch (train and validation) as PNG.

    ``history``: rows as from ``read_history``; a change of ``phase`` (two-phase
    transfer training) is marked with a dashed line.
    """
    plt = _pyplot()
    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label, style in ((metric, "train", "-o"), (f"val_{metric}", "valid", "-s")):
            values = [row.get(key) for row in history]
            if values and all(isinstance(v, float) for v in values):
                ax.plot(epochs, values, style, label=label, markersize=3)
        for i in range(1, len(history)):
            if history[i].get("phase") != history[i - 1].get("phase"):
                ax.axvline(epochs[i] - 0.5, color="grey", linestyle="--", linewidth=1)
                ax.text(epochs[i] - 0.4, ax.get_ylim()[1], str(history[i].get("phase")), va="top", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    write_bytes_atomic(path, _figure_png(fig))


def plot_fold_scores(rows, path):
    """Bar chart of accuracy and macro-F1 per cross-validation fold."""
    plt = _pyplot()
    folds = [str(r["fold"]) for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(rows), 3.5))
    ax.bar(x - 0.2, [r["accuracy"] for r in rows], 0.4, label="accuracy")
    ax.bar(x + 0.2, [r["macro_f1"] for r in rows], 0.4, label="macro-F1")
    ax.set_xticks(x, [f"fold {f}" for f in folds])
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title("held-out fold scores")
    write_bytes_atomic(path, _figure_png(fig))


def write_evaluation(out_dir, y_true, probs, class_names, title_suffix=""):
    """Write the confusion matrices (PNG counts and normalised, CSV) and the sklearn report.

    Returns the metrics dict of ``compute_metrics``.
    """
    out_dir = Path(out_dir)
    metrics = compute_metrics(y_true, probs, class_names)
    matrix = metrics["confusion_matrix"]
    y_pred = np.asarray(probs).argmax(axis=1)
    write_text_atomic(out_dir / "confusion_matrix.csv", confusion_csv(matrix, class_names))
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix.png",
                          title=f"confusion matrix (counts){title_suffix}")
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix_normalized.png", normalize=True,
                          title=f"confusion matrix (row-normalised){title_suffix}")
    write_text_atomic(out_dir / "classification_report.txt", classification_report_text(y_true, y_pred, class_names))
    return metrics


def misclassified(paths, y_true, probs, class_names, limit=48, subjects=None):
    """The wrong predictions, most confident first: dicts of path, true, predicted, confidence, subject."""
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    wrong = [i for i in range(len(paths)) if y_pred[i] != y_true[i]]
    wrong.sort(key=lambda i: -probs[i, y_pred[i]])
    return [
        {
            "path": str(paths[i]),
            "true": class_names[y_true[i]],
            "predicted": class_names[y_pred[i]],
            "confidence": float(probs[i, y_pred[i]]),
            "subject": "" if subjects is None else str(subjects[i] or ""),
        }
        for i in wrong[:limit]
    ]


# ----------------------------------------------------------------------------------
# What a reader of a report should not miss

MIN_TEST_SUBJECTS = 5  # fewer people than this make any accuracy a statement about a handful of faces
RISING_EPOCHS = 5  # epochs without a new lowest validation loss before the stop that count as over-fitting


def weak_classes(per_class_recall, chance, support=None):
    """Classes (with test photos) whose recall is at or below chance."""
    return [c for c, r in per_class_recall.items() if r <= chance + 1e-12 and (support is None or support.get(c, 0))]


def epochs_after_best(history):
    """(epochs run after the lowest validation loss, best epoch number, epochs run); None without val_loss."""
    losses = [row.get("val_loss") for row in history]
    if not losses or not all(isinstance(v, float) for v in losses):
        return None
    best = int(np.argmin(losses))
    return len(losses) - 1 - best, best + 1, len(losses)


def report_flags(per_class_recall, chance, support=None, histories=(), test_subjects=None, synthetic=False):
    """Plain-text warnings for a report: weak classes, over-fitting, few test subjects, synthetic data.

    ``histories``: [(label, history rows)] (one per fold for cross-validation);
    ``test_subjects``: the number of distinct test people (None when unknown).
    """
    flags = []
    weak = weak_classes(per_class_recall, chance, support)
    if weak:
        flags.append(f"Recall at or below chance ({chance:.3f}) for {', '.join(weak)}: the model does not "
                     "recognise these classes better than guessing.")
    for label, history in histories:
        after = epochs_after_best(history)
        if after and after[0] >= RISING_EPOCHS:
            flags.append(f"{label}validation loss rose for {after[0]} epochs after its lowest point (epoch "
                         f"{after[1]} of {after[2]}) before training stopped: the model over-fitted; the weights "
                         f"kept are those of epoch {after[1]}.")
    if test_subjects is not None and test_subjects < MIN_TEST_SUBJECTS:
        flags.append(f"The test set holds only {test_subjects} subject(s) (fewer than {MIN_TEST_SUBJECTS}): "
                     "the accuracy says little about new people; prefer cross-validation (--folds).")
    if synthetic:
        flags.append("Synthetic data (efr.data.synthetic.render cartoon faces): these numbers show that the code works, "
                     "not how a model does on real photos.")
    return flags
