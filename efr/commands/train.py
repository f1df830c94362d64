"""`efr train` / efe_cnn.py: train the expression classifier on a Dataset folder and write a run folder.

    efr train --dataset Dataset                    # the seed CNN, 256 x 256, as the original
    efr train --dataset Dataset --img-size 64 --epochs 30 --augment online
    efr train --dataset Dataset --folds 5          # subject-disjoint 5-fold cross-validation
    efr train --dataset Dataset --model fer2013    # transfer learning (efr.models.transfer)

Outputs go to runs/<name>/ (args.json, history.csv, curves.png, best.keras, last.keras,
confusion matrices, classification_report.txt, metrics.json, report.html).  Reference: docs/train.md.
"""

import argparse
import logging
import sys

from efr.commands.cli import EXIT_USER_ERROR, add_common_arguments, setup_logging
from efr.commands import entry_points

SUMMARY = "train (or cross-validate) a classifier on a Dataset; writes runs/<name>/report.html"
PARSER_KWARGS = {"description": __doc__.replace("`efr train` / ", ""),
                 "formatter_class": argparse.RawDescriptionHelpFormatter}
MODEL_CHOICES_HELP = ("seed (the original CNN, default), fusion (frozen features + softmax head), or a transfer model: "
                      "efrnet (EFR's own FER2013 network, shipped), fer2013, mobilenetv3small, efficientnetb0, resnet50")


