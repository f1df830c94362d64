"""Interrupted training runs: state.json, Ctrl-C and SIGKILL of a real training process, resume.

The training subprocesses sleep a little after every epoch (a wrapper that patches
EpochLogger, test code only) so that a signal can land between epochs of a set this
small; the training itself is efe_cnn.py's.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import efe_cnn
from efr.io import runstate
from efr.train import fit as train_fit, rundir as train_rundir, settings as train_settings
from efr.commands.cli import EXIT_USER_ERROR, run
from efr.io.errors import EFRError
from train_fixtures import make_tiny_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SLOW_EPOCHS = (
    "import sys, time\n"
    "import efr.train.callbacks as c\n"
    "end = c.EpochLogger.on_epoch_end\n"
    "c.EpochLogger.on_epoch_end = lambda self, epoch, logs=None: (end(self, epoch, logs), time.sleep(0.4))\n"
    "import efe_cnn\n"
    "from efr.commands.cli import run\n"
    "sys.exit(run(efe_cnn.main, sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("resume"), subjects=6, size=32, gazes=("frontal",))


def _args(dataset, runs, name, *extra):
    return ["--dataset", str(dataset), "--runs-dir", str(runs), "--name", name, "--img-size", "32",
            "--batch-size", "8", "--patience", "20", "--deterministic", *map(str, extra)]


def _rows(path):
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _signal_after(args, watch, rows_more, sig):
    """Run slow-epoch training; send ``sig`` once ``watch`` has ``rows_more`` new rows; return (code, stderr)."""
    start = len(_rows(watch))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", SLOW_EPOCHS, *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(_rows(watch)) < start + rows_more and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"training ended before the signal: {process.stderr.read()[-2000:]}"
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def _epochs(path):
    return [int(row["epoch"]) for row in _rows(path)]


def test_ctrl_c_then_kill_then_resume_equals_an_uninterrupted_run(dataset, tmp_path, caplog):
    runs = tmp_path / "runs"
    assert run(efe_cnn.main, _args(dataset, runs, "straight", "--epochs", 5, "--quiet")) == 0
    args = _args(dataset, runs, "r", "--epochs", 5)
    history = runs / "r" / "history.csv"

    code, err = _signal_after(args, history, 2, signal.SIGINT)
    assert code == 130, err[-3000:]
    assert f"resume with: efr train --resume {runs / 'r'}" in err and "Traceback" not in err
    assert runstate.read_state(runs / "r")["state"] == runstate.INTERRUPTED
    assert not (runs / "r" / "report.html").exists() and not (runs / "r" / "metrics.json").exists()
    first = len(_rows(history))
    assert first >= 2

    # The same command again resumes (no "already exists"); then SIGKILL, which leaves no word behind.
    code, _ = _signal_after(args, history, 1, signal.SIGKILL)
    assert code == -signal.SIGKILL
    info = runstate.read_state(runs / "r")
    assert info["state"] == runstate.RUNNING and runstate.effective_state(info) == runstate.INTERRUPTED
    assert not (runs / "r" / "report.html").exists()
    assert _epochs(history)[:first] == list(range(first))
    with pytest.raises(EFRError, match="interrupted.*--allow-unfinished"):  # predict.py's and cluster.py's check
        runstate.check_model_finished(runs / "r" / "best.keras")

    assert run(efe_cnn.main, ["--resume", str(runs / "r"), "--quiet"]) == 0
    assert _epochs(history) == list(range(5))  # each epoch once
    state = runstate.read_state(runs / "r")
    assert state["state"] == runstate.FINISHED and state["resumed"] == 2
    assert (runs / "r" / "report.html").is_file() and not (runs / "r" / runstate.CHECKPOINT_NAME).exists()
    straight, resumed = _rows(runs / "straight" / "history.csv"), _rows(history)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in resumed], [float(r[key]) for r in straight], rtol=1e-5)
    metrics = [json.loads((runs / n / "metrics.json").read_text()) for n in ("straight", "r")]
    assert abs(metrics[0]["test_accuracy"] - metrics[1]["test_accuracy"]) <= 0.02
    assert metrics[1]["epochs_run"] == 5 and metrics[1]["resumed"] is True


def test_cross_validation_resumes_at_the_first_unfinished_fold(dataset, tmp_path):
    runs = tmp_path / "runs"
    args = _args(dataset, runs, "cv", "--epochs", 3, "--folds", 2, "--cv-valid-fraction", 0.3)
    fold1 = runs / "cv" / "fold1" / train_rundir.FOLD_RESULT_NAME
    code, _ = _signal_after(args, runs / "cv" / "fold2" / "history.csv", 1, signal.SIGKILL)
    assert code == -signal.SIGKILL and fold1.is_file()
    kept = fold1.stat().st_mtime_ns
    assert run(efe_cnn.main, [*args, "--quiet"]) == 0  # the same command
    assert fold1.stat().st_mtime_ns == kept  # fold 1 was not trained again
    assert _epochs(runs / "cv" / "fold2" / "history.csv") == list(range(3))
    metrics = json.loads((runs / "cv" / "metrics.json").read_text())
    assert [row["fold"] for row in metrics["per_fold"]] == [1, 2]
    assert runstate.read_state(runs / "cv")["state"] == runstate.FINISHED


def test_unfinished_run_with_other_settings_is_refused(dataset, tmp_path, caplog):
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps({"settings": {"epochs": 5, "batch_size": 8}}))
    runstate.write_state(run_dir, runstate.INTERRUPTED)
    code = run(efe_cnn.main, _args(dataset, tmp_path / "runs", "x", "--epochs", 3))
    assert code == EXIT_USER_ERROR
    assert "unfinished run" in caplog.text and "epochs 5 -> 3" in caplog.text and "--resume" in caplog.text


def test_resume_refuses_other_options_and_finished_runs(tmp_path, caplog):
    run_dir = tmp_path / "done"
    run_dir.mkdir()
    assert run(efe_cnn.main, ["--resume", str(run_dir), "--epochs", "3"]) == EXIT_USER_ERROR
    assert "leave out --epochs" in caplog.text
    runstate.write_state(run_dir, runstate.FINISHED)
    assert run(efe_cnn.main, ["--resume", str(run_dir)]) == EXIT_USER_ERROR
    assert "finished, nothing to resume" in caplog.text


def test_a_killed_run_reads_as_interrupted(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    info = runstate.write_state(tmp_path, runstate.RUNNING)
    assert runstate.effective_state(info) == runstate.RUNNING  # this process: alive
    info["pid"] = process.pid  # gone
    assert runstate.effective_state(info) == runstate.INTERRUPTED
    assert "killed or crashed" in runstate.describe(info)


def test_history_is_trimmed_to_the_checkpointed_epochs(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,phase\n0,1.0,train\n1,0.9,train\n2,0.8,train\n")
    train_fit._trim_history(path, 2)
    assert _epochs(path) == [0, 1]
    train_fit._trim_history(path, 0)
    assert not path.exists()


def test_a_resumed_history_keeps_keras_line_ends(tmp_path):
    """Issue 23.16: history.csv mixed CRLF (Keras' CSVLogger) and LF (the trim) after a resume."""
    path = tmp_path / "history.csv"
    path.write_bytes(b"epoch,loss,phase\r\n0,1.0,train\r\n1,0.9,train\r\n2,0.8,train\r\n")
    train_fit._trim_history(path, 2)
    assert path.read_bytes() == b"epoch,loss,phase\r\n0,1.0,train\r\n1,0.9,train\r\n"


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    """Issue 23.11: a truncated checkpoint.npz was a BadZipFile traceback on --resume."""
    runstate.save_checkpoint(tmp_path, {"epochs_done": 1}, {"weights": [np.zeros(50000)]})
    path = runstate.checkpoint_path(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(EFRError, match="damaged training checkpoint.*delete it to restart"):
        runstate.load_checkpoint(tmp_path)


def test_a_deleted_checkpoint_is_said_not_silently_restarted(tmp_path, caplog):
    """Issue 23.11: a deleted checkpoint said "resuming" and silently started again from epoch 1."""
    (tmp_path / "history.csv").write_text("epoch,loss,phase\n0,1.0,train\n1,0.9,train\n2,0.8,train\n")
    assert train_fit.warn_lost_checkpoint(tmp_path) == 3
    assert "lists 3 finished epochs" in caplog.text and "checkpoint.npz is missing" in caplog.text
    assert "starts again from epoch 1" in caplog.text


@pytest.mark.parametrize("stop_after", [1, 2, 3])  # in the head phase, at its end, in fine-tuning
def test_a_two_phase_fit_resumes_in_the_phase_it_was_in(tmp_path, stop_after):
    import keras
    import tensorflow as tf

    from efr.models.build import BuiltModel

    def toy():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten()],
                                    name="backbone")
        outputs = keras.layers.Dense(2, activation="softmax")(
            keras.layers.Dropout(0.3)(backbone(keras.layers.Rescaling(1 / 255)(inputs))))
        return BuiltModel(keras.Model(inputs, outputs), 8, backbone, {}, {"model": "toy"})

    class Stop(keras.callbacks.Callback):  # Ctrl-C as the epoch after ``stop_after`` completed ones begins
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == stop_after:
                raise KeyboardInterrupt

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, 8, 8, 3)).astype("float32")
    y = np.eye(2)[rng.integers(0, 2, 24)].astype("float32")
    pipeline = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    settings = train_settings.TrainSettings(epochs=2, fine_tune_epochs=2, lr=0.01, patience=5)
    meta, strategy = {"class_names": ["a", "b"]}, tf.distribute.get_strategy()
    (tmp_path / "straight").mkdir()
    (tmp_path / "cut").mkdir()

    straight = train_fit.fit_model(toy(), pipeline, pipeline, settings, meta, strategy, out_dir=tmp_path / "straight",
                               resumable=True)
    with pytest.raises(KeyboardInterrupt):
        train_fit.fit_model(toy(), pipeline, pipeline, settings, meta, strategy, out_dir=tmp_path / "cut",
                        resumable=True, extra_callbacks=[Stop()])
    resumed_model = toy()
    resumed = train_fit.fit_model(resumed_model, pipeline, pipeline, settings, meta, strategy, out_dir=tmp_path / "cut",
                              resumable=True)
    assert resumed == straight
    rows = [_rows(tmp_path / name / "history.csv") for name in ("straight", "cut")]
    assert [r["epoch"] for r in rows[1]] == ["0", "1", "2", "3"]
    assert [r["phase"] for r in rows[1]] == ["head", "head", "fine-tune", "fine-tune"]
    np.testing.assert_allclose([float(r["loss"]) for r in rows[1]], [float(r["loss"]) for r in rows[0]], rtol=1e-5)


