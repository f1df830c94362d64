"""--distribute multi-worker (efr.train.distributed): two processes on 127.0.0.1 train like one.

The worker (tests/distributed_worker.py) runs on Keras' JAX backend; the single-process
reference runs here, on TensorFlow's, from the same initial weights and batches.  The kill
and resume test runs `efr train` itself on 2 processes (a tiny synthetic Dataset), and the
uneven-validation test one process over 2 JAX CPU devices (XLA_FLAGS), each in subprocesses.
"""

import csv
import importlib.util
import json
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
    env = _worker_env(_free_port(), processes)
    return [subprocess.Popen([sys.executable, str(HERE / "distributed_worker.py"), str(out), *extra],
                             env=dict(env, KERAS_DISTRIBUTION_PROCESS_ID=str(k)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
            for k in range(processes)]


def _worker_env(port, processes=2):
    env = dict(os.environ, KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}",
               KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    env.pop("KERAS_BACKEND", None)
    return env


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
    # Every other process says it too, once, naming the process that failed.
    lines = [line for line in err0.splitlines() if line.startswith("error:")]
    assert lines == ["error: process 1: the dataset is missing here (process 0 stopped too)"], err0[-2000:]
    assert "Traceback" not in err0 + err1
    assert not (tmp_path / "process0.npz").exists()


# One process of the kill-and-resume test: efr's resumable fit (efr.train.fit.fit_model: checkpoint, history,
# process 0's checkpoint shared on resume) of a tiny model, in efr train's error handling (one_of_several), with
# a pause after every epoch so that a kill lands while it trains.  Process 0 writes OUT/run, the others OUT/p<k>.
RESUMABLE_WORKER = r"""
import logging, os, sys, time, types
from pathlib import Path
import numpy as np
from efr.train import distributed
distributed.use_jax_backend(cpu_devices=1)
from efr.commands.train import one_of_several

EPOCHS = int(sys.argv[2])


def train(stop):
    import keras  # on JAX, without TensorFlow (seconds to start): no .keras files, seeds given, not set
    from efr.train.fit import fit_model

    strategy = distributed.start(distributed.cluster_from_env(), on_peer_failure=stop)
    init = keras.initializers.GlorotUniform
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh", kernel_initializer=init(1)),
                            keras.layers.Dense(3, activation="softmax", kernel_initializer=init(2))])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
    process, processes = strategy.data_shard
    part = 8 // processes

    class Batches(keras.utils.PyDataset):  # full batches of 8, this process's slice of each
        def __len__(self):
            return 4

        def __getitem__(self, k):
            rows = slice(8 * k + process * part, 8 * k + (process + 1) * part)
            return x[rows], y[rows]

    class Pause(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.5)

    out = Path(sys.argv[1]) / ("run" if strategy.is_chief else f"p{process}")
    out.mkdir(parents=True, exist_ok=True)
    settings = types.SimpleNamespace(epochs=EPOCHS, lr=0.05, patience=50, tensorboard=False)
    fit_model(types.SimpleNamespace(model=net), Batches(), (x[:8], y[:8]), settings, {"class_names": ["a", "b", "c"]},
              strategy, out_dir=out, save_files=False, resumable=True, extra_callbacks=[Pause()])


logging.basicConfig(level=logging.INFO, format="%(message)s")
one_of_several(train)
distributed.finish()  # what the normal exit does first; then leave without the seconds of tearing down
logging.shutdown()
os._exit(0)
"""
RESUMABLE_EPOCHS = 4


def _start_resumable(out, processes=2):
    env = _worker_env(_free_port(), processes)
    return [subprocess.Popen([sys.executable, "-c", RESUMABLE_WORKER, str(out), str(RESUMABLE_EPOCHS)],
                             env=dict(env, KERAS_DISTRIBUTION_PROCESS_ID=str(k)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
            for k in range(processes)]


def _history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _kill_after_checkpoint(workers, run_dir, victim=1):
    """SIGKILL ``workers[victim]`` once process 0's first checkpoint is there; (seconds, (code, stderr)) of
    the other processes' ends."""
    from efr.io import runstate

    try:
        deadline = time.monotonic() + 150
        while not runstate.checkpoint_path(run_dir).is_file():
            assert all(w.poll() is None for w in workers), _finish(workers, 1)
            assert time.monotonic() < deadline, "no checkpoint within 150 s"
            time.sleep(0.05)
        os.kill(workers[victim].pid, signal.SIGKILL)
        killed = time.monotonic()
        ends = _finish([w for k, w in enumerate(workers) if k != victim], timeout=60)
        return time.monotonic() - killed, ends
    finally:
        _finish(workers)


def _check_one_lost_line(took, code, err, lost=1, me=0):
    assert took < 60 and code == 2, (took, code, err[-3000:])
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [f"error: process {lost} stopped (killed, or its machine lost); process {me} stopped too"], \
        err[-3000:]
    assert "Traceback" not in err and "Check failure" not in err, err[-3000:]


@needs_jax
@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_a_rerun_resumes_at_the_last_checkpoint(tmp_path):
    from efr.io import runstate

    run_dir = tmp_path / "run"
    took, [(code, err)] = _kill_after_checkpoint(_start_resumable(tmp_path), run_dir)
    _check_one_lost_line(took, code, err)

    # Both again: both continue at process 0's last checkpoint (process 1 has none of its own in p1/ for the
    # epochs after it), process 0's history rows kept and the rest added.
    done = runstate.load_checkpoint(run_dir)[0]["epochs_done"]
    assert 1 <= done < RESUMABLE_EPOCHS
    kept = _history(run_dir)[:done]
    results = _finish(_start_resumable(tmp_path), timeout=120)
    for code, err in results:
        assert code == 0, err[-3000:]
        assert f"resuming after epoch {done}" in err, err[-3000:]
    history = _history(run_dir)
    assert [int(row["epoch"]) for row in history] == list(range(RESUMABLE_EPOCHS))  # each epoch once
    assert history[:done] == kept


# `efr train` with a pause after every epoch (test code only), so that a kill lands while it trains.
SLOW_EPOCHS = (
    "import sys, time\n"
    "import efr.train.callbacks as c\n"
    "end = c.EpochLogger.on_epoch_end\n"
    "c.EpochLogger.on_epoch_end = lambda self, epoch, logs=None: (end(self, epoch, logs), time.sleep(0.5))\n"
    "from efr.commands import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
EPOCHS = 4


def _start_training(dataset, runs, processes=2):
    """`efr train --distribute multi-worker` on ``processes`` processes; the same command on each (temporary
    folders in ``runs``: a killed process leaves its own)."""
    runs.mkdir(parents=True, exist_ok=True)
    # KERAS_BACKEND: the wrapper imports Keras before efr chooses the backend
    env = dict(_worker_env(_free_port(), processes), KERAS_BACKEND="jax", TMPDIR=str(runs))
    args = ["train", "--dataset", str(dataset), "--runs-dir", str(runs), "--name", "mw", "--img-size", "32",
            "--batch-size", "8", "--epochs", str(EPOCHS), "--patience", "20", "--distribute", "multi-worker",
            "--cpu-devices", "1"]
    return [subprocess.Popen([sys.executable, "-c", SLOW_EPOCHS, *args], cwd=HERE.parent,
                             env=dict(env, KERAS_DISTRIBUTION_PROCESS_ID=str(k)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
            for k in range(processes)]


@needs_jax
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EFR_LONG_TESTS"),
                    reason="about 60 s on 2 cores (two 2-process efr train runs): set EFR_LONG_TESTS=1")
def test_efr_train_killed_then_run_again_resumes_at_the_last_checkpoint(tmp_path):
    from efr.io import runstate
    from train_fixtures import make_tiny_dataset

    dataset = make_tiny_dataset(tmp_path, subjects=6, size=32, gazes=("frontal",))
    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "mw"
    took, [(code, err)] = _kill_after_checkpoint(_start_training(dataset, runs), run_dir)
    _check_one_lost_line(took, code, err)

    # The same command again continues at process 0's last checkpoint: its history rows kept, the rest added.
    done = runstate.load_checkpoint(run_dir)[0]["epochs_done"]
    assert 1 <= done < EPOCHS
    kept = _history(run_dir)[:done]
    results = _finish(_start_training(dataset, runs), timeout=150)
    for code, err in results:
        assert code == 0, err[-3000:]
    assert f"resuming after epoch {done}" in results[0][1]
    history = _history(run_dir)
    assert [int(row["epoch"]) for row in history] == list(range(EPOCHS))  # each epoch once
    assert history[:done] == kept
    state = runstate.read_state(run_dir)
    assert state["state"] == runstate.FINISHED and state["resumed"] == 1
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == EPOCHS


# One process over 2 JAX CPU devices; 7 validation rows in batches of 4: the last (3) does not split in 2.
UNEVEN_VALIDATION = r"""
import json
import numpy as np
from efr.train import distributed
distributed.use_jax_backend(cpu_devices=2)
import keras, tensorflow as tf
strategy = distributed.start(distributed.Cluster())
rng = np.random.default_rng(0)
x, vx = rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(7, 5)).astype("float32")
y, vy = (np.eye(3, dtype="float32")[a[:, :3].argmax(1)] for a in (x, vx))  # learnable: some right, some not
keras.utils.set_random_seed(0)
net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                        keras.layers.Dense(3, activation="softmax")])
net.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
history = net.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4, drop_remainder=True),
                  validation_data=tf.data.Dataset.from_tensor_slices((vx, vy)).batch(4), epochs=2, verbose=0)
w = [v.astype("float64") for v in net.get_weights()]
z = np.tanh(vx @ w[0] + w[1]) @ w[2] + w[3]
p = np.exp(z - z.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)
print(json.dumps({"devices": len(strategy.devices), "val_loss": history.history["val_loss"][-1],
                  "val_accuracy": history.history["val_accuracy"][-1],
                  "loss": float(-(vy * np.log(np.clip(p, 1e-7, 1))).sum(1).mean()),
                  "accuracy": float((p.argmax(1) == vy.argmax(1)).mean())}))
"""


@needs_jax
@pytest.mark.slow
def test_uneven_validation_batches_split_over_several_devices_and_score_exactly():
    env = dict(_worker_env(0), KERAS_BACKEND="jax")
    for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES"):
        env.pop(name)
    done = subprocess.run([sys.executable, "-c", UNEVEN_VALIDATION], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["devices"] == 2
    assert abs(got["val_loss"] - got["loss"]) < 1e-5, got  # every row counted alike
    assert abs(got["val_accuracy"] - got["accuracy"]) < 1e-6 and 0 < got["accuracy"] < 1, got


def test_even_batches_repeat_rows_of_uneven_batches_and_refuse_full_ones_that_do_not_split():
    import tensorflow as tf

    x = np.arange(14, dtype="float32").reshape(7, 2)
    y = np.eye(7, dtype="float32")
    repeated = distributed.even_batches(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), 2)
    assert int(repeated.cardinality()) == 4  # known: Keras sees the end of the epoch without a warning
    batches = list(repeated)
    assert [len(b[0]) for b in batches] == [4, 4, 4, 2]  # every batch splits in 2
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), np.repeat(x, 2, axis=0))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), np.repeat(y, 2, axis=0))
    even = tf.data.Dataset.from_tensor_slices((x[:6], y[:6])).batch(4)  # 4 and 2: nothing to do
    assert distributed.even_batches(even, 2) is even
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()  # not read to its end
    assert distributed.even_batches(endless, 2) is endless
    with pytest.raises(EFRError, match="batch of 3 images cannot be split over this process's 2 devices"):
        distributed.even_batches(tf.data.Dataset.from_tensor_slices((x, y)).batch(3, drop_remainder=True), 2)


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
