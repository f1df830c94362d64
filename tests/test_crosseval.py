"""efr evaluate: a model scored on a labelled folder it never saw, with class mismatch and missing faces.

The models here are built by hand so that their answers are known exactly: a global
average pool and a dense layer with zero weights answer one fixed class for every face.
"""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from efr.commands.cli import run
from efr.commands import evaluate as evaluate_cmd
from efr.io.emotions import EMOTIONS
from efr.io.imageio import write_image
from efr.evaluate.stats import wilson_interval
from efr.data.synthetic.render import generate_rafd_like

SMALL = (170, 256)
SET_EMOTIONS = [e for e in EMOTIONS if e != "Contemptuous"]  # a 7-class set


def constant_model(path, answer, size=32, class_names=EMOTIONS):
    """An EFR model file that answers ``answer`` for every input (softmax of a fixed bias)."""
    import keras

    from efr.models.modelio import save_model

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant(
                                     [3.0 if c == answer else 0.0 for c in class_names]))(pooled)
    save_model(keras.Model(inputs, outputs), path, {"class_names": list(class_names), "image_size": [size, size],
                                                    "model": "constant", "dataset": "none"})
    return path


def tree_hashes(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """2 synthetic people (seed 7, not the training seed) x 7 emotions, a photo with no face, a broken file."""
    root = tmp_path_factory.mktemp("set") / "other-set"
    generate_rafd_like(root, subjects=2, emotions=SET_EMOTIONS, seed=7, size=SMALL)
    write_image(root / "Rafd090_03_Caucasian_female_happy_frontal.jpg", np.full((256, 170, 3), 128, np.uint8))
    (root / "Rafd090_04_Caucasian_female_sad_frontal.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {answer: constant_model(folder / f"{answer}.keras", answer) for answer in ("Contemptuous", "Happy")}


def evaluate(model, data, out, *extra):
    return run(evaluate_cmd.main, ["--model", str(model), "--data", str(data), "--out", str(out), "--quiet",
                                   *map(str, extra)])


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_an_eight_class_model_on_a_seven_class_set(photos, models, tmp_path, capsys):
    before = tree_hashes(photos)
    assert evaluate(models["Contemptuous"], photos, tmp_path / "e") == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["set_classes"] == SET_EMOTIONS and metrics["classes_not_in_set"] == ["Contemptuous"]
    faces = metrics["photos"]["scored_faces"]
    assert faces >= 12  # the synthetic faces are found (2 people x 7 emotions; Haar may miss one or two)
    # Every answer is the class the set does not have: all counted, all wrong.
    assert metrics["answers_outside_set"] == {"count": faces, "fraction": 1.0, "by_class": {"Contemptuous": faces}}
    assert metrics["accuracy_faces"] == 0.0 and metrics["chance_accuracy"] == pytest.approx(1 / 7)
    text = (tmp_path / "e" / "report.html").read_text()
    assert "The set has no Contemptuous photos" in text and "answers with a class the set lacks" in text
    printed = capsys.readouterr().out
    assert "answers with a class the set lacks (Contemptuous)" in printed and "report:" in printed
    assert tree_hashes(photos) == before  # the evaluated folder is only read


def test_no_face_and_unreadable_photos_are_counted_not_dropped(photos, models, tmp_path):
    assert evaluate(models["Happy"], photos, tmp_path / "e") == 0
    out = tmp_path / "e"
    metrics = json.loads((out / "metrics.json").read_text())
    rows = read_rows(out / "predictions.csv")
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("scored", "no_face", "unreadable")}
    assert [r["path"] for r in by_status["no_face"]] == ["Rafd090_03_Caucasian_female_happy_frontal.jpg"]
    assert [r["path"] for r in by_status["unreadable"]] == ["Rafd090_04_Caucasian_female_sad_frontal.jpg"]
    scored = by_status["scored"]
    happy = sum(r["true"] == "Happy" for r in scored)
    assert happy >= 1 and all(r["predicted"] == "Happy" for r in scored)
    assert metrics["photos"] == {"labelled": len(rows), "scored_faces": len(scored), "no_face": 1, "unreadable": 1,
                                 "class_not_in_model": 0}
    assert metrics["accuracy_faces"] == pytest.approx(happy / len(scored))
    assert metrics["accuracy_all_photos"] == pytest.approx(happy / (len(scored) + 1))  # the no-face photo counts
    assert metrics["accuracy_faces_ci95"] == pytest.approx(list(wilson_interval(happy, len(scored))))
    # Two people: too few to resample, so no subject bootstrap (and a flag)
    assert metrics["test_subject_count"] == 2 and metrics["accuracy_faces_ci95_subject_bootstrap"] is None
    assert metrics["answers_outside_set"]["count"] == 0
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "confusion_matrix.csv",
                 "classification_report.txt", "args.json", "report.html"):
        assert (out / name).is_file(), name
    text = (out / "report.html").read_text()
    assert "No face was found in 1 photo" in text and "Rafd090_03_Caucasian_female_happy_frontal.jpg" in text
    assert "Synthetic data" in text and "only 2 subject" in text  # flags
    assert "subject 01" in text or "subject 02" in text  # gallery captions name the subject
    assert '<a href="predictions.csv">' in text and '<a href="metrics.json">' in text


def test_folders_layout_with_aliases_and_faces_only(models, tmp_path):
    data = tmp_path / "crops"
    for folder, value in (("happiness", 90), ("anger", 30), ("Sad", 60)):
        for index in range(2):
            write_image(data / folder / f"S{index}_{folder}.png", np.full((32, 32, 3), value + index, np.uint8))
    assert evaluate(models["Happy"], data, tmp_path / "e", "--faces-only", "--subject-regex", r"^(S\d)_") == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["set_classes"] == ["Angry", "Happy", "Sad"] and metrics["photos"]["scored_faces"] == 6
    assert metrics["accuracy_faces"] == pytest.approx(2 / 6) and metrics["test_subject_count"] == 2
    assert metrics["answers_outside_set"]["count"] == 0


