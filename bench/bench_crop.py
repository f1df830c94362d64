"""Benchmark: crop.py's face cropping against the original project's approach.

    python bench/bench_crop.py [--subjects 10] [--workers 2] [--repeat 1]

The original crop.py loaded the Haar cascade again for every photo and ran
detectMultiScale on the full-resolution grey frame with OpenCV's defaults; ours loads
one cascade per worker process, detects on a copy downscaled to 512 px, and uses
every core.  Both run here, in one process run, on the same RaFD-sized (681x1024)
synthetic frames, so the ratio holds even when other work shares the machine.

Also, when ../shared/data exists (real photos; never copied into the repo): crops
rafd_samples (RaFD layout) and jaffe (folders layout, subject regex), prints the
detection counts of both approaches and writes contact sheets to bench/out/.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from efr.crop import CropOptions, crop_dataset  # noqa: E402
from efr.imageio import list_images  # noqa: E402
from efr.manifest import read_manifest  # noqa: E402
from efr.synthetic import generate_rafd_like  # noqa: E402

OUT = REPO / "bench" / "out"
SHARED = REPO.parent / "shared" / "data"


def original_crop(paths, out):
    """The original project's crop loop, kept as it was (the baseline).

    For every photo: load the cascade, read the photo, grey it, detect on the full
    frame (scaleFactor 1.1, minNeighbors 5, no minimum size), then cut every face
    found and resize it to 256x256.  Returns {photo: number of faces found}.
    """
    cascade_file = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_alt.xml")
    os.makedirs(out, exist_ok=True)
    found = {}
    for path in paths:
        face_cascade = cv2.CascadeClassifier(cascade_file)
        img = cv2.imread(str(path))
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        faces = face_cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)
        for i, (x, y, w, h) in enumerate(faces):
            face = cv2.resize(img[y : y + h, x : x + w], (256, 256))
            cv2.imwrite(os.path.join(out, f"{Path(path).stem}_{i}.jpg"), face)
        found[str(path)] = len(faces)
    return found


def run_ours(src, dst, workers, options=CropOptions()):
    """Crop with efr (fresh output folder); return (seconds, manifest rows)."""
    shutil.rmtree(dst, ignore_errors=True)
    start = time.perf_counter()
    crop_dataset(src, dst, options, workers=workers, progress=False)
    return time.perf_counter() - start, read_manifest(dst)


def contact_sheet(rows, dst, path, tile=96, columns=12):
    """A grid of the crops (ok rows), each labelled with its subject and emotion."""
    tiles = []
    for row in rows:
        if row["status"] != "ok":
            continue
        image = cv2.resize(cv2.imread(str(Path(dst) / row["output"])), (tile, tile), interpolation=cv2.INTER_AREA)
        label = f"{row['subject']} {row['emotion'][:3]}"
        cv2.putText(image, label, (3, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(image, label, (3, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(image)
    if not tiles:
        return None
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    sheet = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    cv2.imwrite(str(path), sheet)
    return path


def compare_detections(original, rows, src):
    """Photos where the two approaches disagree on finding a face."""
    ours = {str(Path(src) / r["source"]): r["status"] == "ok" for r in rows if r["status"] in ("ok", "no_face")}
    only_original = sorted(p for p, n in original.items() if n and not ours.get(p))
    only_ours = sorted(p for p, ok in ours.items() if ok and not original.get(p))
    return only_original, only_ours


def bench_synthetic(subjects, workers, repeat):
    src = OUT / f"synthetic_{subjects}x8"
    paths = generate_rafd_like(src, subjects=subjects, progress=True)
    print(f"\n## synthetic RaFD-sized frames: {len(paths)} photos, 681x1024, {subjects} subjects x 8 emotions")
    original_times, ours_times, ours_one_times = [], [], []
    for _ in range(repeat):
        shutil.rmtree(OUT / "original_synthetic", ignore_errors=True)
        start = time.perf_counter()
        original = original_crop(paths, OUT / "original_synthetic")
        original_times.append(time.perf_counter() - start)
        seconds, rows = run_ours(src, OUT / "ours_synthetic", workers)
        ours_times.append(seconds)
        seconds_one, _ = run_ours(src, OUT / "ours_synthetic_1", 1)
        ours_one_times.append(seconds_one)
    n = len(paths)
    t_orig, t_ours, t_one = min(original_times), min(ours_times), min(ours_one_times)
    print(f"original crop.py     : {n / t_orig:7.1f} photos/s ({t_orig:.2f} s)")
    print(f"efr, 1 worker        : {n / t_one:7.1f} photos/s ({t_one:.2f} s)  x{t_orig / t_one:.1f}"
          "  (in-process; OpenCV's own threads)")
    print(f"efr, {workers} workers       : {n / t_ours:7.1f} photos/s ({t_ours:.2f} s)  x{t_orig / t_ours:.1f}"
          "  (includes starting the pool)")
    report_faces(original, rows, src)
    sheet = contact_sheet(rows[:48], OUT / "ours_synthetic", OUT / "contact_synthetic.png")
    print(f"contact sheet: {sheet}")


def report_faces(original, rows, src):
    faces_original = sum(1 for n in original.values() if n)
    several = sum(1 for n in original.values() if n > 1)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"faces found: original {faces_original}/{len(original)} photos ({several} with several faces, "
          f"each written), efr {ok}/{sum(r['status'] in ('ok', 'no_face') for r in rows)}")
    only_original, only_ours = compare_detections(original, rows, src)
    if not only_original and not only_ours:
        print("same set of photos with a face")
    for title, items in (("face only by original", only_original), ("face only by efr", only_ours)):
        for item in items:
            print(f"  {title}: {item}")


def bench_real(name, options, workers):
    src = SHARED / name
    if not src.is_dir():
        print(f"\n## {name}: skipped ({src} not found; real photos are optional)")
        return
    paths = list_images(src)
    print(f"\n## real photos: {name} ({len(paths)} photos)")
    start = time.perf_counter()
    original = original_crop(paths, OUT / f"original_{name}")
    t_orig = time.perf_counter() - start
    seconds, rows = run_ours(src, OUT / f"ours_{name}", workers, options)
    print(f"original {len(paths) / t_orig:.1f} photos/s, efr {len(paths) / seconds:.1f} photos/s "
          f"(x{t_orig / seconds:.1f}; small sets are dominated by starting the pool)")
    report_faces(original, rows, src)
    several = [r["source"] for r in rows if "faces found" in r["reason"]]
    print(f"efr: {len(several)} photo(s) with several faces (largest kept): {', '.join(several[:5])}")
    sheet = contact_sheet(rows, OUT / f"ours_{name}", OUT / f"contact_{name}.png")
    print(f"contact sheet: {sheet}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=1, help="repeat the timings and keep the fastest")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# crop benchmark ({os.cpu_count()} cores, OpenCV {cv2.__version__})")
    bench_synthetic(args.subjects, args.workers, args.repeat)
    bench_real("rafd_samples", CropOptions(), args.workers)
    bench_real("jaffe", CropOptions(subject_regex=r"^([A-Z]{2})\."), args.workers)


if __name__ == "__main__":
    main()
