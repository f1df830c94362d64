"""--model fusion (frozen trunk + HOG + landmarks, softmax head) and --subject-norm."""

import csv
import json

import numpy as np
import pytest

from efr.models import features, fusion, fusion_head, transfer
from efr.io.errors import EFRError
from efr.predict.run import predict
from efr.train.settings import TrainSettings
from efr.train.run import run_training

from train_fixtures import make_tiny_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fer_like_file(tmp_path_factory):
    """A random mini-Xception of the published FER2013 shape (the real file is never needed by a test)."""
    import keras

    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("fer") / "mini_xception_random.hdf5"
    transfer.mini_xception((64, 64, 1), 7, seed=1).save(path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 subjects x 4 emotions x 2 gazes at 64 px: 4 Train, 2 Valid, 2 Test subjects."""
    return make_tiny_dataset(tmp_path_factory.mktemp("fusion"), subjects=8, size=64, gazes=("frontal", "left"),
                             emotions=("Angry", "Happy", "Sad", "Surprised"), fractions=(0.5, 0.25, 0.25), folds=4)


def settings(dataset, runs, **kw):
    """Fusion on the FER2013 mini-Xception trunk (a random stand-in file); efrnet's own tests are below."""
    kw.setdefault("backbone", "fer2013")
    return TrainSettings(dataset=str(dataset), runs_dir=str(runs), model="fusion", seed=0, **kw)


@pytest.fixture(scope="module")
def plain_run(dataset, fer_like_file, tmp_path_factory):
    return run_training(settings(dataset, tmp_path_factory.mktemp("runs"), name="plain", weights=str(fer_like_file)))


@pytest.fixture(scope="module")
def norm_run(dataset, fer_like_file, tmp_path_factory):
    return run_training(settings(dataset, tmp_path_factory.mktemp("runs"), name="norm", weights=str(fer_like_file),
                                 subject_norm=True))


def _predictions(run_dir):
    with open(run_dir / "test_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [k[2:] for k in rows[0] if k.startswith("p_")]
    return {r["path"]: np.array([float(r[f"p_{n}"]) for n in names]) for r in rows}


def test_fusion_learns_held_out_synthetic_people(plain_run):
    metrics = plain_run.metrics
    assert metrics["test_accuracy"] >= 2 * metrics["chance_accuracy"]  # 4 classes: chance 0.25
    for name in ("best.keras", "report.html", "history.csv", "curves.png", "metrics.json", "args.json"):
        assert (plain_run.run_dir / name).is_file(), name
    assert "plain_test_accuracy" not in metrics and "transductive" not in metrics


def test_fusion_head_regularisation_is_chosen_on_valid(plain_run):
    with open(plain_run.run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["C"]) for r in rows] == list(fusion_head.C_GRID)
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert plain_run.metrics["best_epoch"] == rows.index(best) + 1


def test_fusion_head_is_refitted_on_train_and_valid_with_the_chosen_c():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 3
    x_train = np.concatenate([centres[k] + rng.normal(size=(20, 6)) for k in (0, 1)]).astype(np.float32)
    y_train = np.repeat([0, 1], 20)
    x_valid = np.concatenate([centres[k] + rng.normal(size=(10, 6)) for k in (0, 1, 2)]).astype(np.float32)
    y_valid = np.repeat([0, 1, 2], 10)
    only_train = fusion_head.fit_head(x_train, y_train, x_valid, y_valid, 3, refit=False)
    refitted = fusion_head.fit_head(x_train, y_train, x_valid, y_valid, 3)
    assert refitted.C == only_train.C and refitted.path == only_train.path  # C still chosen by Train-only fits
    assert only_train.bias[2] == -30.0 and not only_train.weights[:, 2].any()  # class 2 never seen in Train
    assert refitted.weights[:, 2].any()  # ... but learnt from Valid after the refit
    pooled = np.concatenate([x_train, x_valid])
    np.testing.assert_allclose(refitted.mean, pooled.mean(axis=0), rtol=1e-5, atol=1e-5)
    probs = fusion_head.head_predict(refitted, centres[2][None].astype(np.float32))
    assert probs.argmax() == 2


def test_fusion_model_round_trips_through_predict(plain_run, dataset):
    expected = _predictions(plain_run.run_dir)
    result = predict(plain_run.run_dir / "best.keras", [dataset / "Test"], faces_only=True, progress=False)
    assert len(result.rows) == len(expected)
    for row in result.rows:
        got = np.array([row.probabilities[n] for n in result.class_names])
        np.testing.assert_allclose(got, expected[row.source], atol=1e-4)


def test_fusion_features_are_cached(plain_run, dataset, fer_like_file, monkeypatch):
    built = fusion.build_fusion(4, weights=str(fer_like_file), backbone="fer2013")
    caches = list((dataset / fusion.CACHE_FOLDER).glob("features-*.npz"))
    assert caches, "no feature cache was written"

    def recompute(*args, **kwargs):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(fusion.FusionExtractor, "hand", recompute)
    paths = sorted((dataset / "Train").rglob("*.png"))
    assert fusion.raw_features(built, paths, dataset).shape == (len(paths), built.spec.trunk_dim + 1764 + 936)


def test_subject_norm_reports_both_numbers_and_says_transductive(norm_run):
    metrics = norm_run.metrics
    assert metrics["transductive"] is True
    assert 0.0 <= metrics["plain_test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] >= 2 * metrics["chance_accuracy"]
    html = (norm_run.run_dir / "report.html").read_text()
    assert "TRANSDUCTIVE" in html and f"{metrics['plain_test_accuracy']:.3f}" in html
    meta = json.loads((norm_run.run_dir / "args.json").read_text())["settings"]
    assert meta["subject_norm"] is True


def test_subject_norm_model_predicts_groups_and_refuses_without_them(norm_run, dataset, tmp_path):
    model = norm_run.run_dir / "best.keras"
    with pytest.raises(EFRError, match="trained with --subject-norm"):
        predict(model, [dataset / "Test"], faces_only=True, progress=False)
    result = predict(model, [dataset / "Test"], faces_only=True, progress=False, subject_norm=True)
    expected = _predictions(norm_run.run_dir)  # the run centred each test person on all their photos, as here
    for row in result.rows:
        got = np.array([row.probabilities[n] for n in result.class_names])
        np.testing.assert_allclose(got, expected[row.source], atol=1e-4)
    few = sorted((dataset / "Test").rglob("*.png"))[:2]
    with pytest.raises(EFRError, match="at least 3"):
        predict(model, few, faces_only=True, progress=False, subject_norm=True)
    for photo in few:
        (tmp_path / f"x{photo.name[4:]}").write_bytes(photo.read_bytes())  # not a RaFD name any more
    with pytest.raises(EFRError, match="needs the person in every photo"):
        predict(model, [tmp_path], faces_only=True, progress=False, subject_norm=True)


def test_subject_norm_with_a_plain_model_is_refused(plain_run, dataset):
    with pytest.raises(EFRError, match="not trained with --subject-norm"):
        predict(plain_run.run_dir / "best.keras", [dataset / "Test"], faces_only=True, progress=False,
                subject_norm=True)


def test_centring_needs_subjects_and_groups():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    centred = features.subject_centre(x, ["a", "a", "a", "b", "b", "b"])
    np.testing.assert_allclose(centred[:3].mean(axis=0), 0) and np.testing.assert_allclose(centred[3:].mean(axis=0), 0)
    with pytest.raises(EFRError, match="needs the subject of every photo"):
        features.subject_centre(x, ["a", "a", "a", "", "b", "b"])
    with pytest.raises(EFRError, match=r"b \(2\)"):
        features.subject_centre(x, ["a", "a", "a", "a", "b", "b"])


def test_cross_validation_with_subject_norm_reports_both(dataset, fer_like_file, tmp_path):
    result = run_training(settings(dataset, tmp_path, name="cv", weights=str(fer_like_file), folds=4,
                                   subject_norm=True))
    metrics = result.metrics
    assert metrics["folds"] == 4 and len(metrics["per_fold"]) == 4
    assert "plain_accuracy_mean" in metrics and metrics["transductive"] is True
    assert all("plain_accuracy" in row for row in metrics["per_fold"])
    assert "without --subject-norm" in (result.run_dir / "report.html").read_text()


def test_landmarks_are_normalised_for_position_size_and_tilt():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(468, 3)).astype(np.float32) * 10 + 100
    base = features.normalise_landmarks(points)
    theta = np.radians(15)
    turn = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = points.copy()
    moved[:, :2] = (points[:, :2] @ turn.T) * 1.7 + [30, -20]
    np.testing.assert_allclose(features.normalise_landmarks(moved), base, atol=1e-4)


def test_backbone_features_with_stand_in_weights(dataset, tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    donor = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                pooling="avg", include_preprocessing=True)
    path = tmp_path / "mnv3.weights.h5"
    donor.save_weights(path)
    result = run_training(settings(dataset, tmp_path / "runs", name="mnv3", backbone="mobilenetv3small",
                                   weights=str(path), image_size=32, fusion_parts="trunk"))
    meta = json.loads((result.run_dir / "args.json").read_text())
    assert meta["model"]["weights"]["sha256"] == transfer.sha256_of(path)
    out = predict(result.run_dir / "best.keras", [dataset / "Test"], faces_only=True, progress=False)
    assert len(out.rows) == result.metrics["images"]["Test"]


def test_bad_fusion_options_are_user_errors(fer_like_file):
    with pytest.raises(EFRError, match="--fusion-parts"):
        fusion.build_fusion(3, weights=str(fer_like_file), backbone="fer2013", parts=["trunk", "nose"])
    with pytest.raises(EFRError, match="--backbone"):
        fusion.build_fusion(3, weights=str(fer_like_file), backbone="vgg")


def test_flip_tta_is_recorded_and_applied_by_predict(dataset, fer_like_file, tmp_path):
    result = run_training(settings(dataset, tmp_path, name="tta", weights=str(fer_like_file), tta="flip"))
    from efr.models.modelio import read_meta

    assert read_meta(result.run_dir / "best.keras")["tta"] == "flip"
    expected = _predictions(result.run_dir)
    out = predict(result.run_dir / "best.keras", [dataset / "Test"], faces_only=True, progress=False)
    for row in out.rows:
        got = np.array([row.probabilities[n] for n in out.class_names])
        np.testing.assert_allclose(got, expected[row.source], atol=1e-4)


def test_flip_tta_of_a_keras_model_averages_the_mirror_image():
    import keras

    from efr.predict.predictor import Predictor

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    scaled = keras.layers.Rescaling(1 / 255.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(scaled)))
    meta = {"class_names": ["Happy", "Sad"], "image_size": [8, 8]}
    face = np.zeros((8, 8, 3), np.uint8)
    face[:, :4] = 255  # bright left half: the mirror image differs
    plain = Predictor(model, dict(meta), faces_only=True).classify([face])
    mirrored = Predictor(model, dict(meta), faces_only=True).classify([face[:, ::-1].copy()])
    both = Predictor(model, dict(meta, tta="flip"), faces_only=True).classify([face])
    assert not np.allclose(plain, mirrored)
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-6)


