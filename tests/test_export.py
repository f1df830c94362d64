"""efr export: tflite, SavedModel and ONNX files equal to Keras on a probe batch, their JSON, and refusals."""

import json
import zipfile

import numpy as np
import pytest

from efr.commands import main as efr_main
from efr.io.emotions import EMOTIONS
from efr.models.export import export_model
from predict_fixtures import save_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("export") / "best.keras", image_size=32)


def keras_outputs(model_path, batch):
    from efr.models.modelio import load_model

    return np.asarray(load_model(model_path)[0].predict_on_batch(batch))


@pytest.mark.parametrize("fmt", ["tflite", "savedmodel", "onnx"])
def test_export_writes_a_file_equal_to_keras_and_its_json(model_path, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    out = tmp_path / {"tflite": "m.tflite", "savedmodel": "m_saved", "onnx": "m.onnx"}[fmt]
    done = export_model(model_path, fmt, out=out)
    assert done.path == out and out.exists() and done.gap <= 1e-4
    info = json.loads((tmp_path / (out.name + ".json")).read_text())
    assert info["classes"] == list(EMOTIONS) and info["format"] == fmt
    assert info["input"]["shape"] == [None, 32, 32, 3] and info["input"]["range"] == [0, 255]
    batch = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    if fmt == "tflite":  # the file itself, reloaded, gives Keras' outputs on other images too
        from efr.models.litert import LiteClassifier

        got = LiteClassifier(out.read_bytes(), threads=1)(batch)
    elif fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(out))  # kept: the function needs its object's variables alive
        got = loaded.serve(tf.constant(batch)).numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: batch})[0]
    np.testing.assert_allclose(got, keras_outputs(model_path, batch), atol=1e-4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".efr-export-")]  # no leftovers


def fusion_file(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("efr.json", json.dumps({"model": "fusion", "class_names": list(EMOTIONS), "image_size": 48}))
    return path


def test_export_refuses_in_one_line(model_path, tmp_path, caplog):
    taken = tmp_path / "taken.tflite"
    taken.write_bytes(b"keep me")
    cases = [
        (["--model", str(fusion_file(tmp_path / "fusion.keras")), "--format", "tflite",
          "--out", str(tmp_path / "f.tflite")], "fusion model"),
        (["--model", str(model_path), "--format", "tflite", "--out", str(taken)], "--overwrite"),
        (["--model", str(model_path), "--format", "savedmodel", "--out", str(tmp_path / "no" / "x")],
         "does not exist"),
        (["--model", str(tmp_path / "missing.keras"), "--format", "tflite"], "not found"),
    ]
    for argv, says in cases:
        caplog.clear()
        assert efr_main(["export", *argv]) == 2
        errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]
        assert len(errors) == 1 and says in errors[0], (argv, errors)
    assert taken.read_bytes() == b"keep me"
    assert not (tmp_path / "f.tflite").exists()


def test_export_command_overwrites_when_asked(model_path, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"old")
    assert efr_main(["export", "--model", str(model_path), "--format", "tflite", "--out", str(out),
                     "--overwrite"]) == 0
    assert out.read_bytes()[4:8] == b"TFL3"
    assert "classes and preprocessing" in capsys.readouterr().out
