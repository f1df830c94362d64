"""Run a Keras classifier with LiteRT (XNNPACK) for prediction: the same outputs, faster on a CPU.

Keras' ``predict_on_batch`` runs a small CNN through TensorFlow's general-purpose
kernels, with Python and graph overhead on every call.  The same model converted to a
``.tflite`` flat buffer and run by ``ai-edge-litert`` (the interpreter EFR already uses
for the face mesh) with XNNPACK on all cores classifies faces 1.5-2x faster on this
project's 2-core machine (BENCHMARKS.md), with outputs equal to 1e-6.

The conversion takes 0.5-3 s, so it is cached per model file, keyed by the file's
content hash and the TensorFlow version: ``$EFR_CACHE_DIR/litert/`` (default
``$XDG_CACHE_HOME/efr`` or ``~/.cache/efr``); with ``runtime="auto"``, predict converts a
model only for a job that repays it (``worth_converting``) and otherwise runs Keras.  A converted model is checked against
Keras on a probe batch before it is used; a model that fails to convert or to match
stays on Keras (``runtime="auto"``) or is an error (``runtime="litert"``).
"""

import contextlib
import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from efr.io.errors import EFRError
from efr.io.imageio import atomic_path

log = logging.getLogger("efr.litert")

RUNTIMES = ("auto", "litert", "keras")
DEFAULT_RUNTIME = "auto"
# With runtime "auto", a model not converted yet is converted only for a job long enough to repay the
# 0.5-3 s conversion: a video, a camera, or at least this many photos (below it Keras runs the job).
AUTO_MIN_PHOTOS = 200
TOLERANCE = 1e-4  # largest allowed |LiteRT - Keras| on the probe batch (probabilities)


def cache_dir():
    """Where converted models are kept: $EFR_CACHE_DIR, else $XDG_CACHE_HOME/efr, else ~/.cache/efr."""
    root = os.environ.get("EFR_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "efr"
    return Path(root) / "litert"


def file_key(path):
    """Content hash of a model file plus the TensorFlow version (a new converter may convert differently)."""
    import tensorflow as tf

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{digest.hexdigest()[:24]}-tf{tf.__version__}"


def cached_path(model_path):
    """Where the conversion of ``model_path`` is (or would be) cached."""
    return cache_dir() / f"{file_key(model_path)}.tflite"


def worth_converting(model_path, photos, streams):
    """runtime "auto" for a job of ``photos`` photos and ``streams`` videos/cameras: LiteRT or Keras?

    LiteRT when the model's conversion is cached already, or the job is long enough to
    repay it (any video or camera, or AUTO_MIN_PHOTOS photos or more).
    """
    return streams > 0 or photos >= AUTO_MIN_PHOTOS or cached_path(model_path).is_file()


def convert(model):
    """The ``.tflite`` bytes of a Keras model (float32, dynamic batch); its printed chatter is swallowed."""
    import tensorflow as tf

    from efr.faces.landmarks import _quiet_stderr

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()), _quiet_stderr():  # "Saved artifact at ..." and C++ lines
        return converter.convert()


class LiteClassifier:
    """A converted model in a LiteRT interpreter; call it on a float32 batch like ``predict_on_batch``.

    Not thread-safe: one instance per thread (EFR classifies in one thread).
    """

    def __init__(self, content, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        from efr.faces.landmarks import _quiet_stderr

        self.content = content  # kept for single_threaded()

        with _quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = Interpreter(model_content=content, num_threads=int(threads or os.cpu_count() or 1))
            self.interpreter.allocate_tensors()  # the delegate is created (and says so) here
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def single_threaded(self):
        """Another interpreter of the same model on one thread, for a worker that classifies beside others."""
        return LiteClassifier(self.content, threads=1)

    def __call__(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch != batch.shape:  # resizing reallocates: only when the batch shape changes
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.batch = batch.shape
        self.interpreter.set_tensor(self.input["index"], batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


def _probe(model, count=4, seed=0):
    shape = tuple(int(d) for d in model.input_shape[1:])
    return np.random.default_rng(seed).uniform(0, 255, (count,) + shape).astype(np.float32)


def _converted(model, model_path):
    """Cached or fresh ``.tflite`` bytes for ``model`` loaded from ``model_path``."""
    cached = cached_path(model_path)
    if cached.is_file():
        return cached.read_bytes()
    content = convert(model)
    try:
        with atomic_path(cached) as tmp:
            Path(tmp).write_bytes(content)
    except OSError as err:  # a read-only home: convert again next time
        log.debug("could not cache the LiteRT model at %s: %s", cached, err)
    return content


def lite_classifier(model, model_path, runtime=DEFAULT_RUNTIME, threads=None):
    """A LiteClassifier equal to ``model`` (checked on a probe batch), or None to stay on Keras.

    ``runtime``: "keras" -> None; "auto" -> LiteRT when it converts and matches, else None
    (logged); "litert" -> LiteRT or an EFRError saying why not.
    """
    if runtime not in RUNTIMES:
        raise EFRError(f"--runtime {runtime}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "keras":
        return None
    try:
        runner = LiteClassifier(_converted(model, model_path), threads)
        probe = _probe(model)
        gap = float(np.max(np.abs(runner(probe) - np.asarray(model.predict_on_batch(probe)))))
        if not gap <= TOLERANCE:
            raise ValueError(f"its outputs differ from Keras' by {gap:.2g} (allowed {TOLERANCE:g})")
    except Exception as err:  # noqa: BLE001 - any converter/interpreter failure means: use Keras
        if runtime == "litert":
            raise EFRError(f"--runtime litert: {model_path} cannot run in LiteRT ({err}); use --runtime keras") from err
        log.info("%s runs in Keras: LiteRT conversion failed (%s)", model_path, err)
        return None
    return runner
