"""Training runs: fit, callbacks, the run folder, cross-validation, distribution.

``run_training(settings)`` is what efe_cnn.py calls.  One run writes one folder::

    runs/<name>/args.json        settings, seed, library versions, dataset counts
                history.csv      one row per epoch (both phases for transfer models)
                curves.png       loss and accuracy, train and valid
                best.keras       lowest validation loss (EFR model file: class names, size)
                last.keras       weights after the last epoch
                test_predictions.csv, metrics.json, classification_report.txt,
                confusion_matrix.png / _normalized.png / .csv, report.html
                state.json       running / finished / failed / interrupted (efr.io.runstate)
                checkpoint.npz   while unfinished: everything needed to resume after the last epoch

An unfinished run (interrupted, killed, failed) is resumed by ``efe_cnn.py --resume
runs/<name>`` or by the same command with the same ``--name``; metrics.json and
report.html are written only when a run finishes.

With ``folds=K`` it runs subject-disjoint K-fold cross-validation instead and writes
cv.csv, fold<k>/ folders and the same summary files over the pooled held-out folds.

Early stopping watches the validation loss and restores the best weights (the
original stopped at the first epoch without improvement and kept the last ones);
best.keras is written by a callback (efr.train.callbacks) using efr.models.modelio, so it carries
the class names.  TensorFlow is imported only when a function needs it.
"""

