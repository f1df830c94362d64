"""efr pipeline end to end on synthetic photos: interrupted, resumed, run again (nothing redone), changed.

Then `efr evaluate` of the trained model on synthetic photos of another seed.
"""

import json
from pathlib import Path

import pytest

from efr.commands import main as efr
from efr.train import score as train_score
from efr.data.synthetic.render import generate_rafd_like

SETTINGS = ["--img-size", 32, "--epochs", 2, "--batch-size", 8, "--copies", 1, "--workers", 1, "--seed", 3]


def pipeline(src, project, *extra):
    return efr(["pipeline", "--src", str(src), "--out", str(project), *map(str, SETTINGS), *map(str, extra)])


def file_times(folder):
    """{path: mtime} of every image in a folder tree (a file written again gets a new time)."""
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*.png")}


@pytest.mark.slow
def test_pipeline_resumes_skips_what_is_done_and_redoes_what_changed(tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    generate_rafd_like(photos, subjects=6, seed=0, size=(170, 256))
    project = tmp_path / "P"

    # 1. Interrupted during training (Ctrl-C): crop and augment are done, the run folder is incomplete.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_score, "fit_model", interrupted)
    assert pipeline(photos, project) == 130
    monkeypatch.undo()
    assert (project / "Dataset" / "manifest.csv").is_file()
    [unfinished] = (project / "runs").iterdir()
    assert (unfinished / "args.json").is_file() and not (unfinished / "metrics.json").exists()
    crops = file_times(project / "Dataset")
    assert len(crops) == 48 + 40  # 48 faces; one copy of each of the 40 Train/Valid faces
    capsys.readouterr()

    # 2. The same command again: crop and augment reuse everything, training runs again in the same folder.
    assert pipeline(photos, project) == 0
    printed = capsys.readouterr().out
    assert "crop: already complete" in printed and "augment: already complete" in printed
    assert f"train: {unfinished} did not finish: resuming it" in printed
    assert file_times(project / "Dataset") == crops
    assert list((project / "runs").iterdir()) == [unfinished]
    run_dir = unfinished
    last = printed.rstrip().splitlines()
    assert last[-1] == f"report: {run_dir / 'report.html'}" and last[-3] == f"model: {run_dir / 'best.keras'}"
    assert last[-2].startswith("test accuracy") and "[" in last[-2]  # with its 95 % interval
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["accuracy_ci95"]) == 2 and metrics["test_subject_count"] == 1
    assert "Synthetic data" in (run_dir / "report.html").read_text()
    args = json.loads((run_dir / "args.json").read_text())
    assert args["settings"]["seed"] == 3 and args["settings"]["image_size"] == 32  # options reached train
    manifest = (project / "Dataset" / "manifest.csv").read_bytes()

    # 3. Again: nothing redone.
    assert pipeline(photos, project) == 0
    printed = capsys.readouterr().out
    assert "train: already complete with the same settings" in printed
    assert file_times(project / "Dataset") == crops
    assert list((project / "runs").iterdir()) == [run_dir]
    assert (project / "Dataset" / "manifest.csv").read_bytes() == manifest

    # 4. A training setting changed: crops and copies are kept, the model is trained again.
    assert pipeline(photos, project, "--epochs", 1) == 0
    assert "crop: already complete" in capsys.readouterr().out
    assert file_times(project / "Dataset") == crops and len(list((project / "runs").iterdir())) == 2

    # 5. Another augmentation recipe: the old copies go, the crops stay, the model is trained again.
    assert pipeline(photos, project, "--epochs", 1, "--recipe", "original") == 0
    assert "augment: removed 40 augmented file(s) (made with other settings)" in capsys.readouterr().out
    now = file_times(project / "Dataset")
    originals = {p: t for p, t in crops.items() if "__aug-" not in p.name}
    assert {p: t for p, t in now.items() if "__aug-" not in p.name} == originals
    assert sum("__aug-original-" in p.name for p in now) == 40 * 12 and len(list((project / "runs").iterdir())) == 3

    # 6. Cross-dataset: the trained model on synthetic people of another seed, 7 classes.
    other = tmp_path / "other"
    generate_rafd_like(other, subjects=2, emotions=("Angry", "Disgusted", "Fearful", "Happy", "Neutral", "Sad",
                                                    "Surprised"), seed=11, size=(170, 256))
    assert efr(["evaluate", "--model", str(run_dir / "best.keras"), "--data", str(other), "--quiet"]) == 0
    out = run_dir / "eval-other"
    evaluation = json.loads((out / "metrics.json").read_text())
    assert evaluation["classes_not_in_set"] == ["Contemptuous"] and (out / "report.html").is_file()