def test_subject_norm_on_a_video_centres_each_face_track(norm_run, tmp_path):
    from predict_fixtures import write_video

    from efr.models.features import MIN_GROUP
    from efr.predict.tracks import TOO_FEW_FRAMES

    video = tmp_path / "clip.mp4"
    frames = write_video(video, subject=2, emotions=("Happy", "Sad", "Surprised"), frames_each=2)
    result = predict(norm_run.run_dir / "best.keras", [video], progress=False, subject_norm=True)
    faces = [r for r in result.rows if r.box is not None]
    assert len(faces) == frames  # one face a frame, one track
    assert [r.label for r in faces[: MIN_GROUP - 1]] == [TOO_FEW_FRAMES] * (MIN_GROUP - 1)
    assert all(r.probabilities == {} for r in faces[: MIN_GROUP - 1])
    for row in faces[MIN_GROUP - 1 :]:
        assert row.label in result.class_names
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(EFRError, match="trained with --subject-norm"):
        predict(norm_run.run_dir / "best.keras", [video], progress=False)


def test_face_tracks_follow_overlapping_boxes():
    from efr.predict.tracks import TrackCentring, box_iou

    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    tracks = TrackCentring(predictor=None, min_group=3)
    tracks.tracks = [{"box": (0, 0, 100, 100)}, {"box": (300, 0, 100, 100)}]
    assert tracks._match([(305, 5, 100, 100), (5, 0, 100, 100), (600, 600, 50, 50)]) == [1, 0, None]