import csv
import importlib.util
import io
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from efr.data import pipelines as efr_data
from efr.evaluate import metrics as evaluate, report
from efr.io import runstate
from efr.crop.run import read_settings as read_crop_settings
from efr.io.emotions import sorted_emotions
from efr.io.errors import EFRError
from efr.io.imageio import write_text_atomic
from efr.io.manifest import SPLITS
from efr.models.fusion import FusionBuilt
from efr.models.build import FUSION_MODEL, build_model, compile_model
from efr.models.modelio import load_model, save_model
from efr.io.runinfo import library_versions, machine_info, provenance_rows, write_json
from efr.data.split import assign_folds
from efr.evaluate.stats import format_interval, subject_bootstrap_interval, wilson_interval
from efr.data.synthetic.render import is_synthetic_folder
from efr.models.transfer import TRAINING_DEFAULTS

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10  # the original's
DEFAULT_BATCH_SIZE = 32  # the original's
DEFAULT_LR = 1e-3  # Adam's default, which the original used
DEFAULT_PATIENCE = 3
DEFAULT_CV_VALID_FRACTION = 0.2
PREDICT_BATCH_SIZE = 64
TTA_MODES = ("none", "flip")
TENSORBOARD_DIR = "tensorboard"
# The run's own files a report links to (those that exist).
RUN_FILES = ("args.json", "history.csv", "metrics.json", "test_predictions.csv", "cv.csv", "classification_report.txt",
             "confusion_matrix.csv")


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
    allow_incomplete_augmentation: bool = False  # train on an interrupted data_aug.py's files anyway
    cache: str = "auto"  # "auto", "memory" or "none"
    folds: int = 0  # >= 2: cross-validation
    cv_valid_fraction: float = DEFAULT_CV_VALID_FRACTION
    distribute: bool = False
    cpu_devices: int = 2  # logical CPU devices for --distribute without GPUs
    deterministic: bool = False
    seed: int = 0
    gallery_size: int = 48
    tta: str = "none"  # "flip": test-time augmentation, each face and its mirror image (recorded in the model)
    # --model fusion (efr.models.fusion)
    backbone: str = "fer2013"
    fusion_parts: str = "trunk,hog,landmarks"
    subject_norm: bool = False
    tensorboard: bool = False  # also write TensorBoard logs (run folder / tensorboard)

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
              extra_callbacks=(), resumable=False):
    """Fit in one phase (seed) or two (frozen backbone, then fine-tuning); return a summary.

    Writes history.csv (and best.keras, last.keras when ``save_files``) into
    ``out_dir``.  The model ends with the weights of the lowest validation loss over
    all phases.  ``train_data``: a tf.data.Dataset, or an EpochData whose epochs
    depend on their number only (what an exactly resumable fit needs).  ``extra_callbacks`` are added to every phase's fit.  With
    ``resumable`` (needs ``out_dir``) every epoch ends with a checkpoint
    (efr.io.runstate) and a checkpoint left by an interrupted fit is continued from:
    earlier phases are skipped, the phase it was in goes on after its last completed
    epoch with everything restored (see ``_restore_phase``).
    """
    from efr.train.callbacks import (
        BestModelSaver,
        EpochLogger,
        InterruptCheck,
        LastModelSaver,
        PhaseCSVLogger,
        ResumableEarlyStopping,
        TrainingCheckpoint,
    )

    model = built.model
    out_dir = Path(out_dir) if out_dir is not None else None
    checkpoint = runstate.load_checkpoint(out_dir) if resumable else None
    best = BestModelSaver(out_dir / "best.keras" if save_files else None, meta)
    if out_dir is not None:
        _trim_history(out_dir / "history.csv", checkpoint[0]["epochs_done"] if checkpoint else 0)
    if checkpoint:
        best.best, best.best_epoch = checkpoint[0]["best"]["best"], checkpoint[0]["best"]["best_epoch"]
        best.best_weights = checkpoint[1].get("best") or None
        log.info("%sresuming after epoch %d (checkpoint %s)", prefix, checkpoint[0]["epochs_done"],
                 runstate.checkpoint_path(out_dir))
    initial_epoch = 0
    phases = training_phases(built, settings)
    for index, (phase, epochs, lr, trainable) in enumerate(phases):
        if checkpoint and index < checkpoint[0]["phase"]:
            continue  # finished before the interruption: its result is in the checkpoint's weights
        if trainable is not None:
            built.backbone.trainable = trainable
        with strategy.scope():
            compile_model(model, lr)
        stopping = ResumableEarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True)
        resuming_phase = checkpoint is not None and index == checkpoint[0]["phase"]
        phase_start = checkpoint[0]["phase_start"] if resuming_phase else initial_epoch
        end_epoch = phase_start + epochs
        if resuming_phase:
            initial_epoch, end_epoch = _restore_phase(model, checkpoint, stopping, strategy, end_epoch)
        callbacks = [InterruptCheck(), EpochLogger(phase, phase_start + epochs, prefix)]
        if out_dir is not None:
            history_file = out_dir / "history.csv"
            callbacks.append(PhaseCSVLogger(history_file, phase, append=index > 0 or history_file.is_file()))
        if save_files:
            callbacks.append(LastModelSaver(out_dir / "last.keras", meta))
        if settings.tensorboard and out_dir is not None:
            import keras

            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / TENSORBOARD_DIR)))
        callbacks += [*extra_callbacks, best, stopping]
        if resumable:
            callbacks.append(TrainingCheckpoint(out_dir, index, phase_start, best, stopping))
        # EpochData: a fresh endless dataset for this fit, at this phase's epoch
        epoch_data = train_data(initial_epoch - phase_start) if callable(train_data) else train_data
        history = model.fit(
            epoch_data, validation_data=valid_data, epochs=end_epoch, initial_epoch=initial_epoch,
            steps_per_epoch=getattr(train_data, "steps_per_epoch", None),
            callbacks=callbacks, verbose=0, shuffle=False,  # the pipeline shuffles
        )
        initial_epoch += len(history.epoch)
        log.info("%s%s: %d epoch(s), best validation loss so far %.4f (epoch %d)", prefix, phase,
                 initial_epoch - phase_start, best.best, (best.best_epoch or 0) + 1)
    if best.best_weights is not None:  # EarlyStopping restores within a phase; this is the best of all phases
        model.set_weights(best.best_weights)
    return {
        "epochs_run": initial_epoch,
        "best_epoch": None if best.best_epoch is None else best.best_epoch + 1,
        "best_val_loss": None if best.best_epoch is None else best.best,
        "phases": [p[0] for p in phases],
    }