def test_bad_requests_are_refused_before_any_work(photos, models, tmp_path, caplog):
    assert evaluate(models["Happy"], tmp_path / "missing", tmp_path / "e") == 2
    assert "no such folder" in caplog.text
    assert evaluate(models["Happy"], photos, photos / "results") == 2
    assert "inside --data" in caplog.text and not (photos / "results").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    assert evaluate(models["Happy"], photos, tmp_path / "busy") == 2
    assert "holds other files" in caplog.text and (tmp_path / "busy" / "mine.txt").read_text() == "keep"
    assert evaluate(tmp_path / "none.keras", photos, tmp_path / "e") == 2
    assert "not found" in caplog.text


@pytest.mark.browser
def test_evaluation_report_renders_in_chromium(photos, models, tmp_path):
    from train_fixtures import chromium, render_check

    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: install the Debian package 'chromium' to run the report rendering test")
    assert evaluate(models["Happy"], photos, tmp_path / "e") == 0
    wrong = sum(r["status"] == "scored" and r["predicted"] != r["true"] for r in read_rows(tmp_path / "e" / "predictions.csv"))
    status, (ok, total) = render_check(tmp_path / "e" / "report.html", browser, tmp_path / "chromium")
    assert status == "pass" and ok == total == 2 + wrong  # two confusion matrices and every misclassified face


def test_rafd_angle_and_gaze_filters_count_what_they_leave_out(models, tmp_path, caplog):
    data = tmp_path / "rafd"
    generate_rafd_like(data, subjects=1, emotions=("Happy", "Sad"), gazes=("frontal", "left"), seed=7, size=SMALL)
    assert evaluate(models["Happy"], data, tmp_path / "e", "--gaze", "frontal") == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["left_out"] == {"unknown_label": 0, "filtered": 2}
    assert metrics["photos"]["labelled"] == 2
    assert "gaze left not kept" in (tmp_path / "e" / "report.html").read_text()
    assert evaluate(models["Happy"], data, tmp_path / "f", "--angle", "270") == 2  # refused before any work
    assert "--angle 270" in caplog.text and not (tmp_path / "f").exists()


def test_subject_norm_refusal_advises_what_evaluate_can_do():
    """Issue 23.15: evaluate has no --subject-norm option, so its refusal does not say "drop --subject-norm"."""
    from types import SimpleNamespace

    from efr.evaluate.crossdataset import _score_grouped
    from efr.io.errors import EFRError
    from efr.models.features import subject_means

    fusion = SimpleNamespace(offsets=lambda v, subjects, where: subject_means(v, subjects, where=where),
                             probabilities=lambda v, offsets: v)
    grouped = [(SimpleNamespace(subject="A"), np.zeros(3), None)]
    with pytest.raises(EFRError) as refused:
        _score_grouped(SimpleNamespace(fusion=fusion), grouped)
    message = str(refused.value)
    assert "drop --subject-norm" not in message and "a model trained without --subject-norm" in message


def test_subject_norm_refusal_advice_is_the_callers():
    """check_groups says what its caller can do; evaluate no longer rewrites training's advice."""
    import inspect

    from efr.evaluate import crossdataset
    from efr.io.errors import EFRError
    from efr.models.features import check_groups

    with pytest.raises(EFRError, match=r"leave them out, or drop --subject-norm$"):
        check_groups({"A": [0]})
    with pytest.raises(EFRError, match=r"leave them out, or do something else$"):
        check_groups({"A": [0]}, advice="or do something else")
    assert ".replace(" not in inspect.getsource(crossdataset._score_grouped)


def test_evaluating_on_the_training_photos_is_said_and_marked(tmp_path):
    """Issue 23.4: a JAFFE model evaluated on JAFFE reported 0.981 with no word that it had seen those photos."""
    from efr.evaluate.crossdataset import Photo, overlap_line, training_overlap
    from efr.io.manifest import read_manifest
    from train_fixtures import make_tiny_dataset

    dataset = make_tiny_dataset(tmp_path, subjects=5, size=16, gazes=("frontal",), emotions=("Happy", "Sad"))
    rows = read_manifest(dataset)
    trained = next(r for r in rows if r["split"] == "Train")
    held_out = next(r for r in rows if r["split"] == "Test")
    photos = [Photo(dataset / r["output"], r["output"], r["emotion"], r["subject"]) for r in (trained, held_out)]
    meta = {"dataset": str(dataset), "crop": {"src": str(tmp_path / "photos")}}
    overlap = training_overlap(meta, photos)
    assert overlap["files"] == 1 and overlap["subjects"] == [trained["subject"]]
    assert "NOT A HELD-OUT SCORE" in overlap_line(overlap) and trained["output"] in overlap_line(overlap)
    assert overlap_line(training_overlap(meta, photos[1:])) is None  # the Test split: held out
    assert overlap_line(training_overlap({"dataset": str(tmp_path / "gone")}, photos)) is None

    metrics = {"photos": {"scored_faces": 2, "no_face": 0}, "accuracy_faces": 0.981, "accuracy_faces_ci95": [0.9, 1.0],
               "chance_accuracy": 0.5, "accuracy_all_photos": 0.981, "accuracy_all_photos_ci95": [0.9, 1.0],
               "classes_not_in_set": [], "training_overlap": overlap}
    printed = evaluate_cmd.result_lines(metrics, tmp_path)
    assert printed[0].startswith("NOT A HELD-OUT SCORE")