def test_cross_dataset_evaluation_of_a_subject_norm_model_centres_each_person(norm_run, dataset, tmp_path):
    from efr.evaluate.crossdataset import EvalSettings, evaluate_folder

    result = evaluate_folder(EvalSettings(model=str(norm_run.run_dir / "best.keras"), data=str(dataset / "Test"),
                                          out=str(tmp_path / "eval"), faces_only=True))
    metrics = result.metrics
    assert metrics["transductive"] is True
    assert metrics["accuracy_faces"] == pytest.approx(norm_run.metrics["test_accuracy"], abs=1e-6)  # same centring
    assert "TRANSDUCTIVE" in (tmp_path / "eval" / "report.html").read_text()


def test_every_parts_subset_without_the_trunk_trains_and_predicts(dataset, tmp_path):
    """Issue 23.7: --fusion-parts hog (or landmarks, hog,landmarks) crashed with AttributeError before the head."""
    for parts in (["landmarks"], ["hog", "landmarks"]):
        built = fusion.build_fusion(4, parts=parts)
        assert built.trunk_model is None and built.model.count_params() == 0
    result = run_training(settings(dataset, tmp_path, name="hog", fusion_parts="hog"))
    assert read_args(result.run_dir)["model"]["parameters"] >= 0
    out = predict(result.run_dir / "best.keras", [dataset / "Test"], faces_only=True, progress=False)
    assert len(out.rows) == result.metrics["images"]["Test"]


def read_args(run_dir):
    return json.loads((run_dir / "args.json").read_text())
