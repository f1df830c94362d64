"""efr.models.modelio: a saved model comes back with the same predictions and metadata; saving is atomic."""

import json
import zipfile

import numpy as np
import pytest

from efr.io.emotions import EMOTIONS
from efr.io.errors import EFRError
from efr.models.modelio import META_ENTRY, load_model, read_meta, save_model
from predict_fixtures import tiny_model


def sample_batch(size=32, n=4):
    return np.random.default_rng(1).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_roundtrip_keeps_predictions_and_meta(tmp_path):
    model = tiny_model(32)
    path = tmp_path / "runs" / "m" / "best.keras"
    meta = {"class_names": list(EMOTIONS), "epoch": 3, "crop": {"margin": 0.1, "size": 64}}
    save_model(model, path, meta)
    loaded, loaded_meta = load_model(path)
    assert loaded_meta == dict(meta, image_size=[32, 32])
    assert read_meta(path) == loaded_meta
    batch = sample_batch()
    np.testing.assert_allclose(loaded.predict_on_batch(batch), model.predict_on_batch(batch), atol=1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["best.keras"]  # no temporary file left
    with zipfile.ZipFile(path) as archive:  # still a plain .keras archive with one extra entry
        assert META_ENTRY in archive.namelist() and "config.json" in archive.namelist()


def test_saving_over_an_existing_model_replaces_it(tmp_path):
    path = tmp_path / "best.keras"
    save_model(tiny_model(32), path, {"class_names": ["a"] * 8, "epoch": 1})
    save_model(tiny_model(32, seed=5), path, {"class_names": list(EMOTIONS), "epoch": 2})
    assert read_meta(path)["epoch"] == 2


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_model(tmp_path, monkeypatch):
    path = tmp_path / "best.keras"
    model = tiny_model(32)
    save_model(model, path, {"class_names": list(EMOTIONS), "epoch": 1})
    old = path.read_bytes()

    def broken_save(target, *args, **kwargs):
        with open(target, "wb") as handle:  # half a file, then the disk "fills up"
            handle.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError):
        save_model(model, path, {"class_names": list(EMOTIONS), "epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]
    assert path.read_bytes() == old

    fresh = tmp_path / "new" / "model.keras"
    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError):
        save_model(model, fresh, {"class_names": list(EMOTIONS)})
    assert list(fresh.parent.iterdir()) == []


def test_meta_needs_class_names(tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        save_model(tiny_model(32), tmp_path / "m.keras", {"image_size": [32, 32]})
    assert not list(tmp_path.iterdir())


def test_read_meta_errors(tmp_path):
    with pytest.raises(EFRError, match="not found"):
        read_meta(tmp_path / "missing.keras")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(EFRError, match="not a .keras model file"):
        read_meta(corrupt)
    plain = tmp_path / "plain.keras"
    tiny_model(32).save(plain)
    with pytest.raises(EFRError, match="no EFR metadata"):
        load_model(plain)


def test_damaged_archive_with_meta_is_a_clear_error(tmp_path):
    path = tmp_path / "damaged.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(META_ENTRY, json.dumps({"class_names": list(EMOTIONS), "image_size": [32, 32]}))
        archive.writestr("config.json", "{not json")
    with pytest.raises(EFRError, match="Keras could not load"):
        load_model(path)


def test_safe_mode_refuses_python_code_in_the_file(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0)])
    path = tmp_path / "lambda.keras"
    save_model(model, path, {"class_names": ["a", "b", "c", "d"]})
    with pytest.raises(EFRError, match="arbitrary code execution"):
        load_model(path)
