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

import dataclasses
import shutil

from efr.data import pipelines as efr_data
from efr.train import distributed
from efr.train.crossval import cross_validate
from efr.train.dataset import prepare_cross_validation, prepare_single_run
from efr.train.fit import make_strategy, set_seeds
from efr.train.settings import validate_settings
from efr.train.single import train_once


def run_training(settings, on_peer_failure=None):
    """Train (or cross-validate) as ``settings`` say; return a RunResult (run folder, metrics).

    The settings and the Dataset are checked first, every problem at once, before
    TensorFlow is started.  ``--distribute multi-worker``: every process trains, process 0
    alone writes the run folder (efr.train.distributed; ``on_peer_failure`` is called when
    another process fails; the caller posts this one's failure with ``report_failure``).
    """
    validate_settings(settings)
    efr_data.check_dataset_dir(settings.dataset)
    view = prepare_cross_validation(settings) if settings.folds else prepare_single_run(settings)
    # first: before TensorFlow runs an op
    strategy = make_strategy(settings.distribute, settings.cpu_devices, on_peer_failure)
    set_seeds(settings.seed, settings.deterministic)
    scratch = distributed.scratch_runs_dir(strategy)
    run_settings = dataclasses.replace(settings, runs_dir=scratch) if scratch else settings
    try:
        if settings.folds:
            return cross_validate(run_settings, strategy, view)
        return train_once(run_settings, strategy, view)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