@pytest.mark.slow
def test_pipeline_crops_again_when_crop_settings_change_and_cross_validates(tmp_path, capsys):
    photos = tmp_path / "photos"
    generate_rafd_like(photos, subjects=5, seed=0, size=(170, 256))
    project = tmp_path / "P"
    # The project's Dataset as crop made it with its defaults (and an augmentation that --no-augment removes)
    assert efr(["crop", "--src", str(photos), "--dst", str(project / "Dataset"), "--size", "32", "--quiet"]) == 0
    assert efr(["augment", "--dataset", str(project / "Dataset"), "--copies", "1", "--quiet"]) == 0
    capsys.readouterr()
    # Other crop settings (a margin, and folds dealt for CV): cropped again, then 2-fold cross-validation.
    assert pipeline(photos, project, "--no-augment", "--epochs", 1, "--margin", 0.1, "--folds", 2) == 0
    printed = capsys.readouterr().out
    assert "made with other settings: cropped again" in printed
    assert not list((project / "Dataset").rglob("*__aug-*"))  # --no-augment
    settings = json.loads((project / "Dataset" / "crop_settings.json").read_text())["settings"]
    assert settings["margin"] == 0.1 and settings["size"] == 32 and settings["folds"] == 2  # --img-size: crop size
    cv_line = printed.rstrip().splitlines()[-2]
    assert cv_line.startswith("2-fold CV accuracy") and "±" in cv_line and "[" in cv_line
    run_dir = Path(printed.rstrip().splitlines()[-1].removeprefix("report: ")).parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["folds"] == 2 and metrics["accuracy_ci95_subject_bootstrap"] and metrics["test_subject_count"] == 5
    # The fold models are not kept: a model trained on the split is, for predict and evaluate.
    model = Path(printed.rstrip().splitlines()[-3].removeprefix("model: "))
    assert model.is_file() and model.parent != run_dir and model.parent.parent == run_dir.parent
    assert "folds" not in json.loads((model.parent / "metrics.json").read_text())


def test_pipeline_checks_settings_before_any_work(tmp_path, caplog):
    photos = tmp_path / "photos"
    photos.mkdir()
    assert efr(["pipeline", "--src", str(photos), "--out", str(tmp_path / "P"), "--gaze", "sideways"]) == 2
    assert "--gaze sideways" in caplog.text
    assert efr(["pipeline", "--src", str(photos), "--out", str(tmp_path / "P"), "--epochs", "0"]) == 2
    assert "--epochs 0" in caplog.text and not (tmp_path / "P").exists()


def test_pipeline_says_transductive_beside_the_plain_number(monkeypatch, tmp_path, capsys):
    """A --subject-norm result is never printed alone: the inductive number and the word TRANSDUCTIVE follow."""
    from types import SimpleNamespace

    from efr.commands import pipeline as cmd

    metrics = {"folds": 5, "accuracy_mean": 0.87, "accuracy_std": 0.05, "macro_f1_mean": 0.86, "macro_f1_std": 0.05,
               "chance_accuracy": 0.143, "test_accuracy": 0.87, "plain_accuracy_mean": 0.69,
               "plain_accuracy_std": 0.08}
    monkeypatch.setattr(cmd, "plan", lambda args: (SimpleNamespace(dst="D"), None, SimpleNamespace(folds=5)))
    monkeypatch.setattr(cmd, "run_crop", lambda a: None)
    monkeypatch.setattr(cmd, "run_augment", lambda a, enabled: None)
    monkeypatch.setattr(cmd, "final_model_args", lambda a: a)
    monkeypatch.setattr(cmd, "run_train", lambda project, a, args: (tmp_path / "run", metrics))
    cmd.run_args(SimpleNamespace(out=str(tmp_path), src="photos", quiet=True, verbose=False, no_augment=False))
    out = capsys.readouterr().out
    assert "0.870 ± 0.050" in out and "0.690 ± 0.080" in out and "TRANSDUCTIVE" in out


