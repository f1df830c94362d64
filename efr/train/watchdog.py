"""Failure detection for --distribute multi-worker: a failed or lost process ends all, each with one 'error:' line.

A process that fails posts its error in JAX's key-value store (``report_failure``); a
watchdog thread in every process (``Watchdog``, started by ``watch``) raises this process's
counter there and stops the process when another process posted an error or stopped
answering (killed, machine lost), so no process waits for ever.  An error in the training
thread that another process's loss caused (a failed collective operation) is settled first
(``settle_error``): the process ends with the error of the process that went.

JAX's own reaction to a lost process is to abort every other process at once (a C++ fatal
error and stack trace, no word from efr); the coordination service therefore runs in
JAX's "recoverable" mode (efr.train.distributed.start), which leaves the reaction to the
watchdog, and the processes leave in order at the end (``finish``): process 0, whose
process holds the coordination service, last.  A lost process 0 itself still ends the
others through JAX (what is left: docs/train.md).
"""

import atexit
import contextlib
import logging
import os
import re
import shutil
import sys
import threading
import time

from efr.io.errors import EFRError

log = logging.getLogger(__name__)

# Bounded waits (seconds): for a silent process to count as gone (JAX's heartbeat, which
# efr.train.distributed.start sets, and efr's watchdog's: a counter each process's watchdog raises in JAX's
# key-value store every WATCH_INTERVAL seconds).
HEARTBEAT_TIMEOUT = 20
WATCH_INTERVAL = 1.0
FAILED_KEY = "efr/failed"
# Ending: how long process 0 waits for the others to have said their error (or to have left) before it
# ends (its process holds the coordination service); how long every process waits at the end for the others.
LEAVE_TIMEOUT = 10
FINISH_TIMEOUT = 300
# The watchdog alone counts a process lost when its counter has not moved for this long: more than JAX's
# heartbeat, so that a process whose Python threads wait on a long call holding the interpreter lock (a
# compilation, say) is not taken for lost.  An error in a collective operation names a lost process sooner.
SILENT_TIMEOUT = 2 * HEARTBEAT_TIMEOUT
# An exception in the training thread that reads like a lost connection (LOST_CONNECTION) waits up to
# LOST_ERROR_GRACE seconds to learn which process went: a failed process's posted error, or the processes
# whose watchdog counter has not moved for SILENT_AFTER seconds (once a failed process had POSTED_GRACE
# seconds to post its error); any other exception waits OTHER_ERROR_GRACE seconds for the watchdog.
LOST_ERROR_GRACE = HEARTBEAT_TIMEOUT + 5 * WATCH_INTERVAL
OTHER_ERROR_GRACE = 3 * WATCH_INTERVAL
SILENT_AFTER = 3 * WATCH_INTERVAL
POSTED_GRACE = 2 * WATCH_INTERVAL
LOST_CONNECTION = re.compile(r"gloo|connection|socket|unavailable|deadline|peer|coordination|collective|barrier",
                             re.IGNORECASE)

_cluster = None  # this process's Cluster once efr.train.distributed.start joined (``joined``)
_watchdog = None  # its Watchdog thread (several processes)
_stderr = None  # a copy of its stderr's file descriptor, taken when it joined
_scratch = []  # its temporary run folders (scratch_runs_dir), removed when another process's failure ends it


def coordination_client():
    """JAX's client of the coordination service (its key-value store); None before joining."""
    from jax._src import distributed

    return distributed.global_state.client


def watch(cluster, on_peer_failure=None):
    """Right after joining several processes: end in order at exit (``finish``), keep stderr for the
    'error:' line, and start the Watchdog when there is an ``on_peer_failure`` to call."""
    atexit.register(finish)  # registered after JAX's own exit handler (at its import), so it runs first
    global _stderr
    _stderr = os.dup(2)  # where the 'error:' line goes, even while TensorFlow's import holds stderr (tfquiet)
    if on_peer_failure is not None:
        global _watchdog
        _watchdog = Watchdog(cluster, on_peer_failure)
        _watchdog.start()


def joined(cluster):
    """The last step of efr.train.distributed.start: from now on, on several processes, ``settle_error``,
    ``report_failure`` and ``finish`` act."""
    global _cluster
    _cluster = cluster


def remove_when_ended(folder):
    """Remove ``folder`` (this process's temporary run folder) if another process's failure ends this one."""
    _scratch.append(folder)


# ----------------------------------------------------------------------------------
# Ending: on an error (this process's or another's), and at the end of a run that went well
#
# Every way of ending after an error goes through _claim_stop: the first thread (the training thread
# with its own error, or the watchdog with another process's) ends the process; any other waits for it,
# so that each process says one 'error:' line.  Process 0 leaves last: its process holds JAX's
# coordination service, and the others cannot end cleanly once it has gone.

