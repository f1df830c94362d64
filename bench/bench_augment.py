"""Benchmark: data_aug.py against the seed project's per-file augmentation loop.

The seed project read each photo with cv2.imread and wrote its twelve outputs with
cv2.imwrite, one file after another.  This script times that loop and EFR's
``--recipe original`` (the same twelve outputs, like for like) on the same photos,
plus EFR's default recipe, in one run so that the ratios share the machine's load.

    python bench/bench_augment.py                   # 200 synthetic 256x256 faces
    python bench/bench_augment.py --photos 100 --workers 2
    python bench/bench_augment.py --photos 50 --repeats 2 --json bench/out/augment.json

Photos: synthetic RaFD-like portraits (efr.data.synthetic.render), face found with the Haar
cascade and cropped to 256x256 as crop.py does, written as PNG into a Dataset layout
under bench/out/ (git-ignored).  Prints photos/s and output files/s of each method
and the ratios.
"""

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402  (bench/common.py: the --json result shape)

from efr.data import augment  # noqa: E402
from efr.data.augment_stage import augment_dataset  # noqa: E402
from efr.io.emotions import EMOTIONS  # noqa: E402
from efr.faces.detect import center_box, crop_square, detect_faces, load_cascade, square_box  # noqa: E402
from efr.io.imageio import default_png_writer, write_image  # noqa: E402
from efr.io.manifest import write_manifest  # noqa: E402
from efr.data.synthetic.render import render_face  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "augment"


