"""efr.models.litert: plain classifiers run in LiteRT with Keras' outputs, cached, with a Keras fallback."""

import numpy as np
import pytest

from efr.models import litert
from efr.predict import run as efr_predict
from efr.io.errors import EFRError
from efr.io.emotions import EMOTIONS
from predict_fixtures import save_tiny_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("EFR_CACHE_DIR", str(folder))
    return folder / "litert"


def _faces(count, size=32, seed=1):
    return list(np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8))


def test_litert_gives_keras_outputs_and_is_cached(tmp_path, cache, monkeypatch):
    model_path = save_tiny_model(tmp_path / "m.keras")
    keras_run = efr_predict.load_predictor(model_path, faces_only=True, runtime="keras")
    lite_run = efr_predict.load_predictor(model_path, faces_only=True, runtime="litert")
    assert (keras_run.runtime, lite_run.runtime) == ("keras", "litert")
    faces = _faces(70)  # 32 + 32 + 6: the interpreter is resized for the last, shorter batch
    np.testing.assert_allclose(lite_run.classify(faces), keras_run.classify(faces), atol=1e-5)
    assert len(list(cache.glob("*.tflite"))) == 1

    # A second load reads the cache: it must not convert again.
    def no_conversion(model):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(litert, "convert", no_conversion)
    again = efr_predict.load_predictor(model_path, faces_only=True, runtime="litert")
    np.testing.assert_allclose(again.classify(faces[:3]), keras_run.classify(faces[:3]), atol=1e-5)


def test_a_changed_model_file_is_converted_again(tmp_path, cache):
    from efr.models.modelio import save_model

    model_path = save_tiny_model(tmp_path / "m.keras")
    model = efr_predict.load_predictor(model_path, runtime="litert").model
    model.layers[-1].set_weights([w + 0.5 for w in model.layers[-1].get_weights()])
    save_model(model, model_path, {"class_names": list(EMOTIONS)})
    changed = efr_predict.load_predictor(model_path, faces_only=True, runtime="litert")
    assert len(list(cache.glob("*.tflite"))) == 2
    faces = _faces(4)
    expected = np.asarray(model.predict_on_batch(np.stack(faces).astype("float32")))
    np.testing.assert_allclose(changed.classify(faces), expected, atol=1e-5)


def test_auto_stays_on_keras_when_conversion_fails_and_litert_says_why(tmp_path, cache, monkeypatch):
    model_path = save_tiny_model(tmp_path / "m.keras")

    def broken(model):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(litert, "convert", broken)
    assert efr_predict.load_predictor(model_path, runtime="auto").runtime == "keras"
    with pytest.raises(EFRError, match="converter exploded.*--runtime keras"):
        efr_predict.load_predictor(model_path, runtime="litert")


def test_auto_stays_on_keras_when_litert_outputs_differ(tmp_path, cache, monkeypatch):
    model_path = save_tiny_model(tmp_path / "m.keras")
    real_call = litert.LiteClassifier.__call__
    monkeypatch.setattr(litert.LiteClassifier, "__call__", lambda self, batch: real_call(self, batch) + 0.01)
    assert efr_predict.load_predictor(model_path, runtime="auto").runtime == "keras"
    with pytest.raises(EFRError, match="differ from Keras"):
        efr_predict.load_predictor(model_path, runtime="litert")


def test_predict_reuses_a_loaded_predictor_with_the_same_rows(tmp_path, cache):
    from efr.io.imageio import write_image

    model_path = save_tiny_model(tmp_path / "m.keras")
    folder = tmp_path / "faces"
    for i, face in enumerate(_faces(5)):
        write_image(folder / f"f{i}.png", face)
    by_path = efr_predict.predict(model_path, [folder], faces_only=True, progress=False, runtime="keras")
    predictor = efr_predict.load_predictor(model_path, faces_only=True)
    assert predictor.runtime == "litert"
    for _ in range(2):  # the same Predictor serves several calls
        reused = efr_predict.predict(predictor, [folder], faces_only=True, progress=False)
        assert [r.label for r in reused.rows] == [r.label for r in by_path.rows]
        assert [r.confidence for r in reused.rows] == pytest.approx([r.confidence for r in by_path.rows], abs=1e-5)
    with pytest.raises(EFRError, match="faces_only differs"):
        efr_predict.predict(predictor, [folder], faces_only=False, progress=False)


