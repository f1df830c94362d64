"""Scaling: throughput and peak memory of crop, augment and predict at 1x, 4x and 16x the photos.

    python bench/bench_scaling.py                       # 200, 800, 3200 photos
    python bench/bench_scaling.py --quick               # 50, 200, 800 photos
    python bench/bench_scaling.py --sizes 100 400 --stages crop,predict --json bench/out/scaling.json

Photos: synthetic RaFD-sized frames (681x1024 JPEG, efr.data.synthetic.render), subjects x 8 emotions
x 3 gazes, made once for the largest size under bench/out/scaling/ (kept for re-runs,
git-ignored); each smaller size is a folder of hard links to the first N of them.

Stages, each through its public function, each measurement in a child process of its own:

  crop     efr.crop.run.crop_dataset(photos, Dataset, CropOptions(gazes=None)) (crop.py --gaze all;
           default workers), photos/s of the whole call (starting its pool included)
  augment  efr.data.augment_stage.augment_dataset(copy of that Dataset) (what data_aug.py runs,
           default recipe and splits), original photos augmented/s of the whole call
  predict  efr.predict.run.predict(model, [Dataset], faces_only=True, progress=False) on the crops,
           with an untrained seed CNN (--img-size) saved as bench_predict.py does; faces/s of
           one call, the fastest of 3 rounds after a warm-up call, each round repeating the
           call for at least 3 s (about 14 calls at 200 photos, one at 3,200), the model's load time
           (measured apart) left out

Peak memory: ru_maxrss of the measured child, read by a small wrapper process that
starts it (as bench_memory.py does): the largest peak among the job's processes (its
own or one of crop's pool workers), in MiB.  Targets: per stage, the largest over the smallest throughput
across sizes <= 1.2 (within 20%), and the peak RSS at the largest size over the one at
the smallest <= 1.2 (flat).  Rounds interleave the sizes; each measurement keeps its
fastest round (and that round's memory).
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import common  # noqa: E402  (bench/common.py: the --json result shape)

OUT = REPO / "bench" / "out" / "scaling"
STAGES = ("crop", "augment", "predict")
PREDICT_ROUNDS = 3  # timed rounds of predict calls per process, after one warm-up call; the fastest is kept
PREDICT_ROUND_SECONDS = 3.0  # each round repeats the call until it lasts this long (one call at the largest size)
DEFAULT_SIZES = (200, 800, 3200)
QUICK_SIZES = (50, 200, 800)
THROUGHPUT_TARGET = 1.2  # max / min throughput across sizes
MEMORY_TARGET = 1.2  # peak RSS at the largest size / at the smallest
RESULT_PREFIX = "SCALING_RESULT "


# ---------------------------------------------------------------------------------------
# Photos


def photo_plan(count):
    """(subject, emotion, gaze) of the first ``count`` photos: subjects x 8 emotions x 3 gazes, in order."""
    from efr.io.emotions import EMOTIONS
    from efr.io.rafd import GAZES

    per_subject = len(EMOTIONS) * len(GAZES)
    return [(1 + i // per_subject, EMOTIONS[(i % per_subject) // len(GAZES)], GAZES[i % len(GAZES)])
            for i in range(count)]


def _render(job):
    from efr.io.imageio import encode_image, write_bytes_atomic
    from efr.io.rafd import FRONTAL_ANGLE, format_rafd_name
    from efr.data.synthetic.render import JPEG_QUALITY, render_face
    from efr.data.synthetic.identity import subject_identity

    folder, subject, emotion, gaze = job
    identity = subject_identity(subject, 0)
    name = format_rafd_name(subject, identity.ethnicity, identity.gender, emotion, gaze, FRONTAL_ANGLE)
    path = Path(folder) / name
    if not path.is_file():
        write_bytes_atomic(path, encode_image(render_face(subject, emotion, gaze, FRONTAL_ANGLE, 0), ".jpg",
                                              JPEG_QUALITY))
    return name


def make_photos(sizes, workers):
    """{size: folder of that many photos}; the largest set is rendered once (in ``workers`` processes)."""
    largest = max(sizes)
    folder = OUT / f"photos_{largest}"
    marker = folder / f".complete-{common.synthetic_key()}"  # made again when efr/data/synthetic/render.py changes
    if marker.is_file():
        names = marker.read_text().split()
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        jobs = [(str(folder), *plan) for plan in photo_plan(largest)]
        started = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            names = list(pool.map(_render, jobs, chunksize=8))
        marker.write_text("\n".join(names) + "\n")
        print(f"rendered {largest} synthetic 681x1024 photos in {time.perf_counter() - started:.0f} s "
              f"({folder}, kept for re-runs)", flush=True)
    folders = {}
    for size in sizes:
        if size == largest:
            folders[size] = folder
            continue
        subset = OUT / f"photos_{size}_of_{largest}"
        if not (subset / marker.name).is_file():
            shutil.rmtree(subset, ignore_errors=True)
            subset.mkdir(parents=True)
            for name in names[:size]:
                try:
                    os.link(folder / name, subset / name)
                except OSError:
                    shutil.copy2(folder / name, subset / name)
            (subset / marker.name).write_text("done\n")
        folders[size] = subset
    return folders


def make_model(img_size):
    """An untrained seed CNN saved as bench_predict.py's make_model does (speed does not depend on weights)."""
    path = OUT / f"seed{img_size}.keras"
    if not path.is_file():
        from efr.io.emotions import EMOTIONS
        from efr.models.modelio import save_model
        from efr.models.build import seed_cnn

        built = seed_cnn(len(EMOTIONS), img_size)
        save_model(getattr(built, "model", built), path, {"class_names": list(EMOTIONS)})
    return path


