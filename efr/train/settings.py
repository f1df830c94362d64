"""A training run's settings, their defaults and the checks made before any work starts."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from efr.io.errors import EFRError
from efr.models.build import FUSION_MODEL
from efr.models.transfer import TRAINING_DEFAULTS

DEFAULT_EPOCHS = 10  # the original's

DEFAULT_BATCH_SIZE = 32  # the original's

DEFAULT_LR = 1e-3  # Adam's default, which the original used

DEFAULT_PATIENCE = 3

DEFAULT_CV_VALID_FRACTION = 0.2

TTA_MODES = ("none", "flip")

TENSORBOARD_DIR = "tensorboard"

# --weights values that are names, not files (efr.models.transfer, efr.models.efrnet).
NAMED_WEIGHTS = ("none", "imagenet", "fer2013", "efrnet")


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
    distribute: str = ""  # "", "mirrored" (tf.distribute, one machine) or "multi-worker" (JAX; True: mirrored)
    cpu_devices: int = 2  # logical CPU devices for --distribute without GPUs
    deterministic: bool = False
    seed: int = 0
    gallery_size: int = 48
    tta: str = "none"  # "flip": test-time augmentation, each face and its mirror image (recorded in the model)
    # --model fusion (efr.models.fusion)
    backbone: str = "efrnet"  # efr.models.fusion.DEFAULT_BACKBONE
    fusion_parts: str = "trunk,hog,landmarks"
    subject_norm: bool = False
    tensorboard: bool = False  # also write TensorBoard logs (run folder / tensorboard)

    def __post_init__(self):
        # Training values left None take the model's defaults, so args.json records the values used.
        for key, value in training_defaults(self.model).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.distribute is True or self.distribute is False or self.distribute is None:  # the old flag
            self.distribute = "mirrored" if self.distribute else ""


def training_defaults(model):
    """{setting: value} a run of ``model`` uses where TrainSettings leave None."""
    general = {"epochs": DEFAULT_EPOCHS, "batch_size": DEFAULT_BATCH_SIZE, "lr": DEFAULT_LR,
               "patience": DEFAULT_PATIENCE}
    return {**general, **TRAINING_DEFAULTS.get(str(model).strip().lower(), {})}


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict


def is_fusion(settings):
    return str(settings.model).strip().lower() == FUSION_MODEL


def kept_when_interrupted(settings):
    """What an interrupted run keeps (efr.io.runstate.tracked_run): fusion fits no epochs, it extracts features."""
    if is_fusion(settings):
        return ("its settings, and the features of every split extracted in full (in the dataset's features_cache; "
                "a re-run extracts only the rest)")
    return "its completed epochs"


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
    from efr.train.distributed import MULTI_WORKER, distribute_mode

    if distribute_mode(settings.distribute) == MULTI_WORKER:
        for wrong, why in ((is_fusion(settings), "--model fusion fits its head without Keras epochs"),
                           (settings.folds, "--folds runs its folds one after another on each process"),
                           (settings.tensorboard, "--tensorboard writes TensorFlow summaries")):
            if wrong:
                raise EFRError(f"--distribute multi-worker: {why}; leave --distribute out (or use mirrored)")
    if settings.subject_norm and not is_fusion(settings):
        # Only the fusion head centres each person's features; any other model would ignore it, yet args.json
        # would say it was used.
        raise EFRError(f"--subject-norm centres the fused features of --model fusion; --model {settings.model} has "
                       "none: leave --subject-norm out, or use --model fusion")
    if is_fusion(settings):  # named wrongly, they were refused only once the features were being built
        from efr.models.fusion import BACKBONES, check_parts

        check_parts(str(settings.fusion_parts).split(","))
        if str(settings.backbone or "").strip().lower() not in BACKBONES:
            raise EFRError(f"--backbone {settings.backbone}: choose one of {', '.join(BACKBONES)}")
    weights = str(settings.weights or "").strip()
    # The seed CNN refuses any --weights with its own message (efr.models.build), so only the others are checked here.
    if (weights and model != SEED_MODEL and weights.lower() not in NAMED_WEIGHTS
            and not Path(weights).expanduser().is_file()):
        raise EFRError(f"--weights {weights}: no such file; give a weights file, 'none' for random initial weights, "
                       "or leave --weights out for the model's own pretrained weights")
    if settings.tensorboard and is_fusion(settings):
        raise EFRError("--tensorboard logs Keras training epochs; --model fusion fits its head without them: "
                       "leave --tensorboard out (its C sweep is in history.csv)")
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        # Keras' TensorBoard callback writes through tf.summary, which needs the tensorboard package.
        raise EFRError("--tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or pip install 'efr[tensorboard]')")