def make_photos(dataset, count, size=256, seed=0):
    """``count`` cropped synthetic faces in dataset/Train/<Emotion>/, with a manifest."""
    cascade = load_cascade()
    rows = []
    subjects = -(-count // len(EMOTIONS))
    for index in range(count):
        subject, emotion = index // len(EMOTIONS) + 1, EMOTIONS[index % len(EMOTIONS)]
        frame = render_face(subject, emotion, seed=seed, size=(340, 512))
        boxes = detect_faces(cascade, frame)
        box = square_box(boxes[0], frame.shape, margin=0.1) if boxes else center_box(frame.shape)
        rel = f"Train/{emotion}/synthetic_{subject:02d}_{emotion.lower()}.png"
        write_image(dataset / rel, crop_square(frame, box, size))
        rows.append({"source": rel, "subject": f"{subject:02d}", "emotion": emotion, "split": "Train",
                     "output": rel, "status": "ok", "kind": "original"})
    write_manifest(dataset, rows)
    return sorted(dataset.glob("Train/*/*.png")), subjects


def seed_project_loop(paths, out_dir, three_channel=False):
    """The seed project's loop, as it was: imread, twelve transforms, imwrite each, in order.

    Its grey and binarised outputs are 1-channel files; ``three_channel`` writes them
    as 3-channel BGR, as data_aug does, to compare the same bytes encoded.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in paths:
        img = cv2.imread(str(path))
        rows, cols = img.shape[:2]
        outputs = [cv2.flip(img, 1), cv2.flip(img, 0)]
        for angle in (90, 270):  # warpAffine into an (h, w) canvas: exact only for square photos
            matrix = cv2.getRotationMatrix2D((cols / 2, rows / 2), angle, 1)
            outputs.append(cv2.warpAffine(img, matrix, (cols, rows)))
        for kind in (cv2.THRESH_BINARY, cv2.THRESH_TRUNC, cv2.THRESH_TOZERO):
            outputs.append(cv2.threshold(img, 127, 255, kind)[1])
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        outputs.append(grey)
        outputs.append(cv2.blur(img, (5, 5)))
        median = cv2.medianBlur(grey, 5)
        outputs.append(cv2.threshold(median, 150, 255, cv2.THRESH_BINARY)[1])
        outputs.append(cv2.adaptiveThreshold(median, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 11, 2))
        outputs.append(cv2.adaptiveThreshold(median, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 11, 2))
        for k, out in enumerate(outputs):
            if three_channel and out.ndim == 2:
                out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
            cv2.imwrite(str(out_dir / f"{path.stem}_{k}.png"), out)
            written += 1
    return written


def cpu_seconds():
    """(user, system) CPU seconds of this process (all threads) and its finished children."""
    user = system = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        user, system = user + usage.ru_utime, system + usage.ru_stime
    return user, system


def timed(function):
    """(value, wall seconds, user CPU seconds, system CPU seconds) of calling ``function``."""
    start, (user, system) = time.perf_counter(), cpu_seconds()
    value = function()
    user_after, system_after = cpu_seconds()
    return value, time.perf_counter() - start, user_after - user, system_after - system


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--copies", type=int, default=augment.DEFAULT_COPIES)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the fastest of each method is reported")
    parser.add_argument("--out", type=Path, default=OUT, help="work folder (deleted at the end); default %(default)s")
    common.add_json_option(parser)
    args = parser.parse_args(argv)

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    source = out / "source" / "Dataset"
    (paths, subjects), seconds, _, _ = timed(lambda: make_photos(source, args.photos))
    print(f"{len(paths)} synthetic 256x256 face PNGs ({subjects} subjects) made in {seconds:.1f} s; "
          f"{os.cpu_count()} CPUs, workers={args.workers}; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (other processes may share the CPUs)")

    # Every timed run writes into a folder of its own and nothing is deleted until the
    # end: on ext4 without a journal (this machine's disk) creating a file right after
    # many deletions is slow (ext4 skips inodes freed in the last ~30 s, scanning the
    # inode table for them: ext4_create -> recently_deleted was about 40 % of the CPU samples
    # of a delete-and-rewrite loop), which would time the file system, not the program.
    def seed(three_channel):
        def prepare(folder):
            return lambda: seed_project_loop(paths, folder / "seed_loop", three_channel)
        return prepare

    def ours(**options):
        def prepare(folder):
            dataset = folder / "Dataset"
            shutil.copytree(source, dataset)
            return lambda: augment_dataset(dataset, seed=0, splits=("Train",), progress=False, **options).written
        return prepare

    workers = args.workers
    methods = [
        ("seed project loop (sequential, cv2.imwrite)", seed(False)),
        ("seed project loop, grey outputs as 3 channels", seed(True)),
        ("data_aug --recipe original, 1 thread", ours(recipe="original", workers=1)),
        (f"data_aug --recipe original, {workers} threads", ours(recipe="original", workers=workers)),
        (f"data_aug --recipe original, {workers} processes",
         ours(recipe="original", workers=workers, executor="process")),
        (f"data_aug --recipe original, {workers} threads, OpenCV PNGs",
         ours(recipe="original", workers=workers, png_writer="opencv")),
        (f"data_aug default --copies {args.copies}, 1 thread", ours(copies=args.copies, workers=1)),
        (f"data_aug default --copies {args.copies}, {workers} threads", ours(copies=args.copies, workers=workers)),
        (f"data_aug default --copies {args.copies}, {workers} processes",
         ours(copies=args.copies, workers=workers, executor="process")),
    ]
    # Rounds interleave the methods, so a burst of load from other processes hits them
    # alike; each method's fastest round is reported (the least disturbed one).
    best = {}
    try:
        for round_index in range(args.repeats):
            for index, (label, prepare) in enumerate(methods):
                go = prepare(out / f"round{round_index}" / f"method{index}")
                written, took, user, system = timed(go)
                if label not in best or took < best[label][1]:
                    best[label] = (written, took, user, system)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    results = [(label, *best[label]) for label, _ in methods]

    base_rate = len(paths) / results[0][2]
    print(f"\n{'method':<52} {'files':>6} {'wall s':>7} {'user s':>7} {'sys s':>6} {'photos/s':>9} "
          f"{'files/s':>8} {'vs seed':>8}")
    for label, files, took, user, system in results:
        rate = len(paths) / took
        print(f"{label:<52} {files:>6} {took:>7.2f} {user:>7.2f} {system:>6.2f} {rate:>9.1f} {files / took:>8.1f} "
              f"{rate / base_rate:>7.2f}x")
    like = next(r for r in results if r[0].endswith(f"original, {workers} threads"))
    ratio, same_bytes = results[0][2] / like[2], results[1][2] / like[2]
    print(f"\nlike for like (12 outputs per photo): data_aug --recipe original with {workers} threads is "
          f"{ratio:.2f}x the seed loop (target >= 2x on 2 cores: {'met' if ratio >= 2 else 'NOT met'}), "
          f"{same_bytes:.2f}x the seed loop writing the same 3-channel files; fastest of {args.repeats} rounds; "
          f"PNG writer {default_png_writer()}; load average at the end: "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("user + sys s > wall s means the run used more than one core; other processes sharing the CPUs lower "
          "the parallel gain")
    if args.json:
        rows = [common.row(label, len(paths) / took, "photos/s",
                           f"{files} files, {files / took:.1f} files/s, wall {took:.2f} s, user {user:.2f} s, "
                           f"sys {system:.2f} s, {len(paths) / took / base_rate:.2f}x the seed loop")
                for label, files, took, user, system in results]
        targets = [common.target(f"data_aug --recipe original ({workers} threads) / seed loop, 12 outputs per photo",
                                 ratio, 2, ">=", f"{len(paths)} photos, fastest of {args.repeats} rounds; "
                                 f"{same_bytes:.2f}x the seed loop writing the same 3-channel files")]
        notes = [f"PNG writer {default_png_writer()}; {os.cpu_count()} CPUs, workers={workers}; load average at the "
                 f"end {', '.join(f'{v:.1f}' for v in os.getloadavg())}"]
        common.write_result(args.json, common.result("augment", common.command_line(), rows, targets, notes))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
