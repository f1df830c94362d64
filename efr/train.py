"""Training runs: fit, callbacks, the run folder, cross-validation, distribution.

``run_training(settings)`` is what efe_cnn.py calls.  One run writes one folder::

    runs/<name>/args.json        settings, seed, library versions, dataset counts
                history.csv      one row per epoch (both phases for transfer models)
                curves.png       loss and accuracy, train and valid
                best.keras       lowest validation loss (EFR model file: class names, size)
                last.keras       weights after the last epoch
                test_predictions.csv, metrics.json, classification_report.txt,
                confusion_matrix.png / _normalized.png / .csv, report.html

With ``folds=K`` it runs subject-disjoint K-fold cross-validation instead and writes
cv.csv, fold<k>/ folders and the same summary files over the pooled held-out folds.

Early stopping watches the validation loss and restores the best weights (the
original stopped at the first epoch without improvement and kept the last ones);
best.keras is written by a callback (efr.callbacks) using efr.modelio, so it carries
the class names.  TensorFlow is imported only when a function needs it.
"""

import csv
import io
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from efr import data as efr_data
from efr import evaluate, report
from efr.crop import read_settings as read_crop_settings
from efr.errors import EFRError
from efr.imageio import write_text_atomic
from efr.manifest import SPLITS
from efr.fusion import FusionBuilt
from efr.models import FUSION_MODEL, build_model, compile_model
from efr.modelio import load_model, save_model
from efr.runinfo import library_versions, machine_info, write_json
from efr.split import assign_folds
from efr.transfer import TRAINING_DEFAULTS

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10  # the original's
DEFAULT_BATCH_SIZE = 32  # the original's
DEFAULT_LR = 1e-3  # Adam's default, which the original used
DEFAULT_PATIENCE = 3
DEFAULT_CV_VALID_FRACTION = 0.2
PREDICT_BATCH_SIZE = 64
TTA_MODES = ("none", "flip")


@dataclass
class TrainSettings:
    """Everything a training run depends on (written to args.json)."""

    dataset: str = "Dataset"
    runs_dir: str = "runs"
    name: str = None  # run folder name; default <model>-<UTC time>
    exist_ok: bool = False
    model: str = "seed"
    weights: str = None  # transfer models: None (their pretrained weights), a file, or "none"
    image_size: int = None  # None: the model's default (256 for the seed CNN)
    # None: the model's default (training_defaults), filled in on construction.
    epochs: int = None
    batch_size: int = None
    lr: float = None
    patience: int = None
    fine_tune_lr: float = None  # None: lr / 10
    fine_tune_epochs: int = None  # None: the model's default, else epochs
    augment: str = "none"  # "none" or "online"
    offline_aug: bool = True  # use data_aug.py's files in Train (and Valid)
    cache: str = "auto"  # "auto", "memory" or "none"
    folds: int = 0  # >= 2: cross-validation
    cv_valid_fraction: float = DEFAULT_CV_VALID_FRACTION
    distribute: bool = False
    cpu_devices: int = 2  # logical CPU devices for --distribute without GPUs
    deterministic: bool = False
    seed: int = 0
    gallery_size: int = 48
    tta: str = "none"  # "flip": test-time augmentation, each face and its mirror image (recorded in the model)
    # --model fusion (efr.fusion)
    backbone: str = "fer2013"
    fusion_parts: str = "trunk,hog,landmarks"
    subject_norm: bool = False

    def __post_init__(self):
        # Training values left None take the model's defaults, so args.json records the values used.
        for key, value in training_defaults(self.model).items():
            if getattr(self, key) is None:
                setattr(self, key, value)


def training_defaults(model):
    """{setting: value} a run of ``model`` uses where TrainSettings leave None."""
    general = {"epochs": DEFAULT_EPOCHS, "batch_size": DEFAULT_BATCH_SIZE, "lr": DEFAULT_LR,
               "patience": DEFAULT_PATIENCE}
    return {**general, **TRAINING_DEFAULTS.get(str(model).strip().lower(), {})}


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


# ----------------------------------------------------------------------------------
# Set-up: distribution, seeds, run folder