# ---------------------------------------------------------------------------------------
# One measurement, in a child process


def child(stage, source, work, model=None):
    """Run one stage and return what was measured; called in a fresh process (``--child``)."""
    if stage == "crop":
        from efr.crop.options import CropOptions
        from efr.crop.run import crop_dataset

        started = time.perf_counter()
        summary = crop_dataset(source, work, CropOptions(gazes=None), progress=False)
        seconds = time.perf_counter() - started
        items, unit = sum(summary.counts.values()), "photos/s"
        extra = {"crops": summary.usable}
    elif stage == "augment":
        from efr.data.augment_stage import augment_dataset

        started = time.perf_counter()
        result = augment_dataset(work, seed=0, progress=False)
        seconds = time.perf_counter() - started
        items, unit = result.photos, "photos/s"
        extra = {"written": result.written}
    elif stage == "predict":
        from efr.predict.predictor import load_predictor
        from efr.predict.run import predict

        # The model is loaded once (what a user scoring many folders does: efr.predict.run.predict takes a
        # loaded Predictor); a warm-up call, untimed, then the timed ones.
        load_started = time.perf_counter()
        predictor = load_predictor(model, faces_only=True)
        load_seconds = time.perf_counter() - load_started
        # The fastest of PREDICT_ROUNDS rounds after a warm-up call, each round repeating the call for at
        # least PREDICT_ROUND_SECONDS: one call lasts 0.2-5 s, identical calls varied by +-15 % on the
        # 2-core machine, and the fastest of a few 0.2 s calls was the luckiest, not the typical, one.
        results = []
        seconds, calls = common.best_per_call(
            PREDICT_ROUNDS, lambda: results.append(predict(predictor, [source], faces_only=True, progress=False)),
            PREDICT_ROUND_SECONDS)
        result = results[-1]
        items, unit = result.faces, "faces/s"
        extra = {"load_seconds": load_seconds, "calls_per_round": calls, "photos": result.photos,
                 "runtime": predictor.runtime}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {"stage": stage, "items": items, "seconds": seconds, "rate": items / seconds, "unit": unit, **extra}


def wrap(argv):
    """Run ``argv`` as the only child of this small process; print its output and its peak RSS (MiB).

    On Linux a process started by a big one inherits that one's peak in ru_maxrss, so the
    measured job is started from this fresh, small wrapper (as bench_memory.py does); the
    figure is the largest peak of the job's processes (its own, crop's pool workers).
    """
    done = subprocess.run(argv, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr[-5000:])
    print(f"PEAK_MIB {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}")  # Linux: KiB
    return done.returncode


def measure(stage, source, work, model=None):
    """Run ``child`` in a new process (under ``wrap``); return its result dict plus "rss_mib".

    Raises RuntimeError with the job's last stderr line when it failed.
    """
    argv = [sys.executable, __file__, "--wrap", sys.executable, __file__, "--child", stage, str(source), str(work)]
    argv += [str(model)] if model else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    found, peak = None, None
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            found = json.loads(line[len(RESULT_PREFIX):])
        elif line.startswith("PEAK_MIB "):
            peak = float(line.split()[1])
    if done.returncode != 0 or found is None or peak is None:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"{stage} on {source} failed (exit {done.returncode}): "
                           f"{lines[-1] if lines else 'no output'}")
    return {**found, "rss_mib": peak}


# ---------------------------------------------------------------------------------------
# The run


def fixed_cost(points):
    """Least-squares (seconds at 0 items, items/s at the margin) of seconds = a + items / rate."""
    n = len(points)
    if n < 2:
        return None, None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if not sxx:
        return None, None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - slope * mean_x, (1 / slope if slope > 0 else None)


