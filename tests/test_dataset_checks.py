"""efe_cnn.py's Dataset checks: every problem in one pass before TensorFlow starts, unfinished
augmentation refused, classes missing from Valid or Test reported instead of refused."""

import json
import shutil

import pytest

import efe_cnn
from efr.train import run as train  # where run_training calls make_strategy
from efr.data.augment_stage import augment_dataset
from efr.commands.cli import EXIT_USER_ERROR, run
from efr.io.manifest import read_manifest
from train_fixtures import make_tiny_dataset


class Started(Exception):
    """Raised instead of starting TensorFlow: the checks are over."""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("checks"), subjects=6, size=32, gazes=("frontal",))


@pytest.fixture
def no_tensorflow(monkeypatch):
    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(train, "make_strategy", started)


def _train(dataset, tmp_path, *extra):
    return run(efe_cnn.main, ["--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs"), "--img-size", "32",
                              "--batch-size", "8", "--quiet", *map(str, extra)])


def test_every_dataset_problem_is_reported_at_once_before_tensorflow(small, tmp_path, caplog, no_tensorflow):
    dataset = tmp_path / "Dataset"
    shutil.copytree(small, dataset)
    shutil.rmtree(dataset / "Test")
    (dataset / "Valid" / "Holiday").mkdir()
    for path in (dataset / "Train" / "Sad").iterdir():
        path.unlink()
    assert _train(dataset, tmp_path) == EXIT_USER_ERROR
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("error: 3 problems with the dataset")
    for part in ("Test not found", "'Holiday' is not an emotion", "Sad has no images"):
        assert part in errors[0]


def _interrupted_augmentation(dataset, monkeypatch):
    import efr.data.augment_stage as stage

    real, calls = stage.augment_photo, []

    def interrupted(source, outputs, png_writer):
        calls.append(source)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(source, outputs, png_writer)

    monkeypatch.setattr(stage, "augment_photo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        augment_dataset(dataset, copies=2, seed=3, workers=1, progress=False)
    monkeypatch.setattr(stage, "augment_photo", real)


def test_unfinished_augmentation_is_refused_with_the_commands_that_fix_it(small, tmp_path, caplog, monkeypatch,
                                                                          no_tensorflow):
    dataset = tmp_path / "Dataset"
    shutil.copytree(small, dataset)
    _interrupted_augmentation(dataset, monkeypatch)
    assert json.loads((dataset / "augment.json").read_text())["state"] == "running"
    assert _train(dataset, tmp_path) == EXIT_USER_ERROR
    assert "data_aug.py did not finish" in caplog.text
    assert f"python data_aug.py --dataset {dataset} --recipe default --copies 2 --splits Train Valid --seed 3" \
        in caplog.text
    assert f"python data_aug.py --dataset {dataset} --clean" in caplog.text
    assert "--allow-incomplete-augmentation" in caplog.text
    caplog.clear()
    with pytest.raises(Started):  # the escape: checks pass (with a warning), training would start
        efe_cnn.main(["--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs"), "--batch-size", "8",
                      "--allow-incomplete-augmentation"])
    assert "training on them anyway" in caplog.text
    # The command it names completes the augmentation; the Dataset is then accepted.
    augment_dataset(dataset, copies=2, seed=3, progress=False)
    assert {r["status"] for r in read_manifest(dataset) if r["kind"] == "augmented"} == {"ok"}
    with pytest.raises(Started):
        efe_cnn.main(["--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs"), "--batch-size", "8"])


@pytest.mark.slow
def test_classes_missing_from_valid_and_test_are_reported_not_refused(small, tmp_path, caplog):
    dataset = tmp_path / "Dataset"
    shutil.copytree(small, dataset)
    shutil.rmtree(dataset / "Valid" / "Fearful")
    shutil.rmtree(dataset / "Test" / "Neutral")
    assert _train(dataset, tmp_path, "--name", "m", "--epochs", 1) == 0
    assert "Valid has no images of Fearful" in caplog.text and "Test has no images of Neutral: it cannot be scored" in caplog.text
    metrics = json.loads((tmp_path / "runs" / "m" / "metrics.json").read_text())
    assert metrics["unscored_classes"] == ["Neutral"] and metrics["missing_classes"]["Valid"] == ["Fearful"]
    report = (tmp_path / "runs" / "m" / "report.html").read_text()
    assert "Not scored: Neutral" in report and "early stopping could not watch" in report


def test_a_killed_data_aug_run_is_refused_by_efe_cnn(small, tmp_path, caplog, no_tensorflow):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    dataset = tmp_path / "Dataset"
    shutil.copytree(small, dataset)
    slow = ("import sys, time\n"
            "import efr.data.augment_stage as stage\n"
            "real = stage.augment_photo\n"
            "stage.augment_photo = lambda *a: (time.sleep(0.05), real(*a))[1]\n"
            "import data_aug\n"
            "from efr.commands.cli import run\n"
            "sys.exit(run(data_aug.main, sys.argv[1:]))\n")
    process = subprocess.Popen([sys.executable, "-c", slow, "--dataset", str(dataset), "--workers", "1", "--quiet"],
                               cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)))
    deadline = time.monotonic() + 120
    while len(list(dataset.rglob("*__aug-*.png"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(dataset.rglob("*__aug-*.png")))
    pending = [r for r in read_manifest(dataset) if r["kind"] == "augmented" and r["status"] == "pending"]
    assert 8 <= written < len(pending)  # killed halfway
    assert _train(dataset, tmp_path) == EXIT_USER_ERROR
    assert "data_aug.py did not finish" in caplog.text and f"python data_aug.py --dataset {dataset}" in caplog.text


def test_clean_after_an_unfinished_augmentation_gives_an_accepted_dataset(small, tmp_path, monkeypatch,
                                                                          no_tensorflow):
    from efr.data.augmented import clean_augmented

    dataset = tmp_path / "Dataset"
    shutil.copytree(small, dataset)
    _interrupted_augmentation(dataset, monkeypatch)
    clean_augmented(dataset)
    assert not (dataset / "augment.json").exists() and not list(dataset.rglob("*__aug-*"))
    with pytest.raises(Started):
        efe_cnn.main(["--dataset", str(dataset), "--runs-dir", str(tmp_path / "runs"), "--batch-size", "8"])
