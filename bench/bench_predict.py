"""Prediction throughput: EFR's predict pipeline against the `fer` package and the original approach.

    python bench/bench_predict.py                      # 96 photos, 1,440 faces, seed CNN at 64 px
    python bench/bench_predict.py --json out.json      # also write the figures and targets as JSON
    python bench/bench_predict.py --photos 128 --img-size 256 --fer-python /work/fervenv/bin/python

Measures, on the same RaFD-sized (681x1024) synthetic photos (efr.data.synthetic.render):

1. end to end (photo file -> face boxes + emotion), detection included:
   * EFR: efr.predict.run.predict on the folder (Haar on a downscaled copy, detection in
     threads, faces classified in batches);
   * original approach: per photo, load the Haar cascade, detect on the full-size frame,
     crop, resize, model.predict on that one face (how the seed project's script ran);
   * fer (https://pypi.org/project/fer/, FER(mtcnn=False): Haar + its 64x64 grey
     mini-Xception), run by --fer-python in its own environment, when given/found.
2. classification only, on already-cropped faces (--faces-only, --faces of them: the crops
   repeated), four ways in interleaved rounds, the fastest round of each kept:
   * EFR: efr.predict.run.predict(predictor, [paths], faces_only=True) with a loaded Predictor
     (its default runtime: LiteRT when the model converts, else Keras), and the same with
     runtime="keras";
   * the plain loop a user would write: cv2.imread each PNG, resize, one
     model.predict_on_batch per 32 faces (same model, same process, warmed up);
   * the ceiling: the same model's predict_on_batch on the same faces already decoded and
     resized in memory (no file reading at all);
   * fer with the face box set to the whole crop.

fer runs in its own environment (--fer-python) as one process that stays up for the whole
benchmark and times one pass over the files whenever asked, so its passes take turns with
EFR's in the same rounds (end to end: EFR, fer; faces only: the four ways above, fer) and
meet the same load; the fastest round of each is kept.

The EFR model is the seed CNN (untrained weights: speed does not depend on them) unless
--model is given.  Models are loaded and warmed up before timing.  Every figure comes
from one run, so the ratios hold even while other work loads the cores.
Scratch files go to bench/out/predict/ (git-ignored).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import common  # noqa: E402  (bench/common.py, beside this file)
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from efr.faces import detect as faces  # noqa: E402
from efr.io.emotions import EMOTIONS  # noqa: E402
from efr.io.imageio import list_images, read_image, write_image  # noqa: E402
from efr.data.synthetic.render import RAFD_SIZE, generate_rafd_like  # noqa: E402

DEFAULT_FER_PYTHON = Path("/work/fervenv/bin/python")

# Runs inside the fer environment: loads fer and TensorFlow once, warms up on the [path, whole]
# pairs of its first argument, says "ready", then for each request line {"paths": [...], "whole":
# bool} times one pass of FER.detect_emotions over the files and answers on one line that starts
# with FER_REPLY (other output is never mistaken for it).
FER_REPLY = "FER_REPLY "
FER_SERVER = r"""
import json, sys, time, cv2
from fer.fer import FER
import fer
detector = FER(mtcnn=False)
def one(path, whole):
    img = cv2.imread(path)
    boxes = [(0, 0, img.shape[1], img.shape[0])] if whole else None
    return detector.detect_emotions(img, face_rectangles=boxes)
for path, whole in json.loads(sys.argv[1]):
    one(path, whole)  # warm-up: model load, first inference
print("FER_REPLY ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    start = time.perf_counter()
    found = sum(len(one(p, job["whole"])) for p in job["paths"])
    reply = {"seconds": time.perf_counter() - start, "faces": found, "version": fer.__version__}
    print("FER_REPLY " + json.dumps(reply), flush=True)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=96, help="photos to time (multiples of 8: subjects x 8 emotions)")
    parser.add_argument("--faces", type=int, default=1440,
                        help="faces for the classification-only timings (the photos' crops, repeated)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the fastest of each way is kept")
    parser.add_argument("--original-photos", type=int, default=32,
                        help="photos for the original approach (slow: ~4 photos/s)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures and targets here")
    parser.add_argument("--img-size", type=int, default=64, help="EFR model input side (the demo's 64; original 256)")
    parser.add_argument("--model", default=None, help="an EFR .keras model to time instead of the seed CNN")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fer-python", default=None,
                        help=f"python of an environment with `fer` installed (default {DEFAULT_FER_PYTHON} if present)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "predict"), help="scratch folder")
    parser.add_argument("--skip-original", action="store_true", help="do not time the original approach")
    parser.add_argument("--skip-fer", action="store_true", help="do not time the fer package")
    return parser.parse_args(argv)