def _restore_phase(model, checkpoint, stopping, strategy, end_epoch):
    """Put a checkpoint's phase state back; return (initial epoch, end epoch) for its fit.

    The model's variables (weights and dropout generator states) and the optimizer's
    (after building it) are assigned; early stopping gets its counters and best
    weights back when training begins.  (The training data of epoch k does not depend on
    where the run started: see ``fit_model``'s ``train_data``.)  A phase that had already stopped is fitted for zero epochs, which still runs the
    end-of-training steps (restoring early stopping's best weights, saving last.keras).
    """
    meta, arrays = checkpoint
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    for variables, values in ((model.variables, arrays.get("model", [])),
                              (model.optimizer.variables, arrays.get("optimizer", []))):
        if len(variables) != len(values):
            raise EFRError(f"the training checkpoint does not fit this model ({len(values)} saved values for "
                           f"{len(variables)} variables); delete checkpoint.npz to restart the training")
        for variable, value in zip(variables, values):
            variable.assign(value)
    state = meta["early_stopping"]
    best_weights = None
    if state["has_best_weights"]:
        best_weights = arrays.get("best") if state["same_as_best"] else arrays.get("early_stopping")
    stopping.restore(state, best_weights)
    done = meta["epochs_done"]
    return done, (done if meta["stopped"] else end_epoch)


def _trim_history(path, epochs_done):
    """Keep the header and the rows of the first ``epochs_done`` epochs of history.csv (none: remove it).

    An epoch's row is written just before its checkpoint; a run stopped between the two
    would otherwise list that epoch twice once resumed.
    """
    path = Path(path)
    if not path.is_file():
        return
    if not epochs_done:
        path.unlink()
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    column = rows[0].index("epoch") if "epoch" in rows[0] else 0
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[column])) < epochs_done]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(kept)
    write_text_atomic(path, buffer.getvalue())


def predict_paths(model, paths, image_size, batch_size=PREDICT_BATCH_SIZE, tta="none"):
    """Class probabilities (n, classes) of a model for image files, in order.

    ``tta="flip"``: the mean of the probabilities of each face and its mirror image.
    """
    if not len(paths):
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    # Called eagerly, batch by batch: model.predict would build (trace) a new predict
    # function for every model, which cross-validation makes once a fold, and TensorFlow
    # warns about such repeated tracing ("triggered tf.function retracing").
    with named_decode_errors(paths):
        probs = _predict_eagerly(model, efr_data.make_image_dataset(paths, image_size, batch_size))
        if tta == "flip":
            mirrored = _predict_eagerly(model, efr_data.make_image_dataset(paths, image_size, batch_size, flip=True))
            probs = (probs + mirrored) / 2.0
    return probs


def _predict_eagerly(model, batches):
    return np.concatenate([np.asarray(model(images, training=False)) for images in batches]).astype(np.float32)


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


def _enough_problem(count, batch_size, what, replicas=1):
    """Why ``count`` images cannot make batches of ``batch_size`` on ``replicas`` devices, or None."""
    if count == 0:
        return f"{what} has no images"
    if count < batch_size:
        return (f"{what} has {count} images, fewer than --batch-size {batch_size}: "
                f"use --batch-size {max(replicas, 2 ** int(math.log2(count)))} or less, or add images")
    if batch_size < replicas:
        return f"--batch-size {batch_size} is smaller than the {replicas} devices training in parallel"
    return None


def _check_enough(count, batch_size, what, replicas=1):
    problem = _enough_problem(count, batch_size, what, replicas)
    if problem:
        raise EFRError(problem)


