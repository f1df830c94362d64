"""One process of tests/test_distributed.py: trains a tiny model with --distribute multi-worker's machinery.

Run as ``python distributed_worker.py OUT [fail]`` with the KERAS_DISTRIBUTION_* variables set.
Writes OUT/process<k>.npz (final weights) on every process and OUT/run/model.keras through
efr.train.distributed.scratch_runs_dir (process 0's is the real one).  ``fail``: process 1
raises an EFRError after joining, as efr train would; the others must stop with its message.
"""

import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from efr.train import distributed

STEPS, BATCH, FEATURES, CLASSES, LR = 6, 8, 5, 3, 0.1


def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(STEPS * BATCH + 3, FEATURES)).astype("float32")  # + 3: an uneven last batch, dropped
    y = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, len(x))]
    return x, y


def initial_weights():
    rng = np.random.default_rng(2)
    return [rng.normal(scale=0.5, size=(FEATURES, 4)).astype("float32"), np.zeros(4, "float32"),
            rng.normal(scale=0.5, size=(4, CLASSES)).astype("float32"), np.zeros(CLASSES, "float32")]


def model():
    import keras

    net = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(4, activation="tanh"),
                            keras.layers.Dense(CLASSES, activation="softmax")])
    net.set_weights(initial_weights())
    net.compile(optimizer=keras.optimizers.SGD(LR), loss="categorical_crossentropy")
    return net


def batches(shard=None):
    """The training batches, as make_dataset cuts them: full batches, each process its slice."""
    import tensorflow as tf

    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True)
    if shard:
        process, processes = shard
        part = BATCH // processes
        dataset = dataset.map(lambda a, b: (a[process * part:(process + 1) * part], b[process * part:(process + 1) * part]))
    return dataset


def main(out, fail=False):
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def stop(message):
        logging.getLogger("efr").error("error: %s", message)
        logging.shutdown()
        os._exit(2)

    distributed.use_jax_backend(cpu_devices=1)
    cluster = distributed.cluster_from_env()
    strategy = distributed.start(cluster, on_peer_failure=stop)
    if fail and strategy.process_id == 1:
        err = distributed.EFRError("the dataset is missing here")
        logging.getLogger("efr").error("error: %s", err)  # as efr train's run_multi_worker does
        distributed.report_failure(err)
        logging.shutdown()
        os._exit(2)
    import keras

    keras.utils.set_random_seed(0)  # the same on every process, as efr train's --seed (Keras checks)
    net = model()
    net.fit(batches(strategy.data_shard), epochs=2, verbose=0, shuffle=False)
    np.savez(Path(out) / f"process{strategy.process_id}.npz", *net.get_weights())
    scratch = distributed.scratch_runs_dir(strategy)
    run_dir = Path(scratch or out) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    net.save(run_dir / "model.keras")  # on every process: Keras' save joins them
    if scratch:
        shutil.rmtree(scratch)
    print(f"process {strategy.process_id} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], fail="fail" in sys.argv[2:])