_stop_lock = threading.Lock()
_peer_failed = threading.Event()  # the watchdog found another process failed or gone (it ends this one)
_finishing = threading.Event()  # every process finished well: processes leaving are no failure


def _claim_stop():
    """Return in the first thread that ends this process; any later one waits here for good (the first exits)."""
    if _stop_lock.acquire(blocking=False):
        return
    while True:
        time.sleep(3600)


def _wait_for_keys(client, keys, timeout):
    deadline = time.monotonic() + timeout
    for key in keys:
        with contextlib.suppress(Exception):  # not set in time (a process that hangs): go on
            client.blocking_key_value_get(key, int(max(deadline - time.monotonic(), 0.05) * 1000))


def _leave_after_error(cluster, failed=()):
    """Say that this process ends; on process 0, first wait (bounded) until the others still there said so."""
    client = coordination_client()
    with contextlib.suppress(Exception):
        client.key_value_set(f"efr/leaving/{cluster.process_id}", "1")
    if cluster.process_id == 0:
        others = [p for p in range(1, cluster.num_processes) if p not in failed]
        _wait_for_keys(client, [f"efr/leaving/{p}" for p in others], LEAVE_TIMEOUT)
        if others:
            time.sleep(WATCH_INTERVAL)  # each says it leaves just before its 'error:' line: time to write it


def _posted(client, cluster):
    """(message, (failed process,)) that another process posted, or None."""
    try:
        posted = client.key_value_try_get(FAILED_KEY)
    except Exception:  # not posted (NOT_FOUND), or the coordinator is gone (the watchdog checks)
        return None
    me = cluster.process_id
    if not posted or posted.startswith(f"process {me}:"):
        return None  # this process's own error: its training thread reports it
    failed = posted.split(":", 1)[0].split()[-1]
    return f"{posted} (process {me} stopped too)", (int(failed),) if failed.isdigit() else ()


def _lost_message(cluster, gone):
    return (f"process {', '.join(map(str, gone))} stopped (killed, or its machine lost); process "
            f"{cluster.process_id} stopped too")


def _end_for_peer(cluster, message, failed, on_failure):
    """End this process with another process's failure: one 'error:' line (``on_failure``), in order."""
    _peer_failed.set()
    _claim_stop()  # waits for good when another thread is ending this process already
    _leave_after_error(cluster, failed)
    for folder in _scratch:  # this process's temporary run folder: nobody else removes it
        shutil.rmtree(folder, ignore_errors=True)
    if _stderr is not None:  # the training thread may be importing TensorFlow, whose start-up lines efr.io.tfquiet
        with contextlib.suppress(OSError):  # sends to a file shown after the import: this process ends first
            sys.stderr.flush()
            os.dup2(_stderr, 2)
    on_failure(message)
    while True:  # on_failure ends the process
        time.sleep(3600)


def settle_error(err, on_failure=None):
    """In the training thread, on ``err``: return if it is this process's own error (then log it and call
    ``report_failure``); else this process ends here with the error of the process that caused it.

    A process that is killed or fails mid-step makes the others' collective operations fail
    (``Gloo ... Connection reset by peer``) at once.  Such an error waits for the posted error
    of a failed process, or names the processes whose watchdog stopped counting for
    SILENT_AFTER seconds, or the watchdog's word, up to LOST_ERROR_GRACE seconds; any other
    error (not an EFRError or an interruption) waits OTHER_ERROR_GRACE seconds for the watchdog.
    ``on_failure(message)`` logs the message and ends the process (as the watchdog's).
    """
    cluster = _cluster
    if cluster is None or cluster.num_processes == 1:
        return
    if not isinstance(err, (EFRError, KeyboardInterrupt, SystemExit)):
        lost = bool(LOST_CONNECTION.search(f"{type(err).__name__} {err}"))
        began = time.monotonic()
        deadline = began + (LOST_ERROR_GRACE if lost else OTHER_ERROR_GRACE)
        while time.monotonic() < deadline:
            if _peer_failed.wait(WATCH_INTERVAL / 4):
                while True:  # the watchdog ends this process
                    time.sleep(3600)
            if not lost or on_failure is None or _watchdog is None or time.monotonic() - began < POSTED_GRACE:
                continue
            with contextlib.suppress(Exception):
                posted = _posted(coordination_client(), cluster)
                if posted:
                    _end_for_peer(cluster, *posted, on_failure)
            silent = _watchdog.silent(SILENT_AFTER)
            if silent:
                _end_for_peer(cluster, _lost_message(cluster, silent), tuple(silent), on_failure)
    _claim_stop()