def make_strategy(distribute, cpu_devices=2):
    """The tf.distribute strategy: MirroredStrategy over GPUs, or over logical CPU devices.

    Without GPUs the CPU is split into ``cpu_devices`` logical devices, which
    TensorFlow allows only before it has run any operation; so call this first.
    A TF_CONFIG environment variable (multi-worker training) is refused, see below.
    """
    import tensorflow as tf

    if not distribute:
        return tf.distribute.get_strategy()
    if os.environ.get("TF_CONFIG"):
        # MultiWorkerMirroredStrategy is how TensorFlow trains over several machines,
        # but Keras 3's model.fit fails under it (PerReplica inputs; keras-team/keras
        # #20585, tensorflow/tensorflow#72388; reproduced with TF 2.21 / Keras 3.15):
        # say so instead of crashing mid-run.  Lift this once Keras supports it.
        raise EFRError(
            "--distribute with TF_CONFIG set asks for multi-worker training, which Keras 3's model.fit does not "
            "support yet (keras-team/keras#20585); unset TF_CONFIG to train on this machine's GPUs or CPUs"
        )
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    if cpu_devices < 1:
        raise EFRError(f"--cpu-devices {cpu_devices}: need at least 1")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_devices)]
        )
    except RuntimeError as err:
        if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
            raise EFRError(
                "--distribute: TensorFlow was already running, so the CPU could not be split into "
                f"{cpu_devices} devices; run training in a fresh process ({err})"
            ) from err
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def strategy_info(strategy):
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: one device, whichever TensorFlow picks
        devices = []
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync), "devices": devices}


def set_seeds(seed, deterministic=False):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_run_dir(runs_dir, name=None, exist_ok=False, prefix="seed"):
    """Create and return runs_dir/name; a new name per run unless ``name`` is given.

    An existing non-empty folder is refused unless ``exist_ok`` (then its files are
    overwritten one by one as the run writes them).
    """
    runs_dir = Path(runs_dir)
    if name:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise EFRError(f"--name {name!r}: give a plain folder name (it goes under --runs-dir {runs_dir})")
        run_dir = runs_dir / name
        if run_dir.exists() and any(run_dir.iterdir()) and not exist_ok:
            raise EFRError(
                f"run folder {run_dir} already exists: choose another --name, leave --name out for a "
                "new folder, or pass --exist-ok to overwrite its files"
            )
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
    return run_dir


# ----------------------------------------------------------------------------------
# Fitting


