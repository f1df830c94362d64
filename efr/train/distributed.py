"""Training over several processes and machines: Keras' JAX backend with keras.distribution.DataParallel.

``--distribute multi-worker`` runs the same command on every process.  Which process is
which comes from the variables Keras itself reads (keras.distribution.initialize)::

    KERAS_DISTRIBUTION_JOB_ADDRESSES   host:port of process 0 (the coordinator), or every process's, comma-separated
    KERAS_DISTRIBUTION_NUM_PROCESSES   how many processes train together
    KERAS_DISTRIBUTION_PROCESS_ID      this process, 0 .. N-1

None of them set: one process over this machine's devices (every GPU, or ``cpu_devices``
logical CPUs).  TensorFlow's MultiWorkerMirroredStrategy is not used: Keras 3's fit fails
under it (keras-team/keras#20585).  The Keras backend is fixed when Keras is imported, so
``use_jax_backend`` must run before anything imports it.

Every process runs every step (a collective left out hangs the others, model.save
included); only process 0 writes the run folder: the others write into a private
temporary folder that is removed at the end (``scratch_runs_dir``).  Values that only
process 0 reads from disk (a resumed run's checkpoint) reach the others through the JAX
coordination service (``share_from_chief``).  A process that fails posts its error there;
a watchdog thread in every process stops it when another process posted one or stopped
answering (killed, machine lost), so no process waits for ever.

JAX's own reaction to a lost process is to abort every other process at once (a C++ fatal
error and stack trace, no word from efr); the coordination service therefore runs in
JAX's "recoverable" mode, which leaves the reaction to the watchdog, and the processes
leave in order at the end (``finish``): process 0, whose process holds the coordination
service, last.  A lost process 0 itself still ends the others through JAX (what is left:
docs/train.md).
"""

import atexit
import contextlib
import importlib.util
import logging
import os
import pickle
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass

from efr.io.errors import EFRError

log = logging.getLogger(__name__)

MIRRORED = "mirrored"
MULTI_WORKER = "multi-worker"
MODES = (MIRRORED, MULTI_WORKER)

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"

INSTALL_HINT = "pip install 'efr[distributed]' (JAX for CPUs; on NVIDIA GPUs: pip install 'jax[cuda12]')"

# Bounded waits (seconds): for every process to join, for a silent process to count as gone (JAX's
# heartbeat, and efr's watchdog's: a counter each process's watchdog raises in JAX's key-value store every
# WATCH_INTERVAL seconds), for process 0's shared values.
JOIN_TIMEOUT = 120
HEARTBEAT_TIMEOUT = 20
SHARE_TIMEOUT = 600
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