def _augmentation_problem(settings):
    """The refusal of a Dataset whose data_aug.py run did not finish, or None (also when allowed or unused)."""
    from efr.data.augment_stage import unfinished_augmentation

    if not settings.offline_aug:
        return None
    unfinished = unfinished_augmentation(settings.dataset)
    if unfinished is None:
        return None
    folders = ", ".join(f"{folder} {n}" for folder, n in sorted(unfinished["by_folder"].items()))
    what = (f"{settings.dataset}: data_aug.py did not finish: {len(unfinished['pending'])} planned augmented "
            f"file(s) are missing or unconfirmed ({folders}), so the augmented classes are skewed")
    if settings.allow_incomplete_augmentation:
        log.warning("warning: %s; training on them anyway (--allow-incomplete-augmentation)", what)
        return None
    return (f"{what}; complete it with `{unfinished['complete']}`, remove it with `{unfinished['clean']}`, "
            "or pass --allow-incomplete-augmentation to train on what is there")


@dataclass
class DatasetView:
    """What a training run uses of a Dataset folder, after every check."""

    samples: list
    skipped: list
    class_names: list
    parts: object = None  # single run: {"train", "valid", "test"} sample lists; cross-validation: fold plans
    missing: dict = None  # {split: [classes with no image there]}


def class_coverage(samples, splits=SPLITS):
    """(every class, {split: [classes absent from it]}) over the given splits."""
    per_split = {split: set(efr_data.class_names_of(efr_data.select(samples, split))) for split in splits}
    every = set().union(*per_split.values())
    return sorted_emotions(every), {split: sorted_emotions(every - names) for split, names in per_split.items()
                                    if every - names}


def prepare_single_run(settings):
    """Scan and check the Dataset for a Train/Valid/Test run, every problem at once (no TensorFlow)."""
    problems = []
    samples = efr_data.scan_dataset(settings.dataset, problems=problems)
    samples, skipped = efr_data.drop_unreadable(samples)
    problems.append(_augmentation_problem(settings))
    class_names, missing = class_coverage(samples)
    dataset = Path(settings.dataset)
    unlearnable = [c for c in missing.get("Train", []) if not (dataset / "Train" / c).is_dir()]  # else said above
    if unlearnable:
        problems.append(
            f"{dataset / 'Train'} has no images of {', '.join(unlearnable)}, which Valid or Test have: "
            "a model cannot learn a class it never sees; add Train images of it, or remove the class everywhere"
        )
    train = efr_data.select(samples, "Train", settings.offline_aug)
    valid = efr_data.select(samples, "Valid", settings.offline_aug)
    test = efr_data.select(samples, "Test", include_augmented=False)
    for split, part, batch in (("Train", train, train_batch(settings)), ("Valid", valid, 1), ("Test", test, 1)):
        if (dataset / split).is_dir():  # a missing folder is said above
            problems.append(_enough_problem(len(part), batch, str(dataset / split)))
    efr_data.raise_problems([p for p in problems if p], settings.dataset)
    if missing.get("Valid"):
        log.warning("warning: Valid has no images of %s: early stopping cannot watch %s; training goes on",
                    ", ".join(missing["Valid"]), "it" if len(missing["Valid"]) == 1 else "them")
    if missing.get("Test"):
        log.warning("warning: Test has no images of %s: %s cannot be scored (the report says so)",
                    ", ".join(missing["Test"]), "it" if len(missing["Test"]) == 1 else "they")
    dropped_test = len(efr_data.select(samples, "Test")) - len(test)
    if dropped_test:
        log.warning("left out %d augmented file(s) in Test: the test set is never augmented", dropped_test)
    return DatasetView(samples, skipped, class_names, {"train": train, "valid": valid, "test": test}, missing)


def prepare_cross_validation(settings):
    """Scan and check the Dataset for cross-validation, every problem at once (no TensorFlow)."""
    problems = []
    samples = efr_data.scan_dataset(settings.dataset, require_all=False, problems=problems)
    if not samples and not problems:
        problems.append(f"{settings.dataset} has none of the split folders {', '.join(SPLITS)}: run crop.py first")
    problems.append(_augmentation_problem(settings))
    samples, skipped = efr_data.drop_unreadable(samples)
    originals = efr_data.select(samples, include_augmented=False)
    plans = None
    if samples:
        try:
            plans = plan_folds(samples, int(settings.folds), settings.cv_valid_fraction, settings.seed,
                               settings.offline_aug)
        except EFRError as err:
            problems.append(str(err))
    for plan in plans or ():
        problems.append(_enough_problem(len(plan["train"]), train_batch(settings), f"fold {plan['fold']} training set"))
    efr_data.raise_problems([p for p in problems if p], settings.dataset)
    return DatasetView(samples, skipped, efr_data.class_names_of(originals), plans)


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