def test_sigterm_interrupts_a_run_like_ctrl_c(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runstate.RunInterrupted, match=r"resume with: efr train --resume"):
        with runstate.tracked_run(tmp_path):
            assert runstate.read_state(tmp_path)["state"] == runstate.RUNNING
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert runstate.read_state(tmp_path)["state"] == runstate.INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) == before  # put back


def test_a_failed_run_records_its_error(tmp_path):
    with pytest.raises(ValueError):
        with runstate.tracked_run(tmp_path):
            raise ValueError("disk full")
    info = runstate.read_state(tmp_path)
    assert info["state"] == runstate.FAILED and "disk full" in info["error"]
    assert runstate.describe(info) == "failed (ValueError: disk full)"


def test_exist_ok_does_not_restart_a_run_still_training(dataset, tmp_path, caplog):
    run_dir = tmp_path / "runs" / "live"
    run_dir.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = runstate.write_state(run_dir, runstate.RUNNING)
        (run_dir / runstate.STATE_NAME).write_text(json.dumps(dict(info, pid=live.pid)))
        code = run(efe_cnn.main, _args(dataset, tmp_path / "runs", "live", "--epochs", 1, "--exist-ok"))
    finally:
        live.kill()
        live.wait()
    assert code == EXIT_USER_ERROR and "still running" in caplog.text
    assert (run_dir / runstate.STATE_NAME).is_file()


