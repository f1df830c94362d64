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
coordination service (``share_from_chief``).  A process that fails or is lost ends every
other, each with one 'error:' line, and the processes leave in order at the end:
efr.train.watchdog (the watchdog, the error handling, ``finish``).
"""

import contextlib
import importlib.util
import logging
import os
import pickle
import sys
from dataclasses import dataclass

from efr.io.errors import EFRError
from efr.train.watchdog import HEARTBEAT_TIMEOUT, coordination_client, joined, remove_when_ended, watch
from efr.train.watchdog import finish, report_failure, settle_error  # noqa: F401 - also imported from here

log = logging.getLogger(__name__)

MIRRORED = "mirrored"
MULTI_WORKER = "multi-worker"
MODES = (MIRRORED, MULTI_WORKER)

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"

INSTALL_HINT = "pip install 'efr[distributed]' (JAX for CPUs; on NVIDIA GPUs: pip install 'jax[cuda12]')"

# Bounded waits (seconds): for every process to join, for process 0's shared values (for a silent process to
# count as gone: efr.train.watchdog's HEARTBEAT_TIMEOUT).
JOIN_TIMEOUT = 120
SHARE_TIMEOUT = 600


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
        client = coordination_client()
        if self.is_chief:
            client.key_value_set_bytes(key, pickle.dumps(value))
            return value
        return pickle.loads(client.blocking_key_value_get_bytes(key, SHARE_TIMEOUT * 1000))


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
        watch(cluster, on_peer_failure)
    devices = keras.distribution.list_devices()
    # Each process feeds its own slice of the training batches (make_dataset's shard) and the whole validation
    # batch (its loss is a mean, the same over the copies), so Keras must not shard the data again.
    distribution = _even_data_parallel()(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    strategy = JaxStrategy(cluster, [str(d) for d in devices])
    joined(cluster)
    return strategy


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


def scratch_runs_dir(strategy):
    """Where this process writes its run folder: None (the real one) on process 0 and off multi-worker,
    else a private temporary folder (the caller removes it)."""
    if not isinstance(strategy, JaxStrategy) or strategy.is_chief:
        return None
    import tempfile

    folder = tempfile.mkdtemp(prefix=f"efr-process{strategy.process_id}-")
    remove_when_ended(folder)
    return folder
