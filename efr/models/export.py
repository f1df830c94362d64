"""A trained EFR model as a deployable file: TensorFlow Lite, a TensorFlow SavedModel or ONNX.

Each export writes the model (``out``) and, beside it, ``<out>.json``: the classes in output
order, the input (NHWC float32 RGB in [0, 255] at the model's size; the model scales inside),
how faces were cropped for it, its test-time augmentation, and how far the export's outputs are
from Keras' on a probe batch.  An export whose outputs differ from Keras' by more than
``TOLERANCE`` is removed and refused, as LiteRT conversions are for prediction
(efr.models.litert).  Fusion models are refused: their hand-made features run in Python,
outside any graph a converter sees.
"""

import contextlib
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from efr.io.errors import EFRError
from efr.io.imageio import write_text_atomic

FORMATS = ("tflite", "savedmodel", "onnx")
SUFFIXES = {"tflite": ".tflite", "savedmodel": "", "onnx": ".onnx"}
TOLERANCE = 1e-4  # largest allowed |export - Keras| on the probe batch (probabilities)
ONNX_OPSET = 17


@dataclass
class Exported:
    path: Path  # the model file (a folder for savedmodel)
    info_path: Path  # the JSON of classes and preprocessing
    gap: float  # largest |export - Keras| on the probe batch


def default_out(model_path, fmt):
    """``<model name>.<format suffix>`` in the current folder (``<name>_savedmodel`` for a SavedModel)."""
    stem = Path(model_path).stem
    return Path(f"{stem}_savedmodel") if fmt == "savedmodel" else Path(stem + SUFFIXES[fmt])


def info_path(out):
    return Path(str(out) + ".json")


def check_export(model_path, fmt, out, overwrite=False):
    """Every refusal that needs no TensorFlow: format, fusion models, ONNX tools, the output path."""
    from efr.models.fusion import is_fusion
    from efr.models.modelio import read_meta
    from efr.predict.predictor import check_meta

    if fmt not in FORMATS:
        raise EFRError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    meta = read_meta(model_path)
    check_meta(meta, model_path)
    if is_fusion(meta):
        raise EFRError(f"{model_path} is a fusion model: its hand-made features (landmarks, HOG) run in Python "
                       f"outside the Keras graph, so no {fmt} file can hold it; export a CNN or transfer model")
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError as err:
            raise EFRError(f"--format onnx needs tf2onnx and onnxruntime ({err.name} is not installed): "
                           "pip install 'efr[onnx]', or use --format tflite or savedmodel") from None
    out = Path(out)
    if out.exists() and not overwrite:
        raise EFRError(f"{out} exists: remove it, choose another --out, or add --overwrite")
    if not out.parent.is_dir():
        raise EFRError(f"--out {out}: folder {out.parent} does not exist")
    return meta


def _tflite(model, tmp, probe):
    from efr.models.litert import LiteClassifier, convert

    content = convert(model)
    Path(tmp).write_bytes(content)
    return LiteClassifier(content, threads=1)(probe)


def _savedmodel(model, tmp, probe):
    import tensorflow as tf

    from efr.faces.landmarks import _quiet_stderr

    with contextlib.redirect_stdout(io.StringIO()), _quiet_stderr():
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(str(tmp))
    return np.asarray(loaded.serve(tf.constant(probe)))


def _onnx(model, tmp, probe):
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    from efr.faces.landmarks import _quiet_stderr

    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="image"),)
    function = tf.function(lambda image: model(image, training=False))
    with contextlib.redirect_stdout(io.StringIO()), _quiet_stderr():
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=ONNX_OPSET)
    content = proto.SerializeToString()
    Path(tmp).write_bytes(content)
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: probe})[0]


WRITERS = {"tflite": _tflite, "savedmodel": _savedmodel, "onnx": _onnx}


def describe(meta, model, fmt, model_path, gap):
    """The JSON written beside an export: what a program needs to feed it and read its outputs."""
    height, width = (int(d) for d in model.input_shape[1:3])
    return {
        "format": fmt,
        "source": Path(model_path).name,
        "model": meta.get("model") or Path(model_path).stem,
        "classes": list(meta["class_names"]),
        "input": {"shape": [None, height, width, 3], "dtype": "float32", "layout": "NHWC", "color": "RGB",
                  "range": [0, 255], "scaling": "inside the model: feed plain pixel values"},
        "output": "softmax probabilities, one per class, in the order of classes",
        "face_crop": meta.get("crop") or "crop.py's defaults (efr.faces.detect): square Haar face box",
        "tta": meta.get("tta") or "none",
        "tta_note": "flip: average the outputs of each face and its mirror image" if meta.get("tta") == "flip" else "",
        "check": {"probe_images": 4, "max_abs_diff_vs_keras": gap, "tolerance": TOLERANCE},
    }


def export_model(model_path, fmt, out=None, overwrite=False, allow_unfinished=False):
    """Export ``model_path`` (a .keras file or a built-in name) as ``fmt``; return an Exported."""
    import logging

    from efr.io import runstate
    from efr.models.litert import _probe
    from efr.models.modelio import load_model, resolve_model

    model_path = resolve_model(model_path)
    out = Path(out) if out is not None else default_out(model_path, fmt)
    meta = check_export(model_path, fmt, out, overwrite)
    runstate.check_model_finished(model_path, allow_unfinished, logging.getLogger("efr.export"))
    model, meta = load_model(model_path)
    probe = _probe(model)  # the probe batch LiteRT conversions are checked on
    expected = np.asarray(model.predict_on_batch(probe))
    work = Path(tempfile.mkdtemp(prefix=".efr-export-", dir=out.parent))
    try:
        tmp = work / ("model" + SUFFIXES[fmt])
        try:
            got = WRITERS[fmt](model, tmp, probe)
        except EFRError:
            raise
        except Exception as err:  # noqa: BLE001 - any converter failure is the model's, said in one line
            raise EFRError(f"{model_path} cannot be exported as {fmt}: {str(err).splitlines()[0][:300]}") from err
        gap = float(np.max(np.abs(np.asarray(got, np.float32) - expected)))
        if not gap <= TOLERANCE:
            raise EFRError(f"{model_path} exported as {fmt} gives outputs {gap:.2g} away from Keras' (allowed "
                           f"{TOLERANCE:g}); nothing written")
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = info_path(out)
    write_text_atomic(info, json.dumps(describe(meta, model, fmt, model_path, gap), indent=2) + "\n")
    return Exported(out, info, gap)

