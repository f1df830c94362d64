"""What a run trains on: the dataset scanned, checked (enough images, finished augmentation, class
coverage) and cut into the parts a single run or a cross-validation uses."""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from efr.crop.destination import read_settings as read_crop_settings
from efr.data import pipelines as efr_data
from efr.data.synthetic.render import is_synthetic_folder
from efr.io.emotions import sorted_emotions
from efr.io.errors import EFRError
from efr.io.manifest import SPLITS
from efr.train.folds import plan_folds
from efr.train.score import train_batch

log = logging.getLogger(__name__)


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
    from efr.data.augmented import unfinished_augmentation

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


def synthetic_dataset(dataset):
    """True when the Dataset was cropped from efr.data.synthetic.render photos (flagged in the report)."""
    crop = read_crop_settings(dataset) or {}
    return is_synthetic_folder(crop.get("src"))