@contextmanager
def named_decode_errors(paths):
    """Turn TensorFlow's anonymous decode failure into an error naming the file."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        path, reason = efr_data.find_undecodable(paths)
        if path is None:
            raise
        raise EFRError(f"{path}: TensorFlow cannot decode this image ({reason}); replace or remove it") from err


def training_phases(built, settings):
    """[(phase name, epochs, learning rate, backbone trainable)] for the model."""
    if getattr(built, "backbone", None) is None:
        return [("train", settings.epochs, settings.lr, None)]
    fine_tune_lr = settings.fine_tune_lr if settings.fine_tune_lr is not None else settings.lr / 10.0
    fine_tune_epochs = settings.fine_tune_epochs if settings.fine_tune_epochs is not None else settings.epochs
    phases = [("head", settings.epochs, settings.lr, False)]
    if fine_tune_epochs > 0:
        phases.append(("fine-tune", fine_tune_epochs, fine_tune_lr, True))
    return phases


def fit_model(built, train_data, valid_data, settings, meta, strategy, out_dir=None, save_files=True, prefix="",
              extra_callbacks=()):
    """Fit in one phase (seed) or two (frozen backbone, then fine-tuning); return a summary.

    Writes history.csv (and best.keras, last.keras when ``save_files``) into
    ``out_dir``.  The model ends with the weights of the lowest validation loss over
    all phases.  ``extra_callbacks`` are added to every phase's fit.
    """
    import keras

    from efr.callbacks import BestModelSaver, EpochLogger, LastModelSaver, PhaseCSVLogger

    model = built.model
    out_dir = Path(out_dir) if out_dir is not None else None
    best = BestModelSaver(out_dir / "best.keras" if save_files else None, meta)
    initial_epoch = 0
    phases = training_phases(built, settings)
    for index, (phase, epochs, lr, trainable) in enumerate(phases):
        if trainable is not None:
            built.backbone.trainable = trainable
        with strategy.scope():
            compile_model(model, lr)
        callbacks = [EpochLogger(phase, initial_epoch + epochs, prefix)]
        if out_dir is not None:
            callbacks.append(PhaseCSVLogger(out_dir / "history.csv", phase, append=index > 0))
        if save_files:
            callbacks.append(LastModelSaver(out_dir / "last.keras", meta))
        callbacks += [
            *extra_callbacks,
            best,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True),
        ]
        history = model.fit(
            train_data, validation_data=valid_data, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
            callbacks=callbacks, verbose=0, shuffle=False,  # the pipeline shuffles
        )
        initial_epoch += len(history.epoch)
        log.info("%s%s: %d epoch(s), best validation loss so far %.4f (epoch %d)", prefix, phase,
                 len(history.epoch), best.best, (best.best_epoch or 0) + 1)
    if best.best_weights is not None:  # EarlyStopping restores within a phase; this is the best of all phases
        model.set_weights(best.best_weights)
    return {
        "epochs_run": initial_epoch,
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
        "best_val_loss": None if best.best_epoch is None else best.best,
        "phases": [p[0] for p in phases],
    }


def predict_paths(model, paths, image_size, batch_size=PREDICT_BATCH_SIZE, tta="none"):
    """Class probabilities (n, classes) of a model for image files, in order.

    ``tta="flip"``: the mean of the probabilities of each face and its mirror image.
    """
    if not len(paths):
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    with named_decode_errors(paths):
        probs = model.predict(efr_data.make_image_dataset(paths, image_size, batch_size), verbose=0)
        if tta == "flip":
            mirrored = model.predict(efr_data.make_image_dataset(paths, image_size, batch_size, flip=True), verbose=0)
            probs = (probs + mirrored) / 2.0
    return probs


def predict_split(model_path, dataset_dir, split="Test", include_augmented=False, batch_size=PREDICT_BATCH_SIZE):
    """A saved model's predictions on one split of a Dataset folder.

    Returns (paths, true class indices, probabilities, class names); labels use the
    model's own class order (from its efr.json).
    """
    model, meta = load_model(model_path)
    class_names = list(meta["class_names"])
    paths, labels, _ = efr_data.list_split(dataset_dir, split, include_augmented, class_names=class_names)
    size = int(meta["image_size"][0])
    return paths, np.asarray(labels), predict_paths(model, paths, size, batch_size), class_names


def predictions_csv(paths, y_true, probs, class_names, extra=None):
    """CSV text: path, true, predicted, confidence, one probability column per class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = extra or {}
    writer.writerow(["path", *extra, "true", "predicted", "confidence", *[f"p_{c}" for c in class_names]])
    for i, path in enumerate(paths):
        row = probs[i]
        pred = int(np.argmax(row))
        writer.writerow([str(path), *[v[i] for v in extra.values()], class_names[y_true[i]], class_names[pred],
                         f"{row[pred]:.6f}", *[f"{p:.6f}" for p in row]])
    return buffer.getvalue()


# ----------------------------------------------------------------------------------
# Checks on the data


def _check_enough(count, batch_size, what, replicas=1):
    if count == 0:
        raise EFRError(f"{what} has no images")
    if count < batch_size:
        raise EFRError(
            f"{what} has {count} images, fewer than --batch-size {batch_size}: "
            f"use --batch-size {max(replicas, 2 ** int(math.log2(count)))} or less, or add images"
        )
    if batch_size < replicas:
        raise EFRError(f"--batch-size {batch_size} is smaller than the {replicas} devices training in parallel")


def _model_meta(built, class_names, settings, run_name):
    meta = dict(getattr(built, "meta", {}) or {})
    meta.update(
        class_names=list(class_names),
        image_size=[built.image_size, built.image_size],
        model=meta.get("model", settings.model),
        input="RGB float32 in [0, 255], scaled inside the model",
        trained_by="efe_cnn.py",
        tta=settings.tta,
        run=run_name,
        dataset=str(settings.dataset),
        seed=settings.seed,
    )
    # crop.py's settings travel with the model, so predict.py cuts faces exactly as in training.
    crop_settings = read_crop_settings(settings.dataset)
    if crop_settings:
        meta["crop"] = crop_settings
    return meta


def is_fusion(settings):
    return str(settings.model).strip().lower() == FUSION_MODEL


def _build(settings, num_classes, strategy):
    options = {}
    if is_fusion(settings):
        options = {"backbone": settings.backbone, "parts": settings.fusion_parts.split(","),
                   "subject_norm": settings.subject_norm}
    with strategy.scope():
        return build_model(settings.model, num_classes, settings.image_size, settings.weights, **options)


