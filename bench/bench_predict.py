"""Prediction throughput: EFR's predict pipeline against the `fer` package and the original approach.

    python bench/bench_predict.py                      # 64 photos, seed CNN at 64 px
    python bench/bench_predict.py --photos 128 --img-size 256 --fer-python /work/fervenv/bin/python

Measures, on the same RaFD-sized (681x1024) synthetic photos (efr.synthetic):

1. end to end (photo file -> face boxes + emotion), detection included:
   * EFR: efr.predict.predict on the folder (Haar on a downscaled copy, detection in
     threads, faces classified in batches);
   * original approach: per photo, load the Haar cascade, detect on the full-size frame,
     crop, resize, model.predict on that one face (how the seed project's script ran);
   * fer (https://pypi.org/project/fer/, FER(mtcnn=False): Haar + its 64x64 grey
     mini-Xception), run by --fer-python in its own environment, when given/found.
2. classification only, on already-cropped faces (--faces-only): EFR against fer with
   the face box set to the whole crop.

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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from efr import faces  # noqa: E402
from efr.emotions import EMOTIONS  # noqa: E402
from efr.imageio import list_images, read_image, write_image  # noqa: E402
from efr.synthetic import RAFD_SIZE, generate_rafd_like  # noqa: E402

DEFAULT_FER_PYTHON = Path("/work/fervenv/bin/python")

# Runs inside the fer environment: times FER.detect_emotions over the listed files.
FER_SCRIPT = r"""
import json, sys, time, cv2
from fer.fer import FER
paths, whole = json.loads(sys.argv[1]), sys.argv[2] == "whole"
detector = FER(mtcnn=False)
def one(path):
    img = cv2.imread(path)
    boxes = [(0, 0, img.shape[1], img.shape[0])] if whole else None
    return detector.detect_emotions(img, face_rectangles=boxes)
one(paths[0]); one(paths[-1])  # warm-up: model load, first inference
start = time.perf_counter()
found = sum(len(one(p)) for p in paths)
seconds = time.perf_counter() - start
import fer
print(json.dumps({"seconds": seconds, "faces": found, "version": fer.__version__}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=64, help="photos to time (multiples of 8: subjects x 8 emotions)")
    parser.add_argument("--img-size", type=int, default=64, help="EFR model input side (the demo's 64; original 256)")
    parser.add_argument("--model", default=None, help="an EFR .keras model to time instead of the seed CNN")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fer-python", default=None,
                        help=f"python of an environment with `fer` installed (default {DEFAULT_FER_PYTHON} if present)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "predict"), help="scratch folder")
    parser.add_argument("--skip-original", action="store_true", help="do not time the original approach")
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
    from efr.modelio import save_model
    from efr.models import seed_cnn

    if args.model:
        return Path(args.model)
    path = Path(out) / f"seed{args.img_size}.keras"
    if not path.is_file():
        built = seed_cnn(len(EMOTIONS), args.img_size)
        model = getattr(built, "model", built)
        save_model(model, path, {"class_names": list(EMOTIONS)})
    return path


def time_efr(model_path, inputs, count, batch_size, faces_only=False):
    from efr.predict import predict

    predict(model_path, inputs[:2], batch_size=batch_size, faces_only=faces_only, progress=False)  # warm-up
    start = time.perf_counter()
    result = predict(model_path, inputs, batch_size=batch_size, faces_only=faces_only, progress=False)
    seconds = time.perf_counter() - start
    # predict() loads the model itself: time that separately and leave it out of the rate.
    from efr.predict import load_predictor

    load_start = time.perf_counter()
    load_predictor(model_path)
    load_seconds = time.perf_counter() - load_start
    assert result.photos == count, (result.photos, count)
    return {"seconds": seconds - load_seconds, "faces": result.faces, "load_seconds": load_seconds,
            "total_seconds": seconds}


def time_original(model_path, photos):
    """The seed project's way: cascade loaded for every photo, full-size detection, one face per predict()."""
    from efr.modelio import load_model

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


def time_fer(fer_python, paths, whole):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([str(fer_python), "-c", FER_SCRIPT, json.dumps([str(p) for p in paths]),
                           "whole" if whole else "detect"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def rate(entry, count):
    return count / entry["seconds"] if entry.get("seconds") else float("nan")


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    photos = make_photos(out, args.photos)
    crops = make_crops(photos, out)
    model_path = make_model(args, out)
    fer_python = Path(args.fer_python) if args.fer_python else (DEFAULT_FER_PYTHON if DEFAULT_FER_PYTHON.exists()
                                                                else None)
    print(f"{len(photos)} photos {RAFD_SIZE[0]}x{RAFD_SIZE[1]}, {len(crops)} crops "
          f"{faces.DEFAULT_IMAGE_SIZE} px; model {model_path.name}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}")

    results = {}
    results["efr"] = time_efr(model_path, [out / "photos"] if len(list_images(out / "photos")) == len(photos)
                              else photos, len(photos), args.batch_size)
    results["efr_faces_only"] = time_efr(model_path, [out / "crops"], len(crops), args.batch_size, faces_only=True)
    if not args.skip_original:
        results["original"] = time_original(model_path, photos)
    if fer_python is not None:
        results["fer"] = time_fer(fer_python, photos, whole=False)
        results["fer_faces_only"] = time_fer(fer_python, crops, whole=True)
    else:
        print("fer: skipped (no --fer-python and no /work/fervenv; see bench docstring)")

    counts = {"efr": len(photos), "original": len(photos), "fer": len(photos),
              "efr_faces_only": len(crops), "fer_faces_only": len(crops)}
    print(f"\n{'pipeline':<32} {'items/s':>9} {'seconds':>8} {'faces':>6}")
    labels = {
        "efr": "EFR predict, end to end",
        "original": "original approach, end to end",
        "fer": "fer (Haar), end to end",
        "efr_faces_only": "EFR predict --faces-only",
        "fer_faces_only": "fer on crops (box = whole crop)",
    }
    for key in ("efr", "original", "fer", "efr_faces_only", "fer_faces_only"):
        if key not in results:
            continue
        entry = results[key]
        if "error" in entry:
            print(f"{labels[key]:<32} failed: {entry['error']}")
            continue
        print(f"{labels[key]:<32} {rate(entry, counts[key]):9.1f} {entry['seconds']:8.2f} {entry['faces']:6d}")
    print(f"(EFR model load, not in the rates: {results['efr']['load_seconds']:.2f} s)")
    print()
    for base in ("original", "fer"):
        if base in results and "error" not in results[base]:
            print(f"end to end: EFR / {base} = {rate(results['efr'], len(photos)) / rate(results[base], len(photos)):.2f}x")
    if "fer_faces_only" in results and "error" not in results["fer_faces_only"]:
        ratio = rate(results["efr_faces_only"], len(crops)) / rate(results["fer_faces_only"], len(crops))
        print(f"faces only: EFR / fer = {ratio:.2f}x")
        print(f"fer version {results['fer'].get('version', '?')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
