"""--distribute multi-worker (efr.train.distributed): two processes on 127.0.0.1 train like one.

The worker (tests/distributed_worker.py) runs on Keras' JAX backend; the single-process
reference runs here, on TensorFlow's, from the same initial weights and batches.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from efr.io.errors import EFRError
from efr.train import distributed

HERE = Path(__file__).resolve().parent
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="JAX not installed (pip install 'efr[distributed]')")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_workers(out, *extra, processes=2):
    port = _free_port()
    env = dict(os.environ, KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
               KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("KERAS_BACKEND", None)
    return [subprocess.Popen([sys.executable, str(HERE / "distributed_worker.py"), str(out), *extra],
                             env=dict(env, KERAS_DISTRIBUTION_PROCESS_ID=str(k)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
            for k in range(processes)]


def _finish(workers, timeout=120):
    """(return codes, stderr texts); workers still running after ``timeout`` are killed by their ids."""
    deadline = time.monotonic() + timeout
    results = []
    for worker in workers:
        try:
            _, err = worker.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            _, err = worker.communicate()
        results.append((worker.returncode, err))
    return results


@needs_jax
@pytest.mark.slow
def test_two_processes_end_equal_and_match_one_process(tmp_path):
    workers = _start_workers(tmp_path)
    try:
        sys.path.insert(0, str(HERE))
        import distributed_worker as worker

        # The reference, on one process (TensorFlow's backend, in this test's process) while the workers start.
        reference = worker.model()
        reference.fit(worker.batches(), epochs=2, verbose=0, shuffle=False)
        expected = reference.get_weights()
    finally:
        sys.path.remove(str(HERE))
        results = _finish(workers)
    for code, err in results:
        assert code == 0, err[-3000:]
    got = [np.load(tmp_path / f"process{k}.npz") for k in (0, 1)]
    for k, (a, b) in enumerate(zip(got[0].values(), got[1].values())):
        np.testing.assert_array_equal(a, b, err_msg=f"weights {k} differ between the processes")
    for a, b in zip(got[0].values(), expected):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert not np.allclose(expected[0], worker.initial_weights()[0])  # it did train
    assert (tmp_path / "run" / "model.keras").is_file()  # process 0 wrote; process 1's copy was temporary
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("efr-process1-*/run"))


@needs_jax
@pytest.mark.slow
def test_a_failing_process_stops_the_others_with_its_error(tmp_path):
    started = time.monotonic()
    results = _finish(_start_workers(tmp_path, "fail"), timeout=90)
    assert time.monotonic() - started < 60 + 30  # the watchdog's bound, with the start-up of two processes
    (code0, err0), (code1, err1) = results
    assert code0 == 2 and code1 == 2, (err0[-2000:], err1[-2000:])
    lines = [line for line in err1.splitlines() if line.startswith("error:")]
    assert lines == ["error: the dataset is missing here"], err1[-2000:]
    # Process 0 ends within seconds too, though not always with the message: JAX's coordination service
    # can end it before its watchdog reads it (docs/train.md, what is left).
    assert not (tmp_path / "process0.npz").exists()


@pytest.mark.parametrize("env, message", [
    ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_PROCESS_ID not"),
    ({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "two",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0"}, "give a whole number"),
    ({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "2"}, "must be 0 .. 1"),
    ({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1,h:2,h:3", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0"}, "lists 3 addresses"),
    ({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "nohost", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
      "KERAS_DISTRIBUTION_PROCESS_ID": "0"}, "host:port"),
])
def test_bad_cluster_variables_are_named(env, message):
    with pytest.raises(EFRError, match=message.replace(".", r"\.")):
        distributed.cluster_from_env(env)


def test_cluster_variables_are_read_as_keras_reads_them():
    assert distributed.cluster_from_env({}) == distributed.Cluster()
    cluster = distributed.cluster_from_env({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:2345",
                                            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                                            "KERAS_DISTRIBUTION_PROCESS_ID": "1"})
    assert cluster == distributed.Cluster("10.0.0.1:1234", 2, 1)


def test_distribute_flag_keeps_its_old_meaning():
    from efr.commands.train import parse_args, settings_from_args
    from efr.train.settings import TrainSettings

    assert settings_from_args(parse_args(["--distribute"])).distribute == "mirrored"
    assert settings_from_args(parse_args(["--distribute", "multi-worker"])).distribute == "multi-worker"
    assert settings_from_args(parse_args([])).distribute == ""
    assert TrainSettings(distribute=True).distribute == "mirrored"  # args.json of older runs
    with pytest.raises(EFRError, match="choose mirrored or multi-worker"):
        distributed.distribute_mode("ring")


def test_missing_jax_and_a_loaded_tensorflow_keras_are_clear_errors(monkeypatch):
    import keras  # this test process runs Keras on TensorFlow

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(EFRError, match=r"pip install 'efr\[distributed\]'"):
        distributed.use_jax_backend()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if importlib.util.find_spec("jax") is not None and keras.backend.backend() != "jax":
        with pytest.raises(EFRError, match="already loaded with tensorflow"):
            distributed.use_jax_backend()


def test_multi_worker_refuses_what_it_cannot_do(tmp_path):
    from efr.train.settings import TrainSettings, validate_settings

    for option, message in (({"folds": 3}, "--folds"), ({"model": "fusion"}, "--model fusion"),
                            ({"tensorboard": True}, "--tensorboard")):
        with pytest.raises(EFRError, match=message):
            validate_settings(TrainSettings(distribute="multi-worker", **option))