def test_pipeline_data_digest_changes_with_crop_settings_and_content_not_row_order(tmp_path):
    """Issue 23.1: --align or --size crops the same photos into the same manifest rows; the run must still differ."""
    import cv2

    from efr.commands.pipeline import dataset_digest
    from efr.crop.destination import SETTINGS_NAME
    from efr.io.manifest import read_manifest, write_manifest
    from train_fixtures import make_tiny_dataset

    dataset = make_tiny_dataset(tmp_path, subjects=3, size=16, gazes=("frontal",), emotions=("Happy", "Sad"))
    (dataset / SETTINGS_NAME).write_text(json.dumps({"settings": {"size": 16, "align": "none"}}))
    first = dataset_digest(dataset)
    rows = read_manifest(dataset)
    write_manifest(dataset, rows[::-1])
    assert dataset_digest(dataset) == first  # the order rows were saved in does not count
    (dataset / SETTINGS_NAME).write_text(json.dumps({"settings": {"size": 16, "align": "eyes"}}))
    aligned = dataset_digest(dataset)
    assert aligned != first  # same rows, other crop settings
    face = dataset / rows[0]["output"]
    cv2.imwrite(str(face), 255 - cv2.imread(str(face)))
    assert dataset_digest(dataset) not in (first, aligned)  # same rows and settings, other pixels


def test_pipeline_fusion_fingerprint_ignores_the_settings_fusion_does_not_use():
    """Issue 23.2: --epochs, --lr, --patience, --batch-size do not retrain fusion (nor make a duplicate folder)."""
    from efr.commands import train
    from efr.commands.pipeline import train_fingerprint

    def fingerprint(*argv):
        return train_fingerprint(train.build_parser(prog="efr train").parse_args(["--dataset", "D", *argv]))

    fusion = fingerprint("--model", "fusion")
    assert fingerprint("--model", "fusion", "--epochs", "7", "--lr", "0.1", "--patience", "9",
                       "--batch-size", "3") == fusion
    assert fingerprint("--model", "fusion", "--fusion-parts", "trunk") != fusion
    assert fingerprint("--model", "seed", "--epochs", "7") != fingerprint("--model", "seed")


def test_pipeline_help_names_each_stage_of_a_shared_option_once(capsys):
    """Issue 23.16: --seed's help read "crop: crop: ..."."""
    with pytest.raises(SystemExit):
        efr(["pipeline", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "crop: crop:" not in shown and "(crop, augment, train)" in shown
    assert "crop: threads" in shown and "augment: parallel workers" in shown  # different texts: each stage's


@pytest.mark.parametrize("extra, message", [
    (["--model", "fusion", "--fusion-parts", "nope"], "--fusion-parts nope"),
    (["--model", "fusion", "--backbone", "nope"], "--backbone nope"),
    (["--model", "fusion", "--weights", "/missing.h5"], "--weights /missing.h5: no such file"),
    (["--folds", "5"], "give --subject-regex"),
])
def test_pipeline_refuses_train_settings_before_crop_runs(tmp_path, caplog, extra, message):
    """Issue 23.10: these were refused by train, after crop and augment had run."""
    photos = tmp_path / "jaffe"
    for emotion in ("Happy", "Sad"):
        (photos / emotion).mkdir(parents=True)
        (photos / emotion / f"KA.{emotion[:2].upper()}1.1.png").write_bytes(b"")  # never read: refused first
    assert efr(["pipeline", "--src", str(photos), "--out", str(tmp_path / "P"), *extra]) == 2
    assert message in caplog.text and not (tmp_path / "P").exists()


@pytest.mark.parametrize("quiet", [True, False])
def test_pipeline_quiet_prints_the_result_not_the_stage_tables(monkeypatch, tmp_path, capsys, quiet):
    """Issue 23.16: pipeline --quiet printed every stage's table."""
    from types import SimpleNamespace

    from efr.commands import pipeline as cmd

    metrics = {"test_accuracy": 0.5, "chance_accuracy": 0.125, "macro_f1": 0.4, "accuracy_ci95": [0.4, 0.6]}
    monkeypatch.setattr(cmd, "plan", lambda args: (SimpleNamespace(dst="D"), None, SimpleNamespace(folds=0)))
    monkeypatch.setattr(cmd, "run_crop", lambda a: print("| crop table |"))
    monkeypatch.setattr(cmd, "run_augment", lambda a, enabled: print("| augment table |"))
    monkeypatch.setattr(cmd, "run_train", lambda project, a, args: (tmp_path / "run", metrics))
    cmd.run_args(SimpleNamespace(out=str(tmp_path), src="photos", quiet=quiet, verbose=False, no_augment=False))
    out = capsys.readouterr().out
    assert ("crop table" in out) is (not quiet) and ("=== [1/3]" in out) is (not quiet)
    assert "=== done ===" in out and "report:" in out and "0.500" in out