def fit_fusion_split(built, train, valid, class_names, settings, meta, out_dir=None, save_files=True):
    """--model fusion's counterpart of fit_model: features once (cached), the head in seconds."""
    from efr import fusion

    history, fit = fusion.fit_fusion(built, train, valid, class_names, settings.dataset, settings.seed,
                                     progress=True)
    meta.update(fusion=fusion.fusion_meta(built), image_size=[built.image_size, built.image_size])
    if out_dir is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        write_text_atomic(Path(out_dir) / "history.csv", buffer.getvalue())
    if save_files:
        save_model(built.model, Path(out_dir) / "best.keras", meta)
        save_model(built.model, Path(out_dir) / "last.keras", meta)
    return fit


def predict_samples(built, samples, settings, where="Test"):
    """{"probs": (n, classes)} for a split's samples; fusion --subject-norm adds "probs_plain"."""
    if isinstance(built, FusionBuilt):
        from efr import fusion

        return fusion.predict_fusion(built, samples, settings.dataset, where=where, tta=settings.tta)
    return {"probs": predict_paths(built.model, [s.path for s in samples], built.image_size, tta=settings.tta)}


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


def _summary_rows(metrics, extra):
    rows = [(k, v) for k, v in extra]
    rows += [
        ("test accuracy", metrics["accuracy"]),
        ("chance accuracy", metrics["chance_accuracy"]),
        ("macro-F1", metrics["macro_f1"]),
    ]
    return rows


def _per_class_table(metrics, class_names):
    return [
        (c, metrics["per_class_precision"][c], metrics["per_class_recall"][c], metrics["per_class_f1"][c],
         metrics["support"][c])
        for c in class_names
    ]


# ----------------------------------------------------------------------------------
# One run on Train / Valid / Test


def train_once(settings, strategy):
    """Train on Train, stop early on Valid, evaluate on Test; write the run folder."""
    samples = efr_data.scan_dataset(settings.dataset)
    samples, skipped = efr_data.drop_unreadable(samples)
    class_names = efr_data.check_same_classes(samples)
    train = efr_data.select(samples, "Train", settings.offline_aug)
    valid = efr_data.select(samples, "Valid", settings.offline_aug)
    test = efr_data.select(samples, "Test", include_augmented=False)
    dropped_test = len(efr_data.select(samples, "Test")) - len(test)
    if dropped_test:
        log.warning("left out %d augmented file(s) in Test: the test set is never augmented", dropped_test)
    replicas = strategy.num_replicas_in_sync
    _check_enough(len(train), 1 if is_fusion(settings) else settings.batch_size, f"{settings.dataset}/Train",
                  replicas)
    _check_enough(len(valid), 1, f"{settings.dataset}/Valid")
    _check_enough(len(test), 1, f"{settings.dataset}/Test")

    # Build first: a model that cannot be built (weights missing offline) leaves no empty run folder.
    built = _build(settings, len(class_names), strategy)
    run_dir = make_run_dir(settings.runs_dir, settings.name, settings.exist_ok, prefix=settings.model)
    log.info("run folder %s", run_dir)
    size = built.image_size
    meta = _model_meta(built, class_names, settings, run_dir.name)
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
    write_json(run_dir / "args.json", args)

    labels = {name: efr_data.labels_of(part, class_names) for name, part in
              (("Train", train), ("Valid", valid), ("Test", test))}
    if isinstance(built, FusionBuilt):
        started = time.perf_counter()
        fit = fit_fusion_split(built, train, valid, class_names, settings, meta, out_dir=run_dir)
        train_seconds = time.perf_counter() - started
        predicted = predict_samples(built, test, settings)
    else:
        fit, train_seconds, predicted = _fit_keras_split(built, train, valid, test, labels, class_names, settings,
                                                         meta, strategy, run_dir)
    test_paths = [s.path for s in test]
    probs = predicted["probs"]
    y_true = np.asarray(labels["Test"])
    metrics = evaluate.write_evaluation(run_dir, y_true, probs, class_names)
    write_text_atomic(run_dir / "test_predictions.csv", predictions_csv(test_paths, y_true, probs, class_names))
    history = evaluate.read_history(run_dir / "history.csv")
    evaluate.plot_history(history, run_dir / "curves.png", title=f"{run_dir.name}: training curves")
    return _finish_single_run(settings, run_dir, built, class_names, train, valid, test, test_paths, y_true, probs,
                              predicted, metrics, fit, train_seconds)