def test_bad_runtime_is_refused_before_loading(tmp_path):
    with pytest.raises(EFRError, match="--runtime fast: expected one of auto, litert, keras"):
        efr_predict.predict(tmp_path / "missing.keras", [tmp_path], runtime="fast")


def test_auto_converts_only_for_jobs_that_repay_it(tmp_path, cache, monkeypatch):
    from efr.io.imageio import write_image

    model_path = save_tiny_model(tmp_path / "m.keras")
    folder = tmp_path / "faces"
    for i, face in enumerate(_faces(3)):
        write_image(folder / f"f{i}.png", face)
    runtimes = []
    real_load = efr_predict.load_predictor

    def spy(*args, **kwargs):
        predictor = real_load(*args, **kwargs)
        runtimes.append(predictor.runtime)
        return predictor

    monkeypatch.setattr(efr_predict, "load_predictor", spy)
    efr_predict.predict(model_path, [folder], faces_only=True, progress=False)  # 3 photos: not worth it
    assert runtimes == ["keras"] and not list(cache.glob("*.tflite"))
    monkeypatch.setattr(litert, "AUTO_MIN_PHOTOS", 3)  # now the job is "long enough"
    efr_predict.predict(model_path, [folder], faces_only=True, progress=False)
    monkeypatch.setattr(litert, "AUTO_MIN_PHOTOS", 1000)
    efr_predict.predict(model_path, [folder], faces_only=True, progress=False)  # short, but converted already
    assert runtimes == ["keras", "litert", "litert"]
    assert litert.worth_converting(model_path, photos=0, streams=1)  # any video or camera


def test_litert_workers_classify_their_own_runs_and_give_the_rows_of_one_thread(tmp_path, cache):
    from efr.io.imageio import write_image

    model_path = save_tiny_model(tmp_path / "m.keras")
    folder = tmp_path / "faces"
    for i, face in enumerate(_faces(11, seed=4)):
        write_image(folder / f"f{i:02d}.png", face)
    (folder / "f05b.png").write_text("not a picture")  # skipped, in its place in the order

    class Spy:  # the Predictor's own (multi-threaded) interpreter, watched
        def __init__(self, lite):
            self.lite, self.calls, self.copies = lite, 0, 0

        def __call__(self, batch):
            self.calls += 1
            return self.lite(batch)

        def single_threaded(self):
            self.copies += 1
            return self.lite.single_threaded()

    results = {}
    for workers in (1, 2):
        predictor = efr_predict.load_predictor(model_path, faces_only=True, runtime="litert")
        predictor.lite = spy = Spy(predictor.lite)
        results[workers] = efr_predict.predict(predictor, [folder], faces_only=True, progress=False,
                                               workers=workers, out_dir=tmp_path / f"out{workers}")
        if workers == 1:  # one thread reads and classifies on the shared interpreter
            assert spy.calls > 0 and spy.copies == 0
        else:  # 12 photos in 6 runs of 2: each worker on its own single-threaded interpreter
            assert spy.calls == 0 and 1 <= spy.copies <= 2
            assert predictor._spare_lites.qsize() == spy.copies  # kept for the next call
    one, two = results[1], results[2]
    assert [r.source for r in two.rows] == [r.source for r in one.rows] and len(two.rows) == 11
    assert [r.label for r in two.rows] == [r.label for r in one.rows]
    assert [r.confidence for r in two.rows] == pytest.approx([r.confidence for r in one.rows], abs=1e-5)
    assert [s for s, _ in two.skipped] == [s for s, _ in one.skipped] == [str(folder / "f05b.png")]
    assert [p.relative_to(tmp_path / "out2") for p in two.outputs] == \
        [p.relative_to(tmp_path / "out1") for p in one.outputs]
    assert all(p.is_file() for p in two.outputs) and sum(p.suffix == ".png" for p in two.outputs) == 11