def train_batch(settings):
    """The batch the training set must fill: the fusion head trains on all rows at once."""
    return 1 if is_fusion(settings) else settings.batch_size


def _build(settings, num_classes, strategy):
    options = {}
    if is_fusion(settings):
        options = {"backbone": settings.backbone, "parts": settings.fusion_parts.split(","),
                   "subject_norm": settings.subject_norm}
    with strategy.scope():
        return build_model(settings.model, num_classes, settings.image_size, settings.weights, **options)


def fit_fusion_split(built, train, valid, class_names, settings, meta, out_dir=None, save_files=True):
    """--model fusion's counterpart of fit_model: features once (cached), the head in seconds."""
    from efr.models import fusion

    history, fit = fusion.fit_fusion(built, train, valid, class_names, settings.dataset, settings.seed,
                                     progress=log.isEnabledFor(logging.INFO))  # no bar with --quiet
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
        from efr.models import fusion

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


@dataclass
class EpochData:
    """Training data whose epoch k is the same batches wherever the run started (efr.data.pipelines.make_dataset)."""

    paths: list
    labels: list
    num_classes: int
    image_size: int
    batch_size: int
    seed: int = 0
    augment: str = None
    cache: object = "auto"

    @property
    def steps_per_epoch(self):
        return efr_data.steps_per_epoch(len(self.paths), self.batch_size)

    def __call__(self, start_epoch):
        """The data of one fit, from its epoch ``start_epoch`` (0 unless the fit is resumed) on."""
        return efr_data.make_dataset(self.paths, self.labels, self.num_classes, self.image_size, self.batch_size,
                                     shuffle=True, seed=self.seed, augment=self.augment, cache=self.cache,
                                     start_epoch=start_epoch)


# ----------------------------------------------------------------------------------
# One unit: fit on one split and score another (a run calls it once, CV once a fold)


@dataclass
class UnitResult:
    fit: dict
    test_paths: list
    y_true: np.ndarray
    probs: np.ndarray
    predicted: dict  # predict_samples' answer: "probs", and "probs_plain" for fusion --subject-norm


def fit_and_score(built, settings, strategy, parts, class_names, meta, out_dir, *, seed, save_files=True, prefix="",
                  where="Test"):
    """Fit ``built`` on parts["train"], stop early on parts["valid"], predict parts["test"].

    Resumable: a checkpoint left in ``out_dir`` by an interrupted call is continued
    (efr.io.runstate, ``fit_model``).  ``seed`` seeds the training shuffle.  A fusion
    model's head trains in seconds on cached features and simply runs again.
    """
    if isinstance(built, FusionBuilt):
        fit = fit_fusion_split(built, parts["train"], parts["valid"], class_names, settings, meta, out_dir=out_dir,
                               save_files=save_files)
    else:
        size = built.image_size
        labels = {part: efr_data.labels_of(parts[part], class_names) for part in ("train", "valid")}
        train_data = EpochData(
            [s.path for s in parts["train"]], labels["train"], len(class_names), size, settings.batch_size,
            seed=seed, augment="online" if settings.augment == "online" else None, cache=settings.cache,
        )
        valid_data = efr_data.make_dataset([s.path for s in parts["valid"]], labels["valid"], len(class_names),
                                           size, settings.batch_size, cache=settings.cache)
        with named_decode_errors([s.path for s in parts["train"] + parts["valid"]]):
            fit = fit_model(built, train_data, valid_data, settings, meta, strategy, out_dir=out_dir,
                            save_files=save_files, prefix=prefix, resumable=True)
    predicted = predict_samples(built, parts["test"], settings, where=where)
    y_true = np.asarray(efr_data.labels_of(parts["test"], class_names), dtype=int)
    return UnitResult(fit, [s.path for s in parts["test"]], y_true, predicted["probs"], predicted)


