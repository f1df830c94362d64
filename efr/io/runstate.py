"""A run folder's state and training checkpoint: what makes an interrupted run resumable.

``runs/<name>/state.json`` (one small JSON file, replaced atomically) says where a run is::

    {"state": "running" | "finished" | "failed" | "interrupted", "pid": ..., "host": ...,
     "resume_command": "efr train --resume runs/<name>", "updated_utc": ..., ...}

A process killed outright (SIGKILL, power cut) cannot write "interrupted", so a
``running`` state whose process is gone on this machine reads as interrupted
(``effective_state``).  ``checkpoint.npz`` beside the training outputs holds
everything a fit needs to continue after its last completed epoch: the model's
variables (weights and random-generator states), the optimizer's variables, the
epoch counter, the phase, early-stopping and best-so-far state.  It is one file,
written atomically at the end of every epoch, so it is always one consistent epoch.

No TensorFlow here: predict.py and cluster.py read the state before importing it.
"""

import contextlib
import json
import os
import shlex
import signal
import socket
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from efr.io.errors import EFRError
from efr.io.imageio import atomic_path
from efr.io.runinfo import write_json

STATE_NAME = "state.json"
CHECKPOINT_NAME = "checkpoint.npz"
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
STATES = (RUNNING, FINISHED, FAILED, INTERRUPTED)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, carrying the message that says how to resume it."""


def resume_command(run_dir):
    return f"efr train --resume {shlex.quote(str(run_dir))}"  # the installed command (efe_cnn.py is a checkout's)


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(run_dir):
    """The run's state.json as a dict, or None when the folder has none (not an EFR run, or an old one)."""
    path = Path(run_dir) / STATE_NAME
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EFRError(f"{path}: unreadable run state ({err}); delete the run folder or pass --exist-ok") from err
    if not isinstance(info, dict) or info.get("state") not in STATES:
        raise EFRError(f"{path}: not an EFR run state; delete the run folder or pass --exist-ok")
    return info


def write_state(run_dir, state, **fields):
    """Record ``state`` (and ``fields``) in run_dir/state.json atomically, keeping earlier fields."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    old = read_state(run_dir) or {}
    info = {**old, **fields, "state": state, "pid": os.getpid(), "host": socket.gethostname(),
            "resume_command": resume_command(run_dir), "updated_utc": _now()}
    write_json(Path(run_dir) / STATE_NAME, info)
    return info


def _process_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, TypeError, ValueError):
        return True  # exists but not ours, or cannot tell: assume alive
    return True


def is_live(info):
    """True when ``info`` says running and its process is still running on this machine."""
    return (info or {}).get("state") == RUNNING and info.get("host") == socket.gethostname() and \
        info.get("pid") != os.getpid() and _process_alive(info.get("pid"))


def effective_state(info):
    """The state to report: a ``running`` run whose process has gone counts as interrupted."""
    if info is None:
        return None
    state = info["state"]
    if state == RUNNING and info.get("host") == socket.gethostname() and not _process_alive(info.get("pid")):
        return INTERRUPTED
    return state


def describe(info):
    """A short phrase for messages, e.g. 'interrupted (the training process was killed)'."""
    state = effective_state(info)
    if state == INTERRUPTED and info["state"] == RUNNING:
        return "interrupted (its training process stopped without finishing: killed or crashed)"
    if state == FAILED and info.get("error"):
        return f"failed ({info['error']})"
    if state == RUNNING:
        return f"still running (process {info.get('pid')} on {info.get('host')})"
    return state


def check_model_finished(model_path, allow_unfinished=False, log=None):
    """Refuse a model file whose run folder says the run did not finish; return the state or None.

    A model with no state.json beside it (copied elsewhere, or made before run states
    existed) is accepted.  ``allow_unfinished`` turns the refusal into a warning.
    """
    run_dir = Path(model_path).parent
    info = read_state(run_dir)
    state = effective_state(info)
    if state in (None, FINISHED):
        return state
    message = (f"{model_path} comes from the run {run_dir}, which is {describe(info)}: its weights are not the "
               f"finished run's")
    if not allow_unfinished:
        raise EFRError(f"{message}; finish it with `{resume_command(run_dir)}`, or pass --allow-unfinished to use "
                       "the model as it is")
    if log is not None:
        log.warning("warning: %s (used anyway: --allow-unfinished)", message)
    return state


# ----------------------------------------------------------------------------------
# Checkpoint file


def checkpoint_path(out_dir):
    return Path(out_dir) / CHECKPOINT_NAME


def save_checkpoint(out_dir, meta, arrays):
    """Write ``meta`` (JSON-able dict) and ``arrays`` ({group: [ndarray]}) as one atomic .npz file."""
    payload = {"meta": np.array(json.dumps(meta))}
    for group, values in arrays.items():
        for index, value in enumerate(values):
            payload[f"{group}/{index}"] = np.asarray(value)
    with atomic_path(checkpoint_path(out_dir), keep_suffix=True) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **payload)


def load_checkpoint(out_dir):
    """(meta, {group: [ndarray]}) of out_dir's checkpoint, or None when there is none."""
    path = checkpoint_path(out_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {}
            for key in data.files:
                if key == "meta":
                    continue
                group, index = key.rsplit("/", 1)
                arrays.setdefault(group, {})[int(index)] = data[key]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a truncated file: BadZipFile
        raise EFRError(f"{path}: damaged training checkpoint ({type(err).__name__}: {err}); delete it to restart "
                       "that training from its first epoch (the run's other files are kept)") from err
    return meta, {group: [values[i] for i in range(len(values))] for group, values in arrays.items()}


def remove_checkpoint(out_dir):
    path = checkpoint_path(out_dir)
    if path.exists():
        path.unlink()


# ----------------------------------------------------------------------------------
# Tracking a run


# Set by Ctrl-C or SIGTERM during a tracked run.  The KeyboardInterrupt the signal raises can
# be lost when it lands inside a finaliser (Python prints "Exception ignored" and goes on), so
# training also checks this flag at every batch (efr.train.callbacks.InterruptCheck) and at the end.
_STOP = threading.Event()


def _interrupt(signum, frame):
    _STOP.set()
    raise KeyboardInterrupt


def check_interrupted():
    """Raise KeyboardInterrupt when Ctrl-C or SIGTERM came during the tracked run, even if it was lost."""
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def tracked_run(run_dir, resuming=False, kept="its completed epochs"):
    """Record the run's state around the block: running, then finished, interrupted or failed.

    Ctrl-C (and SIGTERM, turned into the same) becomes RunInterrupted, whose message
    says what is ``kept`` and gives the command that resumes the run; any other exception marks the run failed
    and goes on.  A run killed outright stays ``running`` on disk, which
    ``effective_state`` reads as interrupted.
    """
    info = read_state(run_dir) or {}
    write_state(run_dir, RUNNING, started_utc=info.get("started_utc", _now()),
                resumed=int(info.get("resumed", 0)) + (1 if resuming else 0), error=None)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        _STOP.clear()
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        check_interrupted()  # a Ctrl-C lost after the last check still means: interrupted
    except KeyboardInterrupt:
        write_state(run_dir, INTERRUPTED)
        raise RunInterrupted(
            f"interrupted: {run_dir} keeps {kept}; resume with: {resume_command(run_dir)} "
            "(or re-run the same command)"
        ) from None
    except BaseException as err:
        write_state(run_dir, FAILED, error=f"{type(err).__name__}: {err}"[:500])
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous:
            _STOP.clear()  # a later fit in this process starts afresh
    write_state(run_dir, FINISHED, finished_utc=_now())
