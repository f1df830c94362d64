"""What demo.py needs besides the stages themselves: its settings, the held-out photos, the score.

The demo runs the whole pipeline on synthetic RaFD-like photos (efr.data.synthetic.render):
photos -> crop.py -> data_aug.py -> efe_cnn.py -> predict.py on raw photos of the
Test subjects, people the model never saw in training or validation.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from efr.io.errors import EFRError
from efr.io.manifest import read_manifest
from efr.io.rafd import RafdNameError, parse_rafd_name

RUN_NAME = "demo"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes chosen so that the demo ends in a few minutes on 2 CPU cores."""

    out: Path = Path("demo")
    # 28 train / 6 valid / 6 test people with crop.py's 70/15/15 split.  With 20 people (14/3/3) the test
    # accuracy hung on which 3 people were drawn: 0.63-0.85 over seeds 0-4 (bench/demo_seeds.py, docs/demo.md).
    subjects: int = 40
    img_size: int = 64  # crops and model input, pixels (the original trained at 256)
    epochs: int = 40
    seed: int = 0
    gazes: tuple = ("frontal", "left", "right")  # RaFD's three gazes: 3 photos per person and emotion
    render_size: tuple = (681, 1024)  # RaFD's frame size (width, height)
    copies: int = 2  # data_aug.py variants per Train/Valid photo
    patience: int = 10  # Valid loss of a few people is noisy: patience 5 stopped runs while Valid accuracy still rose
    held_out_gaze: str = "frontal"  # predict.py runs on the Test subjects' frontal-gaze photos

    @property
    def photos_dir(self):
        return Path(self.out) / "photos"

    @property
    def dataset_dir(self):
        return Path(self.out) / "Dataset"

    @property
    def runs_dir(self):
        return Path(self.out) / "runs"

    @property
    def run_dir(self):
        return self.runs_dir / RUN_NAME

    @property
    def predictions_dir(self):
        return Path(self.out) / "predictions"


def smoke_settings(out, seed=0):
    """The smallest settings that still run every stage (for the test): a few seconds of work."""
    return DemoSettings(out=Path(out), subjects=7, img_size=32, epochs=2, seed=seed, gazes=("frontal",),
                        render_size=(170, 256), copies=1, patience=2)


def check_settings(settings):
    if settings.subjects < 5:
        raise EFRError(f"--subjects {settings.subjects}: the demo needs at least 5 people "
                       "(Train, Valid and Test each need their own)")
    if settings.img_size < 16:
        raise EFRError(f"--img-size {settings.img_size}: use 16 pixels or more (64 is the demo's default)")
    if settings.epochs < 1:
        raise EFRError(f"--epochs {settings.epochs}: use 1 or more")
    from efr.io.writable import check_writable

    check_writable(settings.out)


def held_out_photos(settings):
    """Raw photos of the Test subjects (from the manifest), in the held-out gaze; never seen in training."""
    rows = read_manifest(settings.dataset_dir)
    if not rows:
        raise EFRError(f"{settings.dataset_dir}: no manifest.csv; crop.py did not finish")
    chosen = [
        settings.photos_dir / row["source"]
        for row in rows
        if row["split"] == "Test" and row["kind"] in ("", "original") and row["status"] in ("ok", "no_face")
        and row["gaze"] in ("", settings.held_out_gaze)
    ]
    if not chosen:
        raise EFRError(f"{settings.dataset_dir}/manifest.csv lists no Test photos: re-run with more --subjects")
    return sorted(chosen)


@dataclass(frozen=True)
class HeldOutScore:
    photos: int
    correct: int
    no_face: int

    @property
    def accuracy(self):
        return self.correct / self.photos if self.photos else 0.0


def score_predictions(csv_path):
    """Accuracy of predictions.csv against the emotion in each photo's RaFD name.

    The largest face (face 0) of each photo counts; a photo with no face counts as wrong.
    """
    photos, correct, no_face = set(), 0, 0
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                truth = parse_rafd_name(row["source"]).emotion
            except RafdNameError:
                continue
            photos.add(row["source"])
            if row["label"] == "no_face":
                no_face += 1
            elif row["face"] == "0" and row["label"] == truth:
                correct += 1
    return HeldOutScore(len(photos), correct, no_face)