def synthetic_dataset(dataset):
    """True when the Dataset was cropped from efr.data.synthetic.render photos (flagged in the report)."""
    crop = read_crop_settings(dataset) or {}
    return is_synthetic_folder(crop.get("src"))


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
    with runstate.tracked_run(run_dir, resuming):
        result = _train_once_in(run_dir, resuming, built, settings, strategy, view)
    runstate.remove_checkpoint(run_dir)  # only once the state says finished
    return result


def _train_once_in(run_dir, resuming, built, settings, strategy, view):
    samples, skipped, class_names, parts = view.samples, view.skipped, view.class_names, view.parts
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    log.info("run folder %s", run_dir)
    size = built.image_size
    meta = _model_meta(built, class_names, settings, run_dir.name)
    if not resuming:
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

    log.info("training %s (%d x %d, %d parameters) on %d images, validating on %d; classes: %s",
             settings.model, size, size, built.model.count_params(), len(train), len(valid), ", ".join(class_names))
    started = time.perf_counter()
    unit = fit_and_score(built, settings, strategy, parts, class_names, meta, run_dir, seed=settings.seed)
    train_seconds = time.perf_counter() - started
    fit, test_paths, y_true, probs = unit.fit, unit.test_paths, unit.y_true, unit.probs

    metrics = evaluate.write_evaluation(run_dir, y_true, probs, class_names)
    write_text_atomic(run_dir / "test_predictions.csv", predictions_csv(test_paths, y_true, probs, class_names))
    history = evaluate.read_history(run_dir / "history.csv")
    evaluate.plot_history(history, run_dir / "curves.png", title=f"{run_dir.name}: training curves")
    test_subjects = [s.subject for s in test]
    evidence = accuracy_evidence(probs.argmax(axis=1) == y_true, test_subjects, settings.seed)
    results = {
        "test_accuracy": metrics["accuracy"],
        **evidence,
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
        "resumed": resuming,
        "missing_classes": view.missing,  # {split: classes with no image there}
        "unscored_classes": view.missing.get("Test", []),
        "confusion_matrix": metrics["confusion_matrix"],
    }
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
    flags = evaluate.report_flags(metrics["per_class_recall"], metrics["chance_accuracy"], metrics["support"],
                                  histories=epoch_histories(settings, [("", history)]),
                                  test_subjects=evidence["test_subject_count"],
                                  synthetic=synthetic_dataset(settings.dataset))
    rows, links = provenance(run_dir)
    report.write_report(
        run_dir / "report.html",
        f"EFR training run {run_dir.name}",
        _summary_rows(metrics, evidence, [
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
               *notes]
        + _coverage_notes(view.missing)
        + (["This run was interrupted and resumed from its last completed epoch."] if resuming else []),
        flags=flags,
        provenance=rows,
        links=links,
    )
    log.info("test accuracy %.3f (chance %.3f), macro-F1 %.3f; report %s", metrics["accuracy"],
             metrics["chance_accuracy"], metrics["macro_f1"], run_dir / "report.html")
    return RunResult(run_dir, results)


# ----------------------------------------------------------------------------------
# Cross-validation


def assign_cv_folds(originals, k, seed=0):
    """{subject: fold index 0..k-1}: crop.py's fold column when it has exactly k folds, else efr.data.split's."""
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
    with runstate.tracked_run(run_dir, resuming):
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
    subject_of = {str(s.path): s.subject for s in originals}
    all_subjects = [subject_of.get(str(p), "") for p in all_paths]
    evidence = accuracy_evidence(probs.argmax(axis=1) == y_true, all_subjects, settings.seed)
    # For CV the headline interval is the subject bootstrap (photos of one person are not independent).
    if evidence["accuracy_ci95_subject_bootstrap"]:
        evidence["accuracy_ci95"] = evidence["accuracy_ci95_subject_bootstrap"]
        evidence["accuracy_ci95_method"] = "percentile bootstrap over subjects (2000 resamples), pooled folds"
    results = {
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
    summary_extra, notes = [], []
    if fold_rows and "plain_accuracy" in fold_rows[0]:
        plain = np.array([r["plain_accuracy"] for r in fold_rows])
        results.update(plain_accuracy_mean=float(plain.mean()), plain_accuracy_std=float(plain.std(ddof=1)),
                       transductive=True)
        summary_extra.append(("accuracy without --subject-norm (inductive)",
                              f"{plain.mean():.3f} ± {plain.std(ddof=1):.3f}"))
        notes.append(_transductive_note(plain.mean(), results["accuracy_mean"]))
    write_json(run_dir / "metrics.json", results)
    wrong = evaluate.misclassified(all_paths, y_true, probs, class_names, limit=settings.gallery_size,
                                   subjects=all_subjects)
    histories = [(f"Fold {r['fold']}: ", evaluate.read_history(run_dir / f"fold{r['fold']}" / "history.csv"))
                 for r in fold_rows]
    flags = evaluate.report_flags(pooled["per_class_recall"], pooled["chance_accuracy"], pooled["support"],
                                  histories=epoch_histories(settings, histories),
                                  test_subjects=evidence["test_subject_count"],
                                  synthetic=synthetic_dataset(settings.dataset))
    rows, links = provenance(run_dir)
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
            *evidence_rows(evidence),
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
        flags=flags,
        provenance=rows,
        links=links,
    )
    log.info("cross-validation: accuracy %.3f ± %.3f, macro-F1 %.3f ± %.3f over %d folds; report %s",
             results["accuracy_mean"], results["accuracy_std"], results["macro_f1_mean"], results["macro_f1_std"],
             k, run_dir / "report.html")
    return RunResult(run_dir, results)


# ----------------------------------------------------------------------------------
# Entry point


def validate_settings(settings):
    """Raise EFRError for a setting that cannot work (before TensorFlow is imported)."""
    from efr.models.build import MIN_SEED_IMAGE_SIZE, SEED_MODEL, model_names

    name = settings.name
    model = str(settings.model).strip().lower()
    checks = [
        (model in model_names(), f"--model {settings.model}: choose one of {', '.join(model_names())}"),
        (not name or ("/" not in name and "\\" not in name and name not in (".", "..")),
         f"--name {name!r}: give a plain folder name (it goes under --runs-dir {settings.runs_dir})"),
        (settings.image_size is None or settings.image_size >= (MIN_SEED_IMAGE_SIZE if model == SEED_MODEL else 8),
         f"--img-size {settings.image_size}: too small (the seed CNN needs {MIN_SEED_IMAGE_SIZE} or more)"),
        (settings.gallery_size >= 0, f"--gallery-size {settings.gallery_size}: must be 0 or more"),
        (settings.cpu_devices >= 1, f"--cpu-devices {settings.cpu_devices}: need at least 1"),
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
    if settings.tensorboard and is_fusion(settings):
        raise EFRError("--tensorboard logs Keras training epochs; --model fusion fits its head without them: "
                       "leave --tensorboard out (its C sweep is in history.csv)")
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        # Keras' TensorBoard callback writes through tf.summary, which needs the tensorboard package.
        raise EFRError("--tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or pip install 'efr[tensorboard]')")


def run_training(settings):
    """Train (or cross-validate) as ``settings`` say; return a RunResult (run folder, metrics).

    The settings and the Dataset are checked first, every problem at once, before
    TensorFlow is started.
    """
    validate_settings(settings)
    efr_data.check_dataset_dir(settings.dataset)
    view = prepare_cross_validation(settings) if settings.folds else prepare_single_run(settings)
    strategy = make_strategy(settings.distribute, settings.cpu_devices)  # first: before TensorFlow runs an op
    set_seeds(settings.seed, settings.deterministic)
    if settings.folds:
        return cross_validate(settings, strategy, view)
    return train_once(settings, strategy, view)