def add_arguments(parser):
    """efe_cnn's options: the one place they are defined."""
    from efr.train.settings import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_CV_VALID_FRACTION,
        DEFAULT_EPOCHS,
        DEFAULT_LR,
        DEFAULT_PATIENCE,
    )
    from efr.models.transfer import TRAINING_DEFAULTS

    fer = TRAINING_DEFAULTS["fer2013"]
    own = TRAINING_DEFAULTS["efrnet"]
    parser.add_argument("--dataset", default="Dataset", help="Dataset folder made by crop.py (default: Dataset)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    parser.add_argument("--name", help="run folder name (default: <model>-<UTC time>, new each run)")
    parser.add_argument("--exist-ok", action="store_true",
                        help="start an existing --name folder again from epoch 1, overwriting its files")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run (e.g. runs/NAME) from its last completed epoch, with the "
                        "settings it was started with (re-running the same command with the same --name does too)")
    parser.add_argument("--model", default="seed", help=MODEL_CHOICES_HELP)
    parser.add_argument("--weights", help="transfer models: a local weights file, or 'none' for random init "
                        "(default: the model's pretrained weights)")
    parser.add_argument("--backbone", default="efrnet",
                        help="--model fusion: the frozen network whose features are fused: efrnet (default; EFR's "
                        "own, shipped), fer2013 (the 2017 mini-Xception, downloaded) or a "
                        "keras.applications backbone (mobilenetv3small, efficientnetb0, resnet50; ImageNet weights "
                        "download on first use, or give them with --weights)")
    parser.add_argument("--fusion-parts", default="trunk,hog,landmarks",
                        help="--model fusion: the parts of the fused vector, comma list of trunk, hog, landmarks")
    parser.add_argument("--subject-norm", action="store_true",
                        help="--model fusion: centre each person's features on their own mean before the head "
                        "(TRANSDUCTIVE: a test person's photos are centred together; needs >= 3 photos a person); "
                        "reports give the number without it beside it")
    parser.add_argument("--img-size", type=int, default=None,
                        help="input side in pixels (default: 256 for seed, the model's own for transfer models)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"maximum epochs (default {DEFAULT_EPOCHS}; fer2013: {fer['epochs']})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default {DEFAULT_BATCH_SIZE}; fer2013: {fer['batch_size']}")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam learning rate (default {DEFAULT_LR}; fer2013: {fer['lr']}; efrnet: {own['lr']})")
    parser.add_argument("--patience", type=int, default=None,
                        help=f"epochs without a lower validation loss before stopping (default {DEFAULT_PATIENCE}; "
                        f"fer2013: {fer['patience']}; efrnet: {own['patience']}); the best epoch's weights are kept")
    parser.add_argument("--fine-tune-lr", type=float, help="transfer models, phase 2 learning rate (default lr/10)")
    parser.add_argument("--fine-tune-epochs", type=int, help="transfer models, phase 2 maximum epochs "
                        f"(default: --epochs; fer2013: {fer['fine_tune_epochs']}; 0 skips fine-tuning)")
    parser.add_argument("--augment", choices=("none", "online"), default="none",
                        help="online: random flips, rotations, shifts, zooms, contrast and brightness on the fly "
                        "(training data only)")
    parser.add_argument("--tta", choices=("none", "flip"), default="none",
                        help="test-time augmentation: flip averages each face's probabilities with its mirror "
                        "image's (evaluation here and predict.py, which reads it from the model)")
    parser.add_argument("--no-offline-aug", dest="offline_aug", action="store_false",
                        help="ignore data_aug.py's augmented files (used by default in Train and Valid)")
    parser.add_argument("--allow-incomplete-augmentation", action="store_true",
                        help="train even though data_aug.py was interrupted (its files cover some photos only)")
    parser.add_argument("--cache", choices=("auto", "memory", "none"), default="auto",
                        help="keep decoded images in memory: auto (when they fit in 512 MB), memory, none")
    parser.add_argument("--folds", type=int, default=0,
                        help="K >= 2: subject-disjoint K-fold cross-validation over all original photos")
    parser.add_argument("--cv-valid-fraction", type=float, default=DEFAULT_CV_VALID_FRACTION,
                        help=f"share of each fold's training subjects held out for early stopping "
                        f"(default {DEFAULT_CV_VALID_FRACTION})")
    parser.add_argument("--distribute", nargs="?", const="mirrored", default="", choices=("mirrored", "multi-worker"),
                        help="mirrored (the default when given alone): tf.distribute.MirroredStrategy over this "
                        "machine's GPUs, or --cpu-devices logical CPUs; multi-worker: Keras' JAX backend with "
                        "keras.distribution.DataParallel over the processes KERAS_DISTRIBUTION_JOB_ADDRESSES, "
                        "_NUM_PROCESSES and _PROCESS_ID name (none set: this machine's devices); needs "
                        "pip install 'efr[distributed]'")
    parser.add_argument("--cpu-devices", type=int, default=2, help="logical CPU devices for --distribute without GPUs")
    parser.add_argument("--deterministic", action="store_true",
                        help="enable TensorFlow op determinism (repeatable to the bit, somewhat slower)")
    parser.add_argument("--gallery-size", type=int, default=48, help="misclassified faces shown in report.html")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard logs into the run folder (tensorboard/; "
                        "view with: tensorboard --logdir runs)")
    add_common_arguments(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def settings_from_args(args):
    from efr.train.settings import TrainSettings

    return TrainSettings(
        dataset=args.dataset, runs_dir=args.runs_dir, name=args.name, exist_ok=args.exist_ok, model=args.model,
        weights=args.weights, image_size=args.img_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        patience=args.patience, fine_tune_lr=args.fine_tune_lr, fine_tune_epochs=args.fine_tune_epochs,
        augment=args.augment, offline_aug=args.offline_aug, cache=args.cache, folds=args.folds,
        allow_incomplete_augmentation=args.allow_incomplete_augmentation,
        cv_valid_fraction=args.cv_valid_fraction, distribute=args.distribute, cpu_devices=args.cpu_devices,
        deterministic=args.deterministic, seed=args.seed, gallery_size=args.gallery_size,
        backbone=args.backbone, fusion_parts=args.fusion_parts, subject_norm=args.subject_norm, tta=args.tta,
        tensorboard=args.tensorboard,
    )


def accuracy_line(metrics):
    """The result in one line: accuracy with its 95 % interval (CV: mean ± std and the subject bootstrap)."""
    from efr.evaluate.stats import format_interval

    chance = f"chance {metrics['chance_accuracy']:.3f}"
    if "accuracy_mean" in metrics:
        line = (f"{metrics['folds']}-fold CV accuracy {metrics['accuracy_mean']:.3f} ± {metrics['accuracy_std']:.3f} "
                f"over folds")
        if metrics.get("accuracy_ci95"):
            line += f", pooled {metrics['test_accuracy']:.3f} {format_interval(metrics['accuracy_ci95'])}"
        return line + f", macro-F1 {metrics['macro_f1_mean']:.3f} ± {metrics['macro_f1_std']:.3f} ({chance})"
    line = f"test accuracy {metrics['test_accuracy']:.3f}"
    if metrics.get("accuracy_ci95"):
        line += f" {format_interval(metrics['accuracy_ci95'])}"
    return line + f" ({chance}), macro-F1 {metrics['macro_f1']:.3f}"


def transductive_line(metrics):
    """For --subject-norm runs: the inductive number beside the transductive one; None otherwise."""
    if "plain_accuracy_mean" in metrics:
        return (f"  without --subject-norm (inductive, same folds): accuracy {metrics['plain_accuracy_mean']:.3f} "
                f"± {metrics['plain_accuracy_std']:.3f}; the number above is TRANSDUCTIVE (each test person's "
                "photos centred together)")
    if "plain_test_accuracy" in metrics:
        return (f"  without --subject-norm (inductive): test accuracy {metrics['plain_test_accuracy']:.3f}; the "
                "number above is TRANSDUCTIVE (each test person's photos centred together)")
    return None


def multi_worker(settings):
    from efr.train.distributed import MULTI_WORKER, distribute_mode

    return distribute_mode(settings.distribute) == MULTI_WORKER


def run_multi_worker(settings):
    """run_training on Keras' JAX backend, one of several processes (efr.train.distributed)."""
    import dataclasses

    from efr.train.distributed import cluster_from_env, use_jax_backend
    from efr.train.run import run_training

    use_jax_backend(settings.cpu_devices)
    result = one_of_several(lambda stop: run_training(settings, on_peer_failure=stop))
    return result if cluster_from_env().process_id == 0 else dataclasses.replace(result, run_dir=None)


def one_of_several(work):
    """``work(stop)`` as one of several processes: its result, or the end of this process.

    ``stop(message)`` is the watchdog's call (efr.train.distributed.start's ``on_peer_failure``).
    Any failure, here or in another process, ends this process at once with one 'error:' line
    naming the process that failed (an error that another process's loss caused here, such as
    a failed collective operation, is settled first: efr.train.distributed.settle_error): a
    normal exit would wait for processes that are no longer training.
    """
    import os

    from efr.commands.cli import error_exit_code
    from efr.train.distributed import report_failure, settle_error

    def stop(message):
        log = logging.getLogger("efr")
        log.error("error: %s", message)
        logging.shutdown()
        os._exit(EXIT_USER_ERROR)

    try:
        return work(stop)
    except BaseException as err:  # noqa: BLE001 - every failure ends the process now (see above)
        settle_error(err, stop)  # returns when the error is this process's own (else it ends the process)
        code = error_exit_code(err)  # the error line first, then the others are told
        report_failure(err)
        sys.stdout.flush()
        logging.shutdown()
        os._exit(code)


# Options that may go with --resume: they change what is shown, not what is trained.
RESUME_COMPATIBLE = ("resume", "quiet", "verbose")


def resume_conflicts(args):
    """The training options given besides --resume (which takes every setting from the run's args.json)."""
    defaults = vars(parse_args([]))
    return sorted(f"--{key.replace('_', '-')}" for key, value in vars(args).items()
                  if key not in RESUME_COMPATIBLE and key in defaults and value != defaults.get(key))


def run_args(args):
    """Train (or resume) as the parsed arguments say; return the RunResult."""
    setup_logging(args.quiet, args.verbose)
    from efr.io.errors import EFRError

    if args.resume:
        conflicts = resume_conflicts(args)
        if conflicts:
            raise EFRError(f"--resume takes every setting from {args.resume}/args.json; leave out "
                           f"{', '.join(conflicts)} (or start a new run without --resume)")
    from efr.train.rundir import resume_settings  # deferred: imports TensorFlow
    from efr.train.run import run_training

    settings = resume_settings(args.resume) if args.resume else settings_from_args(args)
    result = run_multi_worker(settings) if multi_worker(settings) else run_training(settings)
    if result.run_dir is None:  # another process than 0: its files were temporary
        print("training finished; process 0 wrote the run folder")
        return result
    print(accuracy_line(result.metrics))
    transductive = transductive_line(result.metrics)
    if transductive:
        print(transductive)
    print(f"run folder: {result.run_dir}  (open {result.run_dir / 'report.html'})")
    return result