def run(sizes, stages, rounds, img_size, workers):
    folders = make_photos(sizes, workers)
    model = make_model(img_size) if "predict" in stages else None
    best = {}  # (stage, size) -> fastest result
    work_root = OUT / "work"
    shutil.rmtree(work_root, ignore_errors=True)
    try:
        for round_index in range(rounds):
            for size in sizes:
                work = work_root / f"r{round_index}" / f"n{size}"
                dataset = work / "Dataset"
                measured = {}
                measured["crop"] = measure("crop", folders[size], dataset)
                if "augment" in stages:
                    augmented = work / "augment" / "Dataset"
                    shutil.copytree(dataset, augmented)  # not timed
                    measured["augment"] = measure("augment", augmented, augmented)
                if "predict" in stages:
                    measured["predict"] = measure("predict", dataset, None, model)
                for stage in stages:
                    entry = measured[stage]
                    print(f"round {round_index + 1} {stage:8s} {size:5d} photos: {entry['rate']:8.1f} {entry['unit']} "
                          f"({entry['items']} in {entry['seconds']:.2f} s), peak RSS {entry['rss_mib']:.0f} MiB",
                          flush=True)
                    if (stage, size) not in best or entry["seconds"] < best[(stage, size)]["seconds"]:
                        best[(stage, size)] = entry
    finally:
        # Deleted at the end, not before each run: see the file-system trap in bench_augment.py.
        shutil.rmtree(work_root, ignore_errors=True)
    return best


def summarise(best, sizes, stages):
    """(printed lines, rows, targets) of the fastest results."""
    rows, targets, lines = [], [], []
    for stage in stages:
        entries = [best[(stage, size)] for size in sizes]
        rates = [e["rate"] for e in entries]
        unit = entries[0]["unit"]
        for size, entry in zip(sizes, entries):
            detail = f"{entry['items']} in {entry['seconds']:.2f} s; peak RSS {entry['rss_mib']:.0f} MiB"
            rows.append(common.row(f"{stage}: {size} photos", entry["rate"], unit, detail))
            lines.append(f"{stage:8s} {size:6d} {entry['rate']:10.1f} {unit:9s} {entry['rss_mib']:13.0f}")
        spread = max(rates) / min(rates)
        a, margin = fixed_cost([(e["items"], e["seconds"]) for e in entries])
        fit = (f"; fit seconds = {a:.2f} + items / {margin:.1f}" if a is not None and margin else "")
        targets.append(common.target(f"{stage}: max / min throughput over {'/'.join(map(str, sizes))} photos", spread,
                                     THROUGHPUT_TARGET, "<=",
                                     f"{min(rates):.1f}-{max(rates):.1f} {unit}{fit}"))
        first, last = entries[0], entries[-1]
        targets.append(common.target(f"{stage}: peak RSS, {sizes[-1]} / {sizes[0]} photos",
                                     last["rss_mib"] / first["rss_mib"], MEMORY_TARGET, "<=",
                                     f"{first['rss_mib']:.0f} -> {last['rss_mib']:.0f} MiB "
                                     "(largest process of the run)"))
    return lines, rows, targets


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--wrap":
        return wrap(sys.argv[2:])
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        stage, source, work = sys.argv[2:5]
        model = sys.argv[5] if len(sys.argv) > 5 else None
        print(RESULT_PREFIX + json.dumps(child(stage, Path(source), Path(work) if work != "None" else None, model)),
              flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help=f"photo counts, smallest first (default {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--quick", action="store_true",
                        help=f"sizes {' '.join(map(str, QUICK_SIZES))} (unless --sizes is given)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma list of %(default)s")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the fastest of each is kept")
    parser.add_argument("--img-size", type=int, default=64, help="seed CNN input side for predict (the demo's 64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes rendering the photos")
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        parser.error(f"--stages: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(STAGES)}")
    if len(sizes) < 2 or sizes[0] <= 48:
        parser.error("--sizes: give two or more sizes of more than 48 photos (crop's split needs 3 subjects; "
                     "a subject has 24 photos)")
    stages = [s for s in STAGES if s in stages]

    load_before = common.load_average()
    print(f"# scaling: {', '.join(stages)} at {', '.join(map(str, sizes))} photos; {os.cpu_count()} CPUs, load "
          f"average {load_before}; {args.rounds} round(s), each measurement in its own process", flush=True)
    best = run(sizes, stages, args.rounds, args.img_size, args.workers)
    lines, rows, targets = summarise(best, sizes, stages)
    print(f"\n{'stage':8s} {'photos':>6} {'throughput':>10} {'unit':9s} {'peak RSS MiB':>13}")
    print("\n".join(lines))
    for entry in targets:
        print(f"{entry['name']}: {entry['ratio']:.2f} (target {entry['op']} {entry['target']}: "
              f"{'met' if entry['met'] else 'MISSED'}; {entry['detail']})")
    if args.json:
        loads = [", ".join(f"{v:.2f}" for v in load) if load else "unknown"
                 for load in (load_before, common.load_average())]
        notes = [f"crop and augment rates include starting their workers; predict's is one call's, the fastest of "
                 f"{PREDICT_ROUNDS} rounds of at least {PREDICT_ROUND_SECONDS:g} s of calls, and leaves out the model "
                 f"load (seed CNN {args.img_size} px, untrained); {args.rounds} round(s); load average {loads[0]} "
                 f"before, {loads[1]} after"]
        common.write_result(args.json, common.result("scaling", common.command_line(), rows, targets, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
