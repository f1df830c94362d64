"""Peak memory of training against dataset size: streaming tf.data vs the original NumPy loading.

Writes two synthetic Datasets (default 500 and 5,000 images at 256 x 256; Valid and
Test hold 48 each, the rest is Train) under bench/out/memory/, then for each size
measures the peak resident memory (RSS) of

  efe_cnn.py   one epoch of the seed CNN at 256 x 256 through efr.data.pipelines (default
               cache="auto": 512 MB budget of decoded uint8 images; beyond it the
               pipeline streams from disk)
  original     the original project's loading: every Train/Valid/Test image read with
               cv2.imread into one NumPy array and divided by 255.0 (float64); loading
               only, no training, so its figure is a lower bound of the original's peak

Each measurement runs in its own child process; the peak is the child's ru_maxrss.
Images are quick to make: a few hundred rendered faces reused with fresh noise.

    python bench/bench_memory.py --sizes 500 5000
    python bench/bench_memory.py --sizes 150 600 --json bench/out/memory.json
"""

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import common  # noqa: E402  (bench/common.py: the --json result shape)

OUT = REPO / "bench" / "out" / "memory"
EVAL_IMAGES = 48  # per Valid and Test split
SIZE = 256


def make_dataset(root, count, seed=0, pool_size=160):
    """A Dataset folder of ``count`` noisy copies of ``pool_size`` rendered faces."""
    import numpy as np

    from efr.io.emotions import EMOTIONS
    from efr.faces.detect import center_box, crop_square, detect_faces, load_cascade, square_box
    from efr.io.imageio import write_image
    from efr.data.synthetic.render import render_face

    marker = root / f".complete-{count}"
    if marker.is_file():
        return root
    cascade = load_cascade()
    pool = []
    for i in range(pool_size):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        frame = render_face(1 + i // len(EMOTIONS), emotion, seed=seed, size=(340, 512))
        boxes = detect_faces(cascade, frame)
        box = square_box(boxes[0], frame.shape, 0.1) if boxes else center_box(frame.shape)
        pool.append((emotion, crop_square(frame, box, SIZE)))
    rng = np.random.default_rng(seed)
    train_count = count - 2 * EVAL_IMAGES
    for i in range(count):
        split = "Train" if i < train_count else ("Valid" if i < train_count + EVAL_IMAGES else "Test")
        emotion, face = pool[i % pool_size]
        noisy = np.clip(face + rng.normal(0, 6, face.shape), 0, 255).astype(np.uint8)
        write_image(root / split / emotion / f"img{i:05d}.png", noisy)
    marker.write_text("done\n")
    return root


def load_like_original(dataset):
    """The original efe_cnn.py's loading: cv2.imread every image, np.array, / 255.0."""
    import cv2
    import numpy as np

    arrays = {}
    for split in ("Train", "Valid", "Test"):
        images = [cv2.imread(str(p)) for p in sorted((Path(dataset) / split).glob("*/*.png"))]
        arrays[split] = np.array(images) / 255.0
    return sum(a.nbytes for a in arrays.values())


def child(argv):
    """Run one measured job in this process's child and print its peak RSS in MiB."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return result.returncode
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    print(f"PEAK_MIB {peak_kib / 1024:.1f}")
    return 0


def measure(argv):
    """Peak RSS (MiB) of ``argv`` run as the only child of a fresh wrapper process."""
    result = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if line.startswith("PEAK_MIB"):
            return float(line.split()[1])
    raise RuntimeError(f"measurement failed: {' '.join(argv)}\n{result.stderr[-3000:]}")


def available_mib():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--original":
        nbytes = load_like_original(sys.argv[2])
        print(f"arrays {nbytes / 2**20:.0f} MiB")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--img-size", type=int, default=SIZE,
                        help="efe_cnn.py's --img-size (the images on disk stay %(default)s px; smaller is faster)")
    common.add_json_option(parser)
    args = parser.parse_args(argv)

    env_note = f"{os.cpu_count()} CPUs; other processes may share them"
    results = []
    for count in args.sizes:
        dataset = OUT / f"n{count}" / "Dataset"
        print(f"making {count} images in {dataset} ...", flush=True)
        make_dataset(dataset, count)
        runs = OUT / f"n{count}" / "runs"
        ours = measure([sys.executable, str(REPO / "efe_cnn.py"), "--dataset", str(dataset), "--runs-dir", str(runs),
                        "--name", "mem", "--exist-ok", "--epochs", str(args.epochs), "--img-size", str(args.img_size),
                        "--quiet"])
        float64_mib = count * SIZE * SIZE * 3 * 8 / 2**20
        if available_mib() > 1.6 * (float64_mib * 1.2 + 500):
            original = measure([sys.executable, __file__, "--original", str(dataset)])
        else:
            original = None
            print(f"skipping the original loading at {count} images: it needs about {float64_mib * 1.2:.0f} MiB "
                  f"and only {available_mib():.0f} MiB are available", flush=True)
        results.append((count, ours, original, float64_mib))
        print(f"{count:6d} images: efe_cnn.py peak {ours:8.0f} MiB; original loading peak "
              f"{'skipped' if original is None else f'{original:.0f} MiB'} (float64 arrays alone "
              f"{float64_mib:.0f} MiB)", flush=True)

    print(f"\npeak RSS, {SIZE} x {SIZE} images, seed CNN at {args.img_size} px, {args.epochs} epoch(s) ({env_note})")
    print(f"{'images':>8} {'efe_cnn.py MiB':>15} {'original MiB':>13}")
    for count, ours, original, _ in results:
        print(f"{count:8d} {ours:15.0f} {('-' if original is None else f'{original:.0f}'):>13}")
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(f"efe_cnn.py: {large[0]} images use {large[1] / small[1]:.2f}x the memory of {small[0]} (target < 1.3x)")
        if small[2] and large[2]:
            print(f"original:   {large[0]} images use {large[2] / small[2]:.2f}x the memory of {small[0]}")
    if args.json:
        rows = []
        for count, ours, original, float64_mib in results:
            rows.append(common.row(f"{count} images: efe_cnn.py peak RSS", ours, "MiB", f"{args.epochs} epoch(s)"))
            rows.append(common.row(f"{count} images: original loading peak RSS",
                                   "skipped" if original is None else original, "" if original is None else "MiB",
                                   f"float64 arrays alone {float64_mib:.0f} MiB"))
        targets = []
        if len(results) >= 2:
            small, large = results[0], results[-1]
            targets.append(common.target(f"efe_cnn.py peak RSS, {large[0]} / {small[0]} images", large[1] / small[1],
                                         1.3, "<", f"{large[1]:.0f} MiB / {small[1]:.0f} MiB"
                                         + (f"; original loading {large[2] / small[2]:.2f}x" if small[2] and large[2]
                                            else "")))
        notes = [f"peak RSS = ru_maxrss of a child process; {SIZE} x {SIZE} images, seed CNN at {args.img_size} px; "
                 f"{env_note}"]
        common.write_result(args.json, common.result("memory", common.command_line(), rows, targets, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
