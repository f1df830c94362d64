"""Test settings: CPU only, quiet TensorFlow, small thread pools, no network."""

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# efr sets this on import (TensorFlow 2.21's oneDNN kernels crash when training 1x1 stride-2
# convolutions); repeat it here so a test module that imports keras before efr is covered too.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Converted LiteRT models (efr.models.litert) go to a folder of this test session, not the user's ~/.cache.
if "EFR_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["EFR_CACHE_DIR"] = tempfile.mkdtemp(prefix="efr-test-cache-")
