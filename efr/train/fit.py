"""Fitting a Keras model: distribution strategy, seeds, the training phases (head, then fine-tuning),
resuming a phase from its checkpoint, the epoch history."""

import csv
import io
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from efr.data import pipelines as efr_data
from efr.io import runstate
from efr.io.errors import EFRError
from efr.io.imageio import write_text_atomic
from efr.models.build import compile_model
from efr.train.settings import TENSORBOARD_DIR

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------
# Set-up: distribution, seeds, run folder


def make_strategy(distribute, cpu_devices=2, on_peer_failure=None):
    """The tf.distribute strategy: MirroredStrategy over GPUs, or over logical CPU devices.

    ``distribute`` "multi-worker": keras.distribution.DataParallel on Keras' JAX backend
    over the processes the KERAS_DISTRIBUTION_* variables name (efr.train.distributed;
    ``on_peer_failure`` is its watchdog's call).

    Without GPUs the CPU is split into ``cpu_devices`` logical devices, which
    TensorFlow allows only before it has run any operation; so call this first.
    A TF_CONFIG environment variable (multi-worker training) is refused, see below.
    """
    from efr.train import distributed

    mode = distributed.distribute_mode(distribute)
    if mode == distributed.MULTI_WORKER:
        return distributed.start(distributed.cluster_from_env(), on_peer_failure)

    import tensorflow as tf

    if not mode:
        return tf.distribute.get_strategy()
    if os.environ.get("TF_CONFIG"):
        # MultiWorkerMirroredStrategy is how TensorFlow trains over several machines,
        # but Keras 3's model.fit fails under it (PerReplica inputs; keras-team/keras
        # #20585, tensorflow/tensorflow#72388; reproduced with TF 2.21 / Keras 3.15):
        # say so instead of crashing mid-run.  Lift this once Keras supports it.
        raise EFRError(
            "--distribute with TF_CONFIG set asks for multi-worker training, which Keras 3's model.fit does not "
            "support yet (keras-team/keras#20585); use --distribute multi-worker (Keras' JAX backend, "
            "KERAS_DISTRIBUTION_* variables) to train over several machines, or unset TF_CONFIG"
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
    from efr.train.callbacks import ResumableEarlyStopping

    model = built.model
    out_dir = Path(out_dir) if out_dir is not None else None
    checkpoint, best = _start_fit(out_dir, strategy, meta, save_files, prefix, resumable)
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
        callbacks = _phase_callbacks(out_dir, settings, meta, save_files, prefix, extra_callbacks, resumable,
                                     index, phase, phase_start, phase_start + epochs, best, stopping)
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


def _start_fit(out_dir, strategy, meta, save_files, prefix, resumable):
    """(the checkpoint an interrupted fit left, or None; the BestModelSaver of every phase).

    With a checkpoint the saver starts from its best so far; history.csv keeps the rows
    of the checkpoint's epochs only.
    """
    from efr.train.callbacks import BestModelSaver

    checkpoint = runstate.load_checkpoint(out_dir) if resumable else None
    if hasattr(strategy, "share_from_chief"):  # multi-worker: process 0's run folder decides, the others follow
        checkpoint = strategy.share_from_chief(checkpoint)
    if resumable and checkpoint is None:
        warn_lost_checkpoint(out_dir, prefix)
    best = BestModelSaver(out_dir / "best.keras" if save_files else None, meta)
    if out_dir is not None:
        _trim_history(out_dir / "history.csv", checkpoint[0]["epochs_done"] if checkpoint else 0)
    if checkpoint:
        best.best, best.best_epoch = checkpoint[0]["best"]["best"], checkpoint[0]["best"]["best_epoch"]
        best.best_weights = checkpoint[1].get("best") or None
        log.info("%sresuming after epoch %d (checkpoint %s)", prefix, checkpoint[0]["epochs_done"],
                 runstate.checkpoint_path(out_dir))
    return checkpoint, best


def _phase_callbacks(out_dir, settings, meta, save_files, prefix, extra_callbacks, resumable,
                     index, phase, phase_start, phase_end, best, stopping):
    """The callbacks of phase ``index`` (``phase``: its name), fitted from epoch ``phase_start`` to ``phase_end``."""
    from efr.train.callbacks import EpochLogger, InterruptCheck, LastModelSaver, PhaseCSVLogger, TrainingCheckpoint

    callbacks = [InterruptCheck(), EpochLogger(phase, phase_end, prefix)]
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
    return callbacks


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


def warn_lost_checkpoint(out_dir, prefix=""):
    """Say so when history.csv lists finished epochs but checkpoint.npz is gone: the fit starts again from epoch 1.

    Each epoch's history row is written just before its checkpoint, so one row without a
    checkpoint is a run stopped between the two; more mean the checkpoint was deleted.
    Returns the number of epochs listed.
    """
    path = Path(out_dir) / "history.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as handle:
        epochs = max(len(list(csv.reader(handle))) - 1, 0)
    if epochs > 1:
        log.warning("%swarning: %s lists %d finished epochs but %s is missing (deleted?): this training cannot "
                    "continue where it stopped and starts again from epoch 1; to keep the earlier epochs, put the "
                    "checkpoint back and run again", prefix, path, epochs, runstate.checkpoint_path(out_dir))
    return epochs


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
        text = handle.read()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return
    column = rows[0].index("epoch") if "epoch" in rows[0] else 0
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[column])) < epochs_done]
    buffer = io.StringIO()
    # Keras' CSVLogger appends the resumed epochs with its own line ends (\r\n): keep the file's, not mix them.
    csv.writer(buffer, lineterminator="\r\n" if "\r\n" in text else "\n").writerows(kept)
    write_text_atomic(path, buffer.getvalue())