def distribute_mode(value):
    """'' (no distribution), 'mirrored' or 'multi-worker' from a setting (True, the old flag, is 'mirrored')."""
    if value is True:
        return MIRRORED
    if value in (None, False, "", "none"):
        return ""
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise EFRError(f"--distribute {value}: choose {' or '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class Cluster:
    """Where this process stands: the coordinator's address, how many processes, which one this is."""

    coordinator: str = None
    num_processes: int = 1
    process_id: int = 0


def cluster_from_env(environ=None):
    """The Cluster the KERAS_DISTRIBUTION_* variables describe; a clear EFRError for a bad or missing one."""
    environ = os.environ if environ is None else environ
    names = (ENV_ADDRESSES, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
    given = [name for name in names if environ.get(name, "").strip()]
    if not given:
        return Cluster()
    if len(given) != len(names):
        missing = ", ".join(name for name in names if name not in given)
        raise EFRError(f"--distribute multi-worker: {', '.join(given)} set but {missing} not: set all three "
                       "on every process (docs/train.md, 'Several devices and several machines')")
    values = {}
    for name in (ENV_NUM_PROCESSES, ENV_PROCESS_ID):
        try:
            values[name] = int(environ[name])
        except ValueError:
            raise EFRError(f"{name}={environ[name]!r}: give a whole number") from None
    count, rank = values[ENV_NUM_PROCESSES], values[ENV_PROCESS_ID]
    if count < 1:
        raise EFRError(f"{ENV_NUM_PROCESSES}={count}: need at least 1")
    if not 0 <= rank < count:
        raise EFRError(f"{ENV_PROCESS_ID}={rank}: must be 0 .. {count - 1} ({ENV_NUM_PROCESSES}={count})")
    addresses = [a.strip() for a in environ[ENV_ADDRESSES].split(",") if a.strip()]
    if len(addresses) > 1 and len(addresses) != count:
        raise EFRError(f"{ENV_ADDRESSES} lists {len(addresses)} addresses but {ENV_NUM_PROCESSES}={count}: "
                       "give process 0's host:port alone, or one per process")
    host, _, port = addresses[0].rpartition(":")
    if not host or not port.isdigit():
        raise EFRError(f"{ENV_ADDRESSES}={environ[ENV_ADDRESSES]!r}: give process 0's address as host:port")
    return Cluster(addresses[0], count, rank)


def use_jax_backend(cpu_devices=1):
    """Make Keras load its JAX backend (call before Keras is imported); a clear EFRError when it cannot.

    ``cpu_devices`` > 1 splits a machine without GPUs into that many JAX CPU devices (as
    --cpu-devices does for MirroredStrategy); JAX reads it when it starts.
    """
    if importlib.util.find_spec("jax") is None:
        raise EFRError(f"--distribute multi-worker trains on Keras' JAX backend, and JAX is not installed: "
                       f"{INSTALL_HINT}")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != "jax":
            raise EFRError(f"--distribute multi-worker needs Keras' JAX backend but Keras was already loaded with "
                           f"{keras.backend.backend()}: start a fresh process, or set KERAS_BACKEND=jax")
    os.environ["KERAS_BACKEND"] = "jax"
    if cpu_devices > 1 and "jax" not in sys.modules:
        flag = f"--xla_force_host_platform_device_count={int(cpu_devices)}"
        if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


class JaxStrategy:
    """What the training code asks of a tf.distribute strategy, for keras.distribution.DataParallel on JAX."""

    def __init__(self, cluster, devices):
        self.cluster = cluster
        self.devices = list(devices)
        self.num_replicas_in_sync = len(self.devices)
        self.extended = self  # strategy_info reads strategy.extended.worker_devices
        self.worker_devices = self.devices
        self._shared = 0

    @property
    def process_id(self):
        return self.cluster.process_id

    @property
    def num_processes(self):
        return self.cluster.num_processes

    @property
    def is_chief(self):
        return self.cluster.process_id == 0

    @property
    def data_shard(self):
        """(process, processes): each process trains on its slice of every batch."""
        return (self.process_id, self.num_processes)

    def localize(self, built):
        """Replace ``built.model`` by a copy on this process's devices alone, and end the distribution.

        After training, each process predicts by itself (Keras cannot gather predictions
        spread over several processes); the weights, the same everywhere, are copied.
        """
        import keras

        weights = built.model.get_weights()  # replicated on every process: each can read them
        keras.distribution.set_distribution(None)
        copy = keras.models.clone_model(built.model)
        copy.set_weights(weights)
        built.model = copy

    def scope(self):
        return contextlib.nullcontext()  # the distribution is global (keras.distribution.set_distribution)

    def share_from_chief(self, value):
        """Process 0's ``value`` on every process (each must call this in the same order)."""
        if self.num_processes == 1:
            return value
        self._shared += 1
        key = f"efr/shared/{self._shared}"
        client = _client()
        if self.is_chief:
            client.key_value_set_bytes(key, pickle.dumps(value))
            return value
        return pickle.loads(client.blocking_key_value_get_bytes(key, SHARE_TIMEOUT * 1000))


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def start(cluster, on_peer_failure=None):
    """Join the cluster (JAX's coordination service) and make every Keras model train data-parallel.

    Returns a JaxStrategy.  ``on_peer_failure(message)`` is called from a watchdog thread
    when another process fails or stops answering; it should log the message and end this
    process at once (the command logs it as its one 'error:' line and exits).
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise EFRError(f"--distribute multi-worker needs Keras' JAX backend, not {keras.backend.backend()}: "
                       "set KERAS_BACKEND=jax before starting")
    if cluster.num_processes > 1:
        log.info("process %d of %d: joining %s", cluster.process_id, cluster.num_processes, cluster.coordinator)
        try:
            # A lost or failed process is the watchdog's to report; without this JAX aborts every other process
            # at once (a C++ fatal error and stack trace, nothing that says which process went).
            jax.config.update("jax_enable_recoverability", True)
        except Exception:  # an older JAX without the setting: its own abort stays
            log.debug("this JAX has no jax_enable_recoverability", exc_info=True)
        try:
            # keras.distribution.initialize does the same with the same variables, but cannot bound the waits.
            jax.distributed.initialize(
                coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
                process_id=cluster.process_id, initialization_timeout=JOIN_TIMEOUT,
                heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT, shutdown_timeout_seconds=HEARTBEAT_TIMEOUT,
            )
        except Exception as err:  # jaxlib's errors have no public class
            raise EFRError(f"process {cluster.process_id}: could not join the {cluster.num_processes} processes "
                           f"at {cluster.coordinator} within {JOIN_TIMEOUT} s ({str(err).splitlines()[0]}); start "
                           f"the same command on every process") from err
        atexit.register(finish)  # registered after JAX's own exit handler (at its import), so it runs first
        global _stderr
        _stderr = os.dup(2)  # where the 'error:' line goes, even while TensorFlow's import holds stderr (tfquiet)
        if on_peer_failure is not None:
            global _watchdog
            _watchdog = Watchdog(cluster, on_peer_failure)
            _watchdog.start()
    devices = keras.distribution.list_devices()
    # Each process feeds its own slice of the training batches (make_dataset's shard) and the whole validation
    # batch (its loss is a mean, the same over the copies), so Keras must not shard the data again.
    distribution = _even_data_parallel()(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    global _current
    _current = JaxStrategy(cluster, [str(d) for d in devices])
    return _current


_current = None  # the JaxStrategy of this process once start() joined
_watchdog = None  # its Watchdog thread (several processes)
_stderr = None  # a copy of its stderr's file descriptor, taken when it joined
_scratch = []  # its temporary run folders (scratch_runs_dir), removed when another process's failure ends it


# ----------------------------------------------------------------------------------
# Batches that split evenly over this process's devices


def _even_data_parallel():
    """keras.distribution.DataParallel whose datasets pass through ``even_batches`` (a class made on first use:
    Keras may only be imported once its backend is chosen)."""
    import jax
    import keras

    class EvenDataParallel(keras.distribution.DataParallel):
        """DataParallel whose validation batches split evenly over this process's devices (``even_batches``)."""

        def distribute_dataset(self, dataset):  # Keras calls it for every tf.data.Dataset given to fit
            return even_batches(super().distribute_dataset(dataset), jax.local_device_count())

    return EvenDataParallel


def even_batches(dataset, devices):
    """``dataset`` with every batch a multiple of ``devices`` long, so that each device gets an equal slice.

    A batch of fixed size (the training batches: make_dataset drops an epoch's last, smaller
    one) must already be one: else a clear EFRError.  Batches of varying size (validation:
    all of Valid, the last batch smaller) are read once to see whether one does not split;
    then every row is repeated ``devices`` times in a row and batched again at the first
    batch's size, which leaves every batch a multiple of ``devices`` and counts every row
    ``devices`` times, so the loss and every metric (an average over rows, weighted or not)
    are exactly those over the rows.  The price: that validation does the work of one device.
    """
    import tensorflow as tf

    if devices <= 1:
        return dataset
    first = tf.nest.flatten(dataset.element_spec)[0]
    size = first.shape[0] if first.shape.rank else None
    if size is not None:
        if size % devices:
            raise EFRError(f"a batch of {size} images cannot be split over this process's {devices} devices: "
                           f"make --batch-size a multiple of {devices} x the number of processes")
        return dataset
    if int(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY:
        return dataset  # not read to the end here; its uneven batches, if any, stop the fit (IndivisibleError)

    def look(state, *element):
        n = tf.shape(tf.nest.flatten(element)[0])[0]
        return state[0] + n, state[1] + tf.cast(n % devices != 0, tf.int32), tf.maximum(state[2], n)

    rows, uneven, batch = (int(v) for v in dataset.reduce((0, 0, 0), look))
    if not uneven:
        return dataset
    log.info("validation: %d images in batches that do not split over this process's %d devices: each image "
             "%d times, in batches of %d", rows, devices, devices, batch)

    def repeated(*element):
        return tf.data.Dataset.from_tensors(element if len(element) > 1 else element[0]).repeat(devices)

    batches = -(-rows * devices // batch)  # told, so that Keras knows the epoch's end (else it warns)
    return (dataset.unbatch().flat_map(repeated).batch(batch)
            .apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE))


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
    client = _client()
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
    strategy = _current
    if not isinstance(strategy, JaxStrategy) or strategy.num_processes == 1:
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
                posted = _posted(_client(), strategy.cluster)
                if posted:
                    _end_for_peer(strategy.cluster, *posted, on_failure)
            silent = _watchdog.silent(SILENT_AFTER)
            if silent:
                _end_for_peer(strategy.cluster, _lost_message(strategy.cluster, silent), tuple(silent), on_failure)
    _claim_stop()


def report_failure(err, strategy=None):
    """Tell the other processes that this one failed (they stop with its message).

    Waits (bounded) until the others have seen it; process 0 until they have said their error
    line, as its process holds the coordination service.  Log the error before calling this.
    """
    strategy = strategy or _current
    if not isinstance(strategy, JaxStrategy) or strategy.num_processes == 1:
        return
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    with contextlib.suppress(Exception):
        client = _client()
        client.key_value_set(FAILED_KEY, f"process {strategy.process_id}: {text}")
        if strategy.is_chief:
            _leave_after_error(strategy.cluster)
        else:  # the others' watchdogs read the message within WATCH_INTERVAL; leaving after that is safe
            others = [p for p in range(strategy.num_processes) if p != strategy.process_id]
            _wait_for_keys(client, [f"efr/leaving/{p}" for p in others], 3 * WATCH_INTERVAL)


def finish():
    """The end of a multi-process run that went well (an atexit handler): leave in order.

    Every process waits until the others end too (JAX's own shutdown barrier does not, in the
    recoverable mode) and stops its watchdog (a thread still inside JAX when Python shuts down
    aborts the process); then the others disconnect, and process 0 waits (bounded) until they
    have before its process, which holds the coordination service, ends.
    """
    strategy = _current
    if not isinstance(strategy, JaxStrategy) or strategy.num_processes == 1 or _stop_lock.locked():
        return
    client = _client()
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
    if strategy.is_chief:
        everyone = list(range(strategy.num_processes))
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
        client = _client()
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


def scratch_runs_dir(strategy):
    """Where this process writes its run folder: None (the real one) on process 0 and off multi-worker,
    else a private temporary folder (the caller removes it)."""
    if not isinstance(strategy, JaxStrategy) or strategy.is_chief:
        return None
    import tempfile

    folder = tempfile.mkdtemp(prefix=f"efr-process{strategy.process_id}-")
    _scratch.append(folder)
    return folder
