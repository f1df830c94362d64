"""Keras callbacks of a training run: history with phases, best and last model files, epoch log lines.

best.keras and last.keras are written with efr.modelio.save_model (not ModelCheckpoint)
so that they carry the class names and input size predict.py needs.
"""

import logging
import math
import time

import keras

from efr.modelio import save_model

log = logging.getLogger("efr.train")


class PhaseCSVLogger(keras.callbacks.CSVLogger):
    """keras CSVLogger with a ``phase`` column, appending when a second phase starts."""

    def __init__(self, path, phase, append=False):
        super().__init__(str(path), append=append)
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, dict(logs or {}, phase=self.phase))


class BestModelSaver(keras.callbacks.Callback):
    """Keep the weights of the lowest validation loss (and save them with efr.modelio).

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
