"""TensorFlow's C++ start-up lines are hidden by default and shown with --verbose."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TF_LINE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl)", re.M)
PROGRAM = (
    "import os, sys\n"
    "import efr\n"
    "from efr.io import tfquiet\n"
    "tfquiet.set_verbose(sys.argv[1] == 'verbose')\n"
    "import tensorflow as tf\n"
    "tf.config.list_physical_devices('GPU')\n"
    "print(tf.constant(2).numpy() + 1, os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    "print('efr: a real message', file=sys.stderr)\n"
)


def _start(mode, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    environment.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, env=environment,
                          timeout=300, cwd=REPO)


def test_start_up_lines_are_hidden_by_default_and_shown_with_verbose():
    quiet, verbose = _start("quiet"), _start("verbose")
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert quiet.stdout.split() == ["3", "3"] and verbose.stdout.split() == ["3", "0"]
    assert not TF_LINE.search(quiet.stderr), quiet.stderr
    assert "efr: a real message" in quiet.stderr  # only TensorFlow's lines go
    # Whatever TensorFlow says on this machine at start-up, --verbose lets it through.
    assert len(verbose.stderr.splitlines()) >= len(quiet.stderr.splitlines())


def test_a_log_level_the_user_set_is_kept(monkeypatch):
    from efr.io import tfquiet

    monkeypatch.setitem(tfquiet._state, "level_set_by_efr", False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    tfquiet.install()
    tfquiet.set_verbose(True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    tfquiet.install()  # none set: EFR's quiet level, which --verbose then lowers
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == tfquiet.QUIET_LEVEL
    tfquiet.set_verbose(True)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_predictions_do_not_build_a_predict_function_per_model(tmp_path):
    # Cross-validation predicts with a new model every fold; model.predict traces a new
    # tf.function for each, and TensorFlow then warns "triggered tf.function retracing".
    import numpy as np

    from efr.io.imageio import write_image
    from efr.train.score import predict_paths
    from predict_fixtures import tiny_model

    paths = []
    for index in range(3):
        paths.append(tmp_path / f"face{index}.png")
        write_image(paths[-1], np.full((32, 32, 3), 60 * index, np.uint8))
    model = tiny_model(32, 4)

    def traced(*args, **kwargs):
        raise AssertionError("model.predict builds a predict function per model")

    model.predict = traced
    probs = predict_paths(model, paths, 32, batch_size=2)
    assert probs.shape == (3, 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
