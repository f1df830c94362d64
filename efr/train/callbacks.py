"""Keras callbacks of a training run: history with phases, best and last model files, epoch log lines.

best.keras and last.keras are written with efr.models.modelio.save_model (not ModelCheckpoint)
so that they carry the class names and input size predict.py needs.
"""

import logging
import math
import time

import keras

from efr.io import runstate
from efr.models.modelio import save_model

log = logging.getLogger("efr.train")


class InterruptCheck(keras.callbacks.Callback):
    """Stop the fit at the next batch after Ctrl-C, even when its KeyboardInterrupt was lost.

    Python drops an exception raised inside a finaliser (a TensorFlow iterator or
    resource being deleted, say); the signal handler of efr.io.runstate.tracked_run also
    sets a flag, checked here.  Batch *begin* hooks run in the training thread and keep
    Keras' asynchronous dispatch of the batch-end hooks.
    """

    def on_train_batch_begin(self, batch, logs=None):
        runstate.check_interrupted()

    def on_test_batch_begin(self, batch, logs=None):
        runstate.check_interrupted()

    def on_epoch_end(self, epoch, logs=None):
        runstate.check_interrupted()


class PhaseCSVLogger(keras.callbacks.CSVLogger):
    """keras CSVLogger with a ``phase`` column, appending when a second phase starts."""

    def __init__(self, path, phase, append=False):
        super().__init__(str(path), append=append)
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, dict(logs or {}, phase=self.phase))


class BestModelSaver(keras.callbacks.Callback):
    """Keep the weights of the lowest validation loss (and save them with efr.models.modelio).

    Unlike ModelCheckpoint, the file is written by save_model, so it carries the
    class names and input size predict.py needs.  ``path=None`` keeps the weights in
    memory only (cross-validation folds).  One instance spans both training phases.
    """

    def __init__(self, path, meta, monitor="val_loss"):
        super().__init__()
        self.path, self.meta, self.monitor = path, meta, monitor
        self.best, self.best_epoch, self.best_weights = math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value < self.best:
            return
        self.best, self.best_epoch = float(value), epoch
        self.best_weights = self.model.get_weights()
        if self.path is not None:
            save_model(self.model, self.path, dict(self.meta, epoch=epoch + 1, val_loss=float(value)))


class LastModelSaver(keras.callbacks.Callback):
    """Save the model as it is when training ends.

    Listed before EarlyStopping, whose on_train_end then restores the best weights:
    callbacks run in list order, so this one still sees the last epoch's weights.
    """

    def __init__(self, path, meta):
        super().__init__()
        self.path, self.meta = path, meta

    def on_train_end(self, logs=None):
        save_model(self.model, self.path, dict(self.meta, weights="last epoch"))


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (--quiet silences it with the rest of INFO)."""

    def __init__(self, phase, total_epochs, prefix=""):
        super().__init__()
        self.phase, self.total, self.prefix = phase, total_epochs, prefix
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        numbers = "  ".join(
            f"{key} {logs[key]:.4f}" for key in ("loss", "accuracy", "val_loss", "val_accuracy") if key in logs
        )
        log.info("%s%s epoch %d/%d  %s  (%.1f s)", self.prefix, self.phase, epoch + 1, self.total, numbers,
                 time.perf_counter() - self.started)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """keras EarlyStopping whose counters can be saved and put back (a resumed run continues them).

    EarlyStopping resets its state when training begins; a restored state is applied
    right after that reset, so a resumed fit carries on as if it had never stopped.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._restore = None

    def state(self):
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch),
                "stopped_epoch": int(self.stopped_epoch)}

    def restore(self, state, best_weights):
        self._restore = (state, best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._restore is not None:
            state, self.best_weights = self._restore
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
            self.stopped_epoch = state["stopped_epoch"]
            self._restore = None


class TrainingCheckpoint(keras.callbacks.Callback):
    """Save everything a fit needs to continue (efr.io.runstate's checkpoint.npz) after every epoch.

    Listed last, so that the history row, best-model and early-stopping state of the
    epoch are already updated when it saves.  ``phase``/``phase_start``: the training
    phase index and the global epoch it began at.
    """

    def __init__(self, out_dir, phase, phase_start, best_saver, early_stopping):
        super().__init__()
        self.out_dir, self.phase, self.phase_start = out_dir, phase, phase_start
        self.best_saver, self.early_stopping = best_saver, early_stopping

    def on_epoch_end(self, epoch, logs=None):
        from efr.io import runstate

        best, stopping = self.best_saver, self.early_stopping
        # Early stopping's best weights are the overall best's whenever both date from the same epoch.
        same = stopping.best_weights is None or stopping.best_epoch == best.best_epoch
        meta = {
            "phase": self.phase, "phase_start": self.phase_start, "epochs_done": epoch + 1,
            "stopped": bool(self.model.stop_training),
            "best": {"best": float(best.best), "best_epoch": best.best_epoch},
            "early_stopping": dict(stopping.state(), has_best_weights=stopping.best_weights is not None,
                                   same_as_best=same),
        }
        arrays = {
            "model": [v.numpy() for v in self.model.variables],
            "optimizer": [v.numpy() for v in self.model.optimizer.variables],
            "best": list(best.best_weights or []),
        }
        if not same:
            arrays["early_stopping"] = list(stopping.best_weights)
        runstate.save_checkpoint(self.out_dir, meta, arrays)