def report_failure(err, strategy=None):
    """Tell the other processes that this one failed (they stop with its message).

    Waits (bounded) until the others have seen it; process 0 until they have said their error
    line, as its process holds the coordination service.  Log the error before calling this.
    ``strategy``: a JaxStrategy (efr.train.distributed), this process's when not given.
    """
    cluster = getattr(strategy, "cluster", None) if strategy else _cluster
    if cluster is None or cluster.num_processes == 1:
        return
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    with contextlib.suppress(Exception):
        client = coordination_client()
        client.key_value_set(FAILED_KEY, f"process {cluster.process_id}: {text}")
        if cluster.process_id == 0:
            _leave_after_error(cluster)
        else:  # the others' watchdogs read the message within WATCH_INTERVAL; leaving after that is safe
            others = [p for p in range(cluster.num_processes) if p != cluster.process_id]
            _wait_for_keys(client, [f"efr/leaving/{p}" for p in others], 3 * WATCH_INTERVAL)


def finish():
    """The end of a multi-process run that went well (an atexit handler): leave in order.

    Every process waits until the others end too (JAX's own shutdown barrier does not, in the
    recoverable mode) and stops its watchdog (a thread still inside JAX when Python shuts down
    aborts the process); then the others disconnect, and process 0 waits (bounded) until they
    have before its process, which holds the coordination service, ends.
    """
    cluster = _cluster
    if cluster is None or cluster.num_processes == 1 or _stop_lock.locked():
        return
    client = coordination_client()
    if client is None:
        return
    try:
        client.wait_at_barrier("efr/finished", FINISH_TIMEOUT * 1000)
        _finishing.set()
        if _watchdog is not None:
            _watchdog.join(LEAVE_TIMEOUT)
        client.wait_at_barrier("efr/finishing", FINISH_TIMEOUT * 1000)
    except Exception as err:  # another process failed meanwhile: its watchdog's message says which
        log.debug("leaving without the others (%s)", str(err).splitlines()[0] if str(err) else err)
        return
    if cluster.process_id == 0:
        everyone = list(range(cluster.num_processes))
        # get_live_nodes returns once every other process has disconnected (they do not call it)
        gone = threading.Thread(target=lambda: client.get_live_nodes(everyone), name="efr-leaving", daemon=True)
        gone.start()
        gone.join(LEAVE_TIMEOUT)
    else:
        import jax

        with contextlib.suppress(Exception):
            jax.distributed.shutdown()


class Watchdog(threading.Thread):
    """Calls ``on_failure(message)`` once another process posted an error or went silent.

    Every WATCH_INTERVAL seconds it raises this process's counter in JAX's key-value store,
    notes when each other process's counter last moved (``silent``) and reads the posted
    error.  A process whose counter has not moved for SILENT_TIMEOUT seconds is lost, and so is
    the coordinator when the store has not answered for SILENT_AFTER seconds (JAX's own view,
    get_live_nodes, is a barrier: it blocks until every live process asks too).  Only short
    calls into JAX: the thread can stop at once (``finish``).
    """

    def __init__(self, cluster, on_failure):
        super().__init__(name="efr-watchdog", daemon=True)
        self.cluster, self.on_failure = cluster, on_failure
        self.others = [p for p in range(cluster.num_processes) if p != cluster.process_id]
        self.seen = {p: (None, time.monotonic()) for p in self.others}

    def run(self):
        client = coordination_client()
        beat, answered = 0, time.monotonic()
        while not _finishing.wait(WATCH_INTERVAL):
            beat += 1
            try:
                client.key_value_set(f"efr/beat/{self.cluster.process_id}", str(beat), allow_overwrite=True)
                answered = time.monotonic()
            except Exception as err:
                if time.monotonic() - answered >= SILENT_AFTER and not _finishing.is_set():
                    _end_for_peer(self.cluster, f"process 0 (the coordinator, {self.cluster.coordinator}) stopped "
                                  f"answering ({str(err).splitlines()[0][:200]}); process {self.cluster.process_id} "
                                  "stopped too", (0,), self.on_failure)
            for other in self.others:
                try:
                    value = client.key_value_try_get(f"efr/beat/{other}")
                except Exception:  # not there yet
                    continue
                if value != self.seen[other][0]:
                    self.seen[other] = (value, time.monotonic())
            found = _posted(client, self.cluster)
            silent = self.silent(SILENT_TIMEOUT)
            if found is None and silent:
                found = _lost_message(self.cluster, silent), tuple(silent)
            if found is not None and not _finishing.is_set():
                _end_for_peer(self.cluster, *found, self.on_failure)

    def silent(self, seconds):
        """The other processes whose counter has not moved for ``seconds``."""
        now = time.monotonic()
        return [p for p, (_, changed) in self.seen.items() if now - changed >= seconds]