def _fit_keras_split(built, train, valid, test, labels, class_names, settings, meta, strategy, run_dir):
    size = built.image_size
    train_data = efr_data.make_dataset(
        [s.path for s in train], labels["Train"], len(class_names), size, settings.batch_size, shuffle=True,
        seed=settings.seed, augment="online" if settings.augment == "online" else None, cache=settings.cache,
    )
    valid_data = efr_data.make_dataset(
        [s.path for s in valid], labels["Valid"], len(class_names), size, settings.batch_size, cache=settings.cache
    )
    log.info("training %s (%d x %d, %d parameters) on %d images, validating on %d; classes: %s",
             settings.model, size, size, built.model.count_params(), len(train), len(valid), ", ".join(class_names))
    started = time.perf_counter()
    with named_decode_errors([s.path for s in train + valid]):
        fit = fit_model(built, train_data, valid_data, settings, meta, strategy, out_dir=run_dir)
    train_seconds = time.perf_counter() - started
    return fit, train_seconds, predict_samples(built, test, settings)


def _finish_single_run(settings, run_dir, built, class_names, train, valid, test, test_paths, y_true, probs,
                       predicted, metrics, fit, train_seconds):
    size = built.image_size
    results = {
        "test_accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "chance_accuracy": metrics["chance_accuracy"],
        "per_class_recall": metrics["per_class_recall"],
        "per_class_precision": metrics["per_class_precision"],
        "per_class_f1": metrics["per_class_f1"],
        "class_names": class_names,
        "images": {"Train": len(train), "Valid": len(valid), "Test": len(test)},
        "test_subjects": sorted({s.subject for s in test if s.subject}),
        "epochs_run": fit["epochs_run"],
        "best_epoch": fit["best_epoch"],
        "best_val_loss": fit["best_val_loss"],
        "phases": fit["phases"],
        "train_seconds": round(train_seconds, 2),
        "confusion_matrix": metrics["confusion_matrix"],
    }
    notes = []
    if "probs_plain" in predicted:
        plain = float((predicted["probs_plain"].argmax(axis=1) == y_true).mean())
        results.update(plain_test_accuracy=plain, transductive=True)
        notes.append(_transductive_note(plain, metrics["accuracy"]))
    write_json(run_dir / "metrics.json", results)
    wrong = evaluate.misclassified(test_paths, y_true, probs, class_names, limit=settings.gallery_size)
    n_wrong = int((probs.argmax(axis=1) != y_true).sum())
    report.write_report(
        run_dir / "report.html",
        f"EFR training run {run_dir.name}",
        _summary_rows(metrics, [
            ("model", f"{settings.model} ({size} x {size}, {built.model.count_params():,} parameters)"),
            ("dataset", str(settings.dataset)),
            ("images Train / Valid / Test", f"{len(train)} / {len(valid)} / {len(test)}"),
            ("epochs run (best)", f"{fit['epochs_run']} ({fit['best_epoch']})"),
            ("augmentation", f"online: {settings.augment}; data_aug.py files: {'used' if settings.offline_aug else 'ignored'}"),
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
               *notes],
    )
    log.info("test accuracy %.3f (chance %.3f), macro-F1 %.3f; report %s", metrics["accuracy"],
             metrics["chance_accuracy"], metrics["macro_f1"], run_dir / "report.html")
    return RunResult(run_dir, results)


# ----------------------------------------------------------------------------------
# Cross-validation


def assign_cv_folds(originals, k, seed=0):
    """{subject: fold index 0..k-1}: crop.py's fold column when it has exactly k folds, else efr.split's."""
    subjects = sorted({s.subject for s in originals})
    given = {s.subject: s.fold for s in originals}
    fold_values = sorted(set(given.values()), key=lambda v: (len(v), v))
    consistent = all(len({s.fold for s in originals if s.subject == subj}) == 1 for subj in subjects)
    if "" not in fold_values and len(fold_values) == k and consistent:
        index = {v: i for i, v in enumerate(fold_values)}
        log.info("cross-validation folds from the manifest's fold column")
        return {subj: index[given[subj]] for subj in subjects}
    return assign_folds(subjects, k, seed=seed)


def choose_validation_subjects(subjects, fraction, seed):
    """Some of a fold's training subjects, held out for early stopping."""
    subjects = sorted(subjects)
    count = min(len(subjects) - 1, max(1, round(len(subjects) * fraction)))
    rng = np.random.default_rng(seed)
    return set(rng.choice(subjects, size=count, replace=False).tolist())


def plan_folds(samples, k, valid_fraction=DEFAULT_CV_VALID_FRACTION, seed=0, offline_aug=True):
    """Split pooled samples into K subject-disjoint (train, valid, test) folds.

    Test folds hold originals only.  Each fold's validation subjects come out of its
    training subjects.  data_aug.py's copies join a fold's training set only when
    their parent photo (or, without a parent, their subject) is a training one, so
    no copy of a held-out face is ever trained on.
    """
    originals = [s for s in samples if s.kind == efr_data.ORIGINAL]
    unknown = [s for s in originals if not s.subject]
    if unknown:
        raise EFRError(
            f"cross-validation needs a subject per photo, and {len(unknown)} have none (e.g. {unknown[0].path}): "
            "use a Dataset made by crop.py (its manifest.csv has subjects) or RaFD file names"
        )
    subject_fold = assign_cv_folds(originals, k, seed)
    augmented = [s for s in samples if s.kind == efr_data.AUGMENTED] if offline_aug else []
    plans = []
    for fold in range(k):
        test = [s for s in originals if subject_fold[s.subject] == fold]
        rest = sorted({s.subject for s in originals if subject_fold[s.subject] != fold})
        if len(rest) < 2:
            raise EFRError(f"--folds {k}: too few subjects ({len(subject_fold)}) to hold out validation subjects too")
        valid_subjects = choose_validation_subjects(rest, valid_fraction, seed + 1000 + fold)
        train_subjects = set(rest) - valid_subjects
        train_orig = [s for s in originals if s.subject in train_subjects]
        train_rels = {s.rel for s in train_orig}
        copies = [s for s in augmented if (s.parent in train_rels if s.parent else s.subject in train_subjects)]
        plans.append({
            "fold": fold + 1,
            "train": train_orig + copies,
            "valid": [s for s in originals if s.subject in valid_subjects],
            "test": test,
            "augmented_in_train": len(copies),
            "test_subjects": sorted({s.subject for s in test}),
            "valid_subjects": sorted(valid_subjects),
            "train_subjects": sorted(train_subjects),
        })
    return plans


def cross_validate(settings, strategy):
    """Subject-disjoint K-fold cross-validation over every original photo of the Dataset."""
    import keras

    k = int(settings.folds)
    if k < 2:
        raise EFRError(f"--folds {k}: cross-validation needs at least 2 folds")
    samples = efr_data.scan_dataset(settings.dataset, require_all=False)
    if not samples:
        raise EFRError(f"{settings.dataset} has none of the split folders {', '.join(SPLITS)}: run crop.py first")
    samples, skipped = efr_data.drop_unreadable(samples)
    originals = efr_data.select(samples, include_augmented=False)
    class_names = efr_data.class_names_of(originals)
    plans = plan_folds(samples, k, settings.cv_valid_fraction, settings.seed, settings.offline_aug)
    replicas = strategy.num_replicas_in_sync
    batch = 1 if is_fusion(settings) else settings.batch_size  # the fusion head trains on all rows at once
    for plan in plans:
        _check_enough(len(plan["train"]), batch, f"fold {plan['fold']} training set", replicas)

    _build(settings, len(class_names), strategy)  # fail on missing weights before making the run folder
    run_dir = make_run_dir(settings.runs_dir, settings.name, settings.exist_ok, prefix=f"{settings.model}-cv{k}")
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
    write_json(run_dir / "args.json", args)

    fold_rows, all_paths, all_true, all_probs, all_folds = [], [], [], [], []
    size = None
    for plan in plans:
        fold = plan["fold"]
        keras.backend.clear_session()
        set_seeds(settings.seed + fold, settings.deterministic)
        built = _build(settings, len(class_names), strategy)
        size = built.image_size
        if fold == 1:
            args["model"] = _model_args(built)
            write_json(run_dir / "args.json", args)
        fold_dir = run_dir / f"fold{fold}"
        fold_dir.mkdir(exist_ok=True)
        meta = _model_meta(built, class_names, settings, run_dir.name)
        labels = {part: efr_data.labels_of(plan[part], class_names) for part in ("train", "valid", "test")}
        if isinstance(built, FusionBuilt):
            fit = fit_fusion_split(built, plan["train"], plan["valid"], class_names, settings, meta, out_dir=fold_dir,
                                   save_files=False)
        else:
            fit = _fit_keras_fold(built, plan, labels, class_names, settings, meta, strategy, fold, k, fold_dir, size)
        test_paths = [s.path for s in plan["test"]]
        predicted = predict_samples(built, plan["test"], settings, where=f"the test subjects of fold {fold}")
        probs = predicted["probs"]
        y_true = np.asarray(labels["test"])
        metrics = evaluate.compute_metrics(y_true, probs, class_names)
        if "probs_plain" in predicted:
            metrics["plain_accuracy"] = float((predicted["probs_plain"].argmax(axis=1) == y_true).mean())
        evaluate.plot_history(evaluate.read_history(fold_dir / "history.csv"), fold_dir / "curves.png",
                              title=f"fold {fold}: training curves")
        write_json(fold_dir / "metrics.json", dict(metrics, **fit, test_subjects=plan["test_subjects"],
                                                   valid_subjects=plan["valid_subjects"]))
        fold_rows.append({
            "fold": fold, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            **({"plain_accuracy": metrics["plain_accuracy"]} if "plain_accuracy" in metrics else {}),
            "train_images": len(plan["train"]), "augmented_in_train": plan["augmented_in_train"],
            "valid_images": len(plan["valid"]), "test_images": len(plan["test"]),
            "epochs_run": fit["epochs_run"], "best_epoch": fit["best_epoch"],
            "test_subjects": " ".join(plan["test_subjects"]), "valid_subjects": " ".join(plan["valid_subjects"]),
        })
        log.info("fold %d/%d: accuracy %.3f, macro-F1 %.3f", fold, k, metrics["accuracy"], metrics["macro_f1"])
        all_paths += test_paths
        all_true.append(y_true)
        all_probs.append(probs)
        all_folds += [fold] * len(test_paths)
    return _finish_cv(settings, run_dir, k, class_names, originals, size, fold_rows, all_paths, all_true, all_probs,
                      all_folds)


def _fit_keras_fold(built, plan, labels, class_names, settings, meta, strategy, fold, k, fold_dir, size):
    train_data = efr_data.make_dataset(
        [s.path for s in plan["train"]], labels["train"], len(class_names), size, settings.batch_size,
        shuffle=True, seed=settings.seed + fold, augment="online" if settings.augment == "online" else None,
        cache=settings.cache,
    )
    valid_data = efr_data.make_dataset([s.path for s in plan["valid"]], labels["valid"], len(class_names), size,
                                       settings.batch_size, cache=settings.cache)
    log.info("fold %d/%d: train %d images (%d augmented), valid %d (subjects %s), test %d (subjects %s)",
             fold, k, len(plan["train"]), plan["augmented_in_train"], len(plan["valid"]),
             ", ".join(plan["valid_subjects"]), len(plan["test"]), ", ".join(plan["test_subjects"]))
    with named_decode_errors([s.path for s in plan["train"] + plan["valid"]]):
        return fit_model(built, train_data, valid_data, settings, meta, strategy, out_dir=fold_dir,
                         save_files=False, prefix=f"fold {fold}: ")


def _finish_cv(settings, run_dir, k, class_names, originals, size, fold_rows, all_paths, all_true, all_probs,
               all_folds):
    y_true = np.concatenate(all_true)
    probs = np.concatenate(all_probs)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fold_rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(fold_rows)
    write_text_atomic(run_dir / "cv.csv", buffer.getvalue())
    pooled = evaluate.write_evaluation(run_dir, y_true, probs, class_names, title_suffix=f", {k} folds summed")
    write_text_atomic(run_dir / "test_predictions.csv",
                      predictions_csv(all_paths, y_true, probs, class_names, extra={"fold": all_folds}))
    evaluate.plot_fold_scores(fold_rows, run_dir / "cv_scores.png")
    accuracies = np.array([r["accuracy"] for r in fold_rows])
    f1s = np.array([r["macro_f1"] for r in fold_rows])
    results = {
        "folds": k,
        "accuracy_mean": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std(ddof=1)),
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
    summary_extra, notes = [], []
    if fold_rows and "plain_accuracy" in fold_rows[0]:
        plain = np.array([r["plain_accuracy"] for r in fold_rows])
        results.update(plain_accuracy_mean=float(plain.mean()), plain_accuracy_std=float(plain.std(ddof=1)),
                       transductive=True)
        summary_extra.append(("accuracy without --subject-norm (inductive)",
                              f"{plain.mean():.3f} ± {plain.std(ddof=1):.3f}"))
        notes.append(_transductive_note(plain.mean(), results["accuracy_mean"]))
    write_json(run_dir / "metrics.json", results)
    wrong = evaluate.misclassified(all_paths, y_true, probs, class_names, limit=settings.gallery_size)
    report.write_report(
        run_dir / "report.html",
        f"EFR {k}-fold cross-validation {run_dir.name}",
        [
            ("model", f"{settings.model} ({size} x {size})"),
            ("dataset", str(settings.dataset)),
            ("photos / subjects", f"{len(originals)} / {len({s.subject for s in originals})}"),
            ("accuracy mean ± std over folds" + (" (TRANSDUCTIVE: --subject-norm)" if summary_extra else ""),
             f"{results['accuracy_mean']:.3f} ± {results['accuracy_std']:.3f}"),
            ("macro-F1 mean ± std over folds", f"{results['macro_f1_mean']:.3f} ± {results['macro_f1_std']:.3f}"),
            *summary_extra,
            ("pooled accuracy", pooled["accuracy"]),
            ("chance accuracy", pooled["chance_accuracy"]),
            ("seed", settings.seed),
        ],
        tables=[
            ("Folds", ("fold", "accuracy", "macro-F1", "train", "valid", "test", "epochs", "test subjects"),
             [(r["fold"], r["accuracy"], r["macro_f1"], r["train_images"], r["valid_images"], r["test_images"],
               r["epochs_run"], r["test_subjects"]) for r in fold_rows]),
            ("Per class (pooled held-out folds)", ("class", "precision", "recall", "F1", "support"),
             _per_class_table(pooled, class_names)),
        ],
        figures=[("fold scores", run_dir / "cv_scores.png"),
                 ("confusion matrix, folds summed (counts)", run_dir / "confusion_matrix.png"),
                 ("confusion matrix, folds summed (row-normalised)", run_dir / "confusion_matrix_normalized.png")],
        gallery=wrong,
        gallery_total=int((probs.argmax(axis=1) != y_true).sum()),
        notes=["Every photo is predicted once, by the model of the fold that held its subject out.", *notes],
    )
    log.info("cross-validation: accuracy %.3f ± %.3f, macro-F1 %.3f ± %.3f over %d folds; report %s",
             results["accuracy_mean"], results["accuracy_std"], results["macro_f1_mean"], results["macro_f1_std"],
             k, run_dir / "report.html")
    return RunResult(run_dir, results)


# ----------------------------------------------------------------------------------
# Entry point


def validate_settings(settings):
    checks = [
        (settings.epochs >= 1, f"--epochs {settings.epochs}: need at least 1"),
        (settings.batch_size >= 1, f"--batch-size {settings.batch_size}: need at least 1"),
        (settings.lr > 0, f"--lr {settings.lr}: must be positive"),
        (settings.patience >= 0, f"--patience {settings.patience}: must be 0 or more"),
        (settings.fine_tune_lr is None or settings.fine_tune_lr > 0, "--fine-tune-lr must be positive"),
        (settings.fine_tune_epochs is None or settings.fine_tune_epochs >= 0, "--fine-tune-epochs must be 0 or more"),
        (settings.augment in ("none", "online"), f"--augment {settings.augment}: choose none or online"),
        (settings.tta in TTA_MODES, f"--tta {settings.tta}: choose one of {', '.join(TTA_MODES)}"),
        (settings.cache in ("auto", "memory", "none"), f"--cache {settings.cache}: choose auto, memory or none"),
        (settings.folds == 0 or settings.folds >= 2, f"--folds {settings.folds}: use 2 or more (or 0 for no CV)"),
        (0 < settings.cv_valid_fraction < 1, "--cv-valid-fraction must be between 0 and 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise EFRError(message)


def run_training(settings):
    """Train (or cross-validate) as ``settings`` say; return a RunResult (run folder, metrics)."""
    validate_settings(settings)
    efr_data.check_dataset_dir(settings.dataset)
    strategy = make_strategy(settings.distribute, settings.cpu_devices)  # first: before TensorFlow runs an op
    set_seeds(settings.seed, settings.deterministic)
    if settings.folds:
        return cross_validate(settings, strategy)
    return train_once(settings, strategy)