def make_photos(out, count):
    subjects = max(1, -(-count // len(EMOTIONS)))
    paths = generate_rafd_like(Path(out) / "photos", subjects=subjects, size=RAFD_SIZE, progress=True)
    return sorted(paths)[:count]


def make_crops(photos, out, size=faces.DEFAULT_IMAGE_SIZE):
    """Face crops as crop.py writes them (PNG, crop.py's default 256 px)."""
    cascade = faces.load_cascade()
    crops = []
    for path in photos:
        image = read_image(path)
        boxes = faces.detect_faces(cascade, image)
        if boxes:
            target = Path(out) / "crops" / (path.stem + ".png")
            if not target.is_file():
                write_image(target, faces.crop_square(image, faces.square_box(boxes[0], image.shape), size))
            crops.append(target)
    return crops


def make_model(args, out):
    from efr.models.modelio import save_model
    from efr.models.build import seed_cnn

    if args.model:
        return Path(args.model)
    path = Path(out) / f"seed{args.img_size}.keras"
    if not path.is_file():
        built = seed_cnn(len(EMOTIONS), args.img_size)
        model = getattr(built, "model", built)
        save_model(model, path, {"class_names": list(EMOTIONS)})
    return path


def faces_only_ways(model_path, crops, batch_size):
    """The classification-only ways, each a no-argument function over the same ``crops``."""
    from efr.models.modelio import load_model
    from efr.predict.predictor import load_predictor
    from efr.predict.run import predict

    model, meta = load_model(model_path)
    height, width = (int(v) for v in meta["image_size"])

    def small(image):
        return cv2.cvtColor(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)

    decoded = np.stack([small(cv2.imread(str(p))) for p in crops]).astype(np.float32)

    def ceiling():
        for start in range(0, len(decoded), batch_size):
            model.predict_on_batch(decoded[start : start + batch_size])

    def plain_loop():
        for start in range(0, len(crops), batch_size):
            batch = [small(cv2.imread(str(p))) for p in crops[start : start + batch_size]]
            model.predict_on_batch(np.stack(batch).astype(np.float32))

    predictors = {runtime: load_predictor(model_path, faces_only=True, batch_size=batch_size, runtime=runtime)
                  for runtime in ("auto", "keras")}

    def efr(runtime):
        def run():
            result = predict(predictors[runtime], crops, faces_only=True, progress=False)
            assert result.faces == len(crops), (result.faces, len(crops))
        return run

    return {"efr": efr("auto"), "efr_keras": efr("keras"), "plain_loop": plain_loop, "ceiling": ceiling}, \
        predictors["auto"].runtime


def time_interleaved(ways, rounds, optional=(), warmed=()):
    """({name: fastest seconds}, {name: error}): the ways run in turn in each round so that load hits all alike.

    Each way is called once to warm up first, except those named in ``warmed`` (fer warms up
    as it starts).  A way may return its own timing in seconds (fer times itself in its
    process); else its call is timed here.  A way named in ``optional`` (a peer) that raises
    is dropped from later rounds with its error; any other way's exception propagates.
    """
    best, errors = {}, {}

    def timed(name, fn):
        try:
            start = time.perf_counter()
            own = fn()
            return own if isinstance(own, float) else time.perf_counter() - start
        except Exception as err:
            if name not in optional:
                raise
            errors[name] = str(err) or type(err).__name__
            return None

    for name, fn in ways.items():
        if name not in warmed:
            timed(name, fn)  # warm-up
    for _ in range(rounds):
        for name, fn in ways.items():
            if name not in errors and (seconds := timed(name, fn)) is not None:
                best[name] = min(best.get(name, seconds), seconds)
    return best, errors


def efr_end_to_end(model_path, photos, batch_size):
    """(a no-argument function predicting ``photos`` end to end, {load_seconds, runtime, faces}) for EFR."""
    from efr.predict.predictor import load_predictor
    from efr.predict.run import predict

    load_start = time.perf_counter()
    predictor = load_predictor(model_path, batch_size=batch_size)
    info = {"load_seconds": time.perf_counter() - load_start, "runtime": predictor.runtime}

    def run():
        info["faces"] = predict(predictor, photos, progress=False).faces

    return run, info


def time_original(model_path, photos):
    """The seed project's way: cascade loaded for every photo, full-size detection, one face per predict()."""
    from efr.models.modelio import load_model

    model, meta = load_model(model_path)
    size = int(meta["image_size"][0])
    cascade_file = str(faces.cascade_path(faces.DEFAULT_CASCADE))

    def one(path):
        cascade = cv2.CascadeClassifier(cascade_file)
        image = cv2.imread(str(path))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5)
        n = 0
        for x, y, w, h in np.asarray(found).reshape(-1, 4):
            face = cv2.cvtColor(cv2.resize(image[y:y + h, x:x + w], (size, size)), cv2.COLOR_BGR2RGB)
            model.predict(face[None].astype(np.float32), verbose=0)
            n += 1
        return n

    one(photos[0])  # warm-up
    start = time.perf_counter()
    found = sum(one(p) for p in photos)
    return {"seconds": time.perf_counter() - start, "faces": found}


class FerServer:
    """The fer package in its own environment (``fer_python``), timing one pass over some files per request."""

    def __init__(self, fer_python, warm_up=()):
        """Start fer, warming up on ``warm_up`` ((path, whole) pairs); ``ready()`` waits for it.

        Starting it early lets fer load TensorFlow while this process prepares its own ways.
        """
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        self.stderr = tempfile.TemporaryFile(mode="w+")  # TensorFlow's chatter; its last line on failure
        pairs = json.dumps([[str(path), whole] for path, whole in warm_up])
        self.process = subprocess.Popen([str(fer_python), "-c", FER_SERVER, pairs], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        self.last = {}

    def ready(self):
        """Wait until fer has loaded and warmed up; RuntimeError with its last stderr line if it could not."""
        if self._reply() != "ready":
            raise RuntimeError("fer did not start")

    def _reply(self):
        for line in self.process.stdout:
            if line.startswith(FER_REPLY):
                return line[len(FER_REPLY):].strip()
        self.process.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"fer exited with status {self.process.returncode}")

    def time_pass(self, paths, whole):
        """fer's own seconds for one pass of detect_emotions over ``paths`` (``whole``: the face box is the image).

        ``last`` keeps what that pass found (faces, fer's version), not its time: the caller keeps the fastest.
        """
        self.process.stdin.write(json.dumps({"paths": [str(p) for p in paths], "whole": whole}) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self._reply())
        self.last = {k: v for k, v in reply.items() if k != "seconds"}  # what the pass found: faces, version
        return float(reply["seconds"])

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.stderr.close()


def rate(entry, count):
    return count / entry["seconds"] if entry.get("seconds") else float("nan")


def target(name, ratio, goal, detail):
    return common.target(name, round(ratio, 3), goal, ">=", detail)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    photos = make_photos(out, args.photos)
    crops = make_crops(photos, out)
    faces_list = [crops[i % len(crops)] for i in range(args.faces)]
    model_path = make_model(args, out)
    fer_python = None if args.skip_fer else (
        Path(args.fer_python) if args.fer_python else (DEFAULT_FER_PYTHON if DEFAULT_FER_PYTHON.exists() else None))
    load_before = os.getloadavg()[0]
    print(f"{len(photos)} photos {RAFD_SIZE[0]}x{RAFD_SIZE[1]}, {len(crops)} crops {faces.DEFAULT_IMAGE_SIZE} px "
          f"({len(faces_list)} faces for classification only); model {model_path.name}; {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f}; python {platform.python_version()}; best of {args.rounds} rounds")

    fer, fer_error = None, "not measured (no --fer-python and no /work/fervenv; see the docstring)"
    if fer_python is not None:
        try:  # fer loads while EFR's ways are prepared, and is ready before anything is timed
            fer = FerServer(fer_python, warm_up=[(faces_list[0], True), (photos[0], False)])
        except OSError as err:
            fer_error = f"fer did not start: {err}"

    try:
        ways, runtime = faces_only_ways(model_path, faces_list, args.batch_size)
        efr_run, efr_info = efr_end_to_end(model_path, photos, args.batch_size)
        e2e_ways = {"efr": efr_run}
        if fer is not None:
            try:
                fer.ready()
                ways["fer"] = lambda: fer.time_pass(faces_list, True)
                e2e_ways["fer"] = lambda: fer.time_pass(photos, False)  # timed last: fer.last is what it found
            except RuntimeError as err:
                fer_error = f"fer did not start: {err}"
        if "fer" not in ways:
            print(f"fer: {fer_error}")
        only, only_errors = time_interleaved(ways, args.rounds, optional=("fer",), warmed=("fer",))
        e2e_best, e2e_errors = time_interleaved(e2e_ways, args.rounds, optional=("fer",), warmed=("fer",))
    finally:
        if fer is not None:
            fer.close()
    e2e = {"efr": {"seconds": e2e_best["efr"], **efr_info}}
    if not args.skip_original:
        originals = photos[: args.original_photos]
        e2e["original"] = time_original(model_path, originals)
        e2e["original"]["photos"] = len(originals)
    if "fer" in e2e_ways:
        e2e["fer"] = ({"error": e2e_errors["fer"]} if "fer" in e2e_errors
                      else {"seconds": e2e_best["fer"], **fer.last})
    only_fer = {"error": only_errors.get("fer", fer_error)} if "fer" not in only else {"seconds": only["fer"]}

    rates = {name: len(faces_list) / seconds for name, seconds in only.items()}
    e2e_rates = {name: entry.get("photos", len(photos)) / entry["seconds"]
                 for name, entry in e2e.items() if "error" not in entry}
    labels = {
        "efr": f"EFR predict --faces-only ({runtime})", "efr_keras": "EFR predict --faces-only --runtime keras",
        "plain_loop": "plain loop (imread + predict_on_batch)", "ceiling": "ceiling (predict_on_batch, in memory)",
        "fer": "fer on crops (box = whole crop)",
    }
    rows = []
    print(f"\nclassification only ({len(faces_list)} faces)")
    for name, label in labels.items():
        if name in rates:
            print(f"  {label:<44} {rates[name]:8.1f} faces/s")
            rows.append(common.row(f"faces only: {label}", round(rates[name], 1), "faces/s"))
        else:
            print(f"  {label:<44} {only_fer.get('error', 'failed')}")
            rows.append(common.row(f"faces only: {label}", "not measured", "", only_fer.get("error")))
    e2e_labels = {"efr": f"EFR predict, end to end ({e2e['efr']['runtime']})",
                  "original": "original approach, end to end", "fer": "fer (Haar), end to end"}
    print(f"end to end ({len(photos)} photos {RAFD_SIZE[0]}x{RAFD_SIZE[1]} JPEG, detection included)")
    for name, entry in e2e.items():
        if "error" in entry:
            print(f"  {e2e_labels[name]:<44} failed: {entry['error']}")
            rows.append(common.row(f"end to end: {e2e_labels[name]}", "failed", "", entry["error"]))
            continue
        print(f"  {e2e_labels[name]:<44} {e2e_rates[name]:8.1f} photos/s  ({entry['faces']} faces)")
        rows.append(common.row(f"end to end: {e2e_labels[name]}", round(e2e_rates[name], 1), "photos/s",
                               f"{entry['faces']} faces in {entry.get('photos', len(photos))} photos"))
    print(f"(EFR model load, not in the rates: {e2e['efr']['load_seconds']:.2f} s)")

    targets = [
        target("faces only: EFR / plain loop", rates["efr"] / rates["plain_loop"], 1.5,
               f"{rates['efr']:.0f} vs {rates['plain_loop']:.0f} faces/s"),
        target("faces only: EFR / ceiling", rates["efr"] / rates["ceiling"], 0.8,
               f"{rates['efr']:.0f} vs {rates['ceiling']:.0f} faces/s"),
    ]
    if "fer" in rates:
        targets.append(target("faces only: EFR / fer", rates["efr"] / rates["fer"], 2.0,
                              f"{rates['efr']:.0f} vs {rates['fer']:.0f} faces/s"))
    if "fer" in e2e_rates:
        targets.append(target("end to end: EFR / fer", e2e_rates["efr"] / e2e_rates["fer"], 2.0,
                              f"{e2e_rates['efr']:.1f} vs {e2e_rates['fer']:.1f} photos/s"))
    print()
    for t in targets:
        print(f"{t['name']:<34} {t['ratio']:6.2f}x  (target {t['target']}x: {'met' if t['met'] else 'MISSED'}; "
              f"{t['detail']})")
    if "original" in e2e_rates:
        print(f"end to end: EFR / original = {e2e_rates['efr'] / e2e_rates['original']:.2f}x")
    notes = [f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
             f"model: {model_path.name} (untrained seed CNN at {args.img_size} px unless --model)",
             f"fer {e2e.get('fer', {}).get('version', 'not measured')}"]
    if args.json:
        common.write_result(args.json, common.result("predict", common.command_line(argv, __file__),
                                                     rows, targets, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
