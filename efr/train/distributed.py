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
"""

import contextlib
import importlib.util
import logging
import os
import pickle
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

# Bounded waits (seconds): for every process to join, for a silent process to count as gone,
# for process 0's shared values.  The watchdog looks every WATCH_INTERVAL seconds.
JOIN_TIMEOUT = 120
HEARTBEAT_TIMEOUT = 20
SHARE_TIMEOUT = 600
WATCH_INTERVAL = 1.0
FAILED_KEY = "efr/failed"


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
    when another process fails or stops answering; it should end this process (the
    command logs the message and exits).
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise EFRError(f"--distribute multi-worker needs Keras' JAX backend, not {keras.backend.backend()}: "
                       "set KERAS_BACKEND=jax before starting")
    if cluster.num_processes > 1:
        log.info("process %d of %d: joining %s", cluster.process_id, cluster.num_processes, cluster.coordinator)
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
        if on_peer_failure is not None:
            Watchdog(cluster, on_peer_failure).start()
    devices = keras.distribution.list_devices()
    # Each process feeds its own slice of the training batches (make_dataset's shard) and the whole validation
    # batch (its loss is a mean, the same over the copies), so Keras must not shard the data again.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    global _current
    _current = JaxStrategy(cluster, [str(d) for d in devices])
    return _current


_current = None  # the JaxStrategy of this process once start() joined


def report_failure(err, strategy=None):
    """Tell the other processes that this one failed (they stop with its message).

    Waits (a few watchdog intervals at most) until the others have gone: a process that
    ends at once is seen by JAX's coordination service first, which ends the others
    without a word.  Log the error before calling this.
    """
    strategy = strategy or _current
    if not isinstance(strategy, JaxStrategy) or strategy.num_processes == 1:
        return
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    others = [p for p in range(strategy.num_processes) if p != strategy.process_id]
    with contextlib.suppress(Exception):
        client = _client()
        client.key_value_set(FAILED_KEY, f"process {strategy.process_id}: {text}")
        deadline = time.monotonic() + 3 * WATCH_INTERVAL
        for other in others:  # each watchdog says it has seen the message
            wait_ms = int(max(deadline - time.monotonic(), 0.05) * 1000)
            client.blocking_key_value_get(f"efr/seen/{other}", wait_ms)


class Watchdog(threading.Thread):
    """Calls ``on_failure(message)`` once another process posted an error or stopped answering."""

    def __init__(self, cluster, on_failure):
        super().__init__(name="efr-watchdog", daemon=True)
        self.cluster, self.on_failure = cluster, on_failure

    def run(self):
        client = _client()
        everyone = list(range(self.cluster.num_processes))
        while True:
            time.sleep(WATCH_INTERVAL)
            try:
                posted = client.key_value_try_get(FAILED_KEY)
            except Exception:  # not posted (NOT_FOUND), or the coordinator is gone (checked below)
                posted = None
            if posted:
                with contextlib.suppress(Exception):
                    client.key_value_set(f"efr/seen/{self.cluster.process_id}", "1")
                if not posted.startswith(f"process {self.cluster.process_id}:"):
                    self.on_failure(f"{posted} (process {self.cluster.process_id} stopped too)")
                return
            try:
                live = set(client.get_live_nodes(everyone))
            except Exception as err:
                self.on_failure(f"process 0 (the coordinator, {self.cluster.coordinator}) stopped answering "
                                f"({str(err).splitlines()[0][:200]}); process {self.cluster.process_id} stopped too")
                return
            gone = [str(p) for p in everyone if p not in live]
            if gone:
                self.on_failure(f"process {', '.join(gone)} stopped (killed, or its machine lost); process "
                                f"{self.cluster.process_id} stopped too")
                return


def scratch_runs_dir(strategy):
    """Where this process writes its run folder: None (the real one) on process 0 and off multi-worker,
    else a private temporary folder (the caller removes it)."""
    if not isinstance(strategy, JaxStrategy) or strategy.is_chief:
        return None
    import tempfile

    return tempfile.mkdtemp(prefix=f"efr-process{strategy.process_id}-")