def test_a_ctrl_c_whose_exception_was_lost_still_interrupts_the_run(tmp_path):
    """Python drops an exception raised in a finaliser; the run must still end as interrupted."""
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a shell's background job
    with pytest.raises(runstate.RunInterrupted, match="resume with"):
        with runstate.tracked_run(tmp_path):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the handler runs here
            except KeyboardInterrupt:
                pass  # what Python does when the signal lands in a __del__
    assert runstate.read_state(tmp_path)["state"] == runstate.INTERRUPTED
    runstate.check_interrupted()  # cleared for whatever runs next in this process
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is back


def test_a_lost_ctrl_c_stops_the_fit_at_the_next_batch(tmp_path):
    import keras

    from efr.train.callbacks import InterruptCheck

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    batches = []
    seen = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: batches.append(batch))
    data = np.zeros((64, 2), np.float32), np.zeros((64, 1), np.float32)
    model.fit(*data, batch_size=8, epochs=1, verbose=0, callbacks=[InterruptCheck(), seen])
    assert len(batches) == 8  # no flag: the fit runs through
    runstate._STOP.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(*data, batch_size=8, epochs=1, verbose=0, callbacks=[InterruptCheck(), seen])
    finally:
        runstate._STOP.clear()
    assert len(batches) == 8  # stopped before the first batch of the second fit
