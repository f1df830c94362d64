"""Training throughput: the tf.data pipeline from PNG files against images already in memory.

Writes a synthetic Dataset of --images 256 x 256 face PNGs (bench/out/pipeline/), then
fits the seed CNN on them three ways, each for a warm-up epoch and --epochs timed ones:

  memory    the same images as one float32 NumPy array, model.fit(x, y): the compute
            ceiling (no decoding at all)
  pipeline  efr.data.pipelines.make_dataset from the files with the default cache="auto"
            (decoded uint8 images cached in memory when they fit, as in a real run)
  stream    efr.data.pipelines.make_dataset with cache="none": every epoch re-reads and decodes
            every PNG (what runs whose images do not fit in the cache budget get)

The rounds are interleaved (memory, pipeline, stream, memory, ...) so that load from
other processes hits all three alike; each way's rate is its fastest round, and the
ratio is that rate over the ceiling's.

    python bench/bench_pipeline.py --images 320 --epochs 1 --rounds 4
    python bench/bench_pipeline.py --images 64 --epochs 1 --json bench/out/pipeline.json
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402  (bench/common.py: the --json result shape)
import numpy as np  # noqa: E402

from efr.io.emotions import EMOTIONS  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def make_faces(folder, count, size=256, seed=0):
    """count PNG faces (synthetic, Haar-cropped) in folder/<Emotion>/; returns (paths, labels)."""
    from efr.faces.detect import center_box, crop_square, detect_faces, load_cascade, square_box
    from efr.io.imageio import write_image
    from efr.data.synthetic.render import render_face

    cascade = load_cascade()
    paths, labels = [], []
    for i in range(count):
        emotion_index = i % len(EMOTIONS)
        subject = 1 + i // len(EMOTIONS)
        path = Path(folder) / EMOTIONS[emotion_index] / f"s{subject:03d}_{i:05d}.png"
        if not path.is_file():
            frame = render_face(subject, EMOTIONS[emotion_index], seed=seed, size=(340, 512))
            boxes = detect_faces(cascade, frame)
            box = square_box(boxes[0], frame.shape, 0.1) if boxes else center_box(frame.shape)
            write_image(path, crop_square(frame, box, size))
        paths.append(path)
        labels.append(emotion_index)
    return paths, labels


def timed_fit(model, epochs, **fit_args):
    started = time.perf_counter()
    model.fit(epochs=epochs, verbose=0, **fit_args)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of the three ways (the fastest counts)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    common.add_json_option(parser)
    args = parser.parse_args(argv)

    import keras

    from efr.data.pipelines import make_dataset
    from efr.io.imageio import read_image
    from efr.models.build import compile_model, seed_cnn

    folder = OUT / "pipeline" / f"faces{args.size}"
    print(f"making {args.images} synthetic {args.size} px faces in {folder} (kept for re-runs)", flush=True)
    paths, labels = make_faces(folder, args.images, args.size)
    keras.utils.set_random_seed(0)
    x = np.stack([read_image(p)[:, :, ::-1] for p in paths]).astype(np.float32)  # RGB, as the pipeline gives
    y = np.eye(len(EMOTIONS), dtype=np.float32)[labels]

    ways = {
        "memory": dict(x=x, y=y, batch_size=args.batch_size, shuffle=True),
        "pipeline": dict(x=make_dataset(paths, labels, len(EMOTIONS), args.size, args.batch_size, shuffle=True,
                                        cache="auto")),
        "stream": dict(x=make_dataset(paths, labels, len(EMOTIONS), args.size, args.batch_size, shuffle=True,
                                      cache="none")),
    }
    models = {}
    for name, fit_args in ways.items():  # one model per way, each warmed up (tracing, cache fill)
        models[name] = compile_model(seed_cnn(len(EMOTIONS), args.size), 1e-3)
        seconds = timed_fit(models[name], 1, **fit_args)
        print(f"warm-up {name:8s} {seconds:6.1f} s", flush=True)
    best = {name: float("inf") for name in ways}
    for round_index in range(args.rounds):
        for name, fit_args in ways.items():
            seconds = timed_fit(models[name], args.epochs, **fit_args)
            best[name] = min(best[name], seconds)
            print(f"round {round_index + 1} {name:8s} {args.epochs * args.images / seconds:7.1f} images/s", flush=True)
    # The fastest round of each way: a round slowed by other work on the machine says nothing about the way.
    rate = {name: args.epochs * args.images / best[name] for name in ways}
    print(f"\n{args.images} images {args.size} x {args.size}, batch {args.batch_size}, seed CNN, fastest of "
          f"{args.rounds} rounds of {args.epochs} timed epoch(s) per way, {os.cpu_count()} CPUs")
    for name in ways:
        print(f"  {name:8s} {rate[name]:7.1f} images/s   ratio to in-memory ceiling {rate[name] / rate['memory']:.3f}")
    if args.json:
        labels = {"memory": "in memory: float32 NumPy array, model.fit(x, y) (ceiling)",
                  "pipeline": 'efr.data.pipelines.make_dataset from PNGs, cache="auto" (default)',
                  "stream": 'efr.data.pipelines.make_dataset, cache="none" (decode every epoch)'}
        rows = [common.row(labels[name], rate[name], "images/s",
                           f"ratio to the ceiling {rate[name] / rate['memory']:.3f}") for name in ways]
        detail = (f"{args.images} images {args.size} px, batch {args.batch_size}, seed CNN, fastest of {args.rounds} "
                  f"interleaved rounds of {args.epochs} timed epoch(s) per way")
        targets = [common.target('make_dataset cache="auto" / in-memory ceiling', rate["pipeline"] / rate["memory"],
                                 0.9, ">=", detail)]
        notes = [f"{os.cpu_count()} CPUs; load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}"]
        common.write_result(args.json, common.result("pipeline", common.command_line(), rows, targets, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
