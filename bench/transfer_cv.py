"""Benchmark: seed CNN vs FER2013 transfer vs clustering, subject-disjoint 5-fold CV on JAFFE.

    python bench/transfer_cv.py [--folds 5] [--seed 0] [--reuse] [--only clustering]

Needs ../shared/data/jaffe (real photos, never copied into the repo) and the FER2013
mini-Xception file at ../shared/weights/; skips with a message when they are absent.
Steps, each a plain command printed before it runs:

1. crop.py: JAFFE -> bench/out/transfer/jaffe_ds (256 px faces, subjects from the file names)
2. efe_cnn.py --folds K --model seed       (the original CNN, 256 x 256 RGB)
3. efe_cnn.py --folds K --model fer2013    (FER2013 trunk + new head, 64 x 64 grey inside)
4. clustering on the same folds (the test subjects each efe_cnn.py fold held out): k-means
   on HOG, raw pixels, and the pretrained (not fine-tuned) FER2013 trunk's features;
   matched accuracy, NMI, and a nearest-centroid classifier with centroids from the
   other folds' faces.

Prints per-fold numbers, then mean and standard deviation per method, and writes
bench/out/transfer/results.md.  Both CV runs use efe_cnn.py's folds for the same --seed
(efr.data.split.assign_folds), and the clustering reads them back from cv.csv.
"""

import argparse
import csv
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import efr  # noqa: E402,F401 - the oneDNN guard, before TensorFlow loads
from efr.evaluate import cluster  # noqa: E402
from efr.data import pipelines as efr_data

SHARED = REPO.parent / "shared"
JAFFE = SHARED / "data" / "jaffe"
FER_WEIGHTS = SHARED / "weights" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
OUT = REPO / "bench" / "out" / "transfer"

RECIPES = {
    # name: efe_cnn.py options (besides --dataset --folds --seed); epochs are maxima (early stopping)
    "seed": ["--model", "seed", "--epochs", "20", "--patience", "5"],
    "fer2013": ["--model", "fer2013", "--weights", str(FER_WEIGHTS), "--epochs", "10", "--fine-tune-epochs", "10",
                "--patience", "5"],
    "fer2013-b16": ["--model", "fer2013", "--weights", str(FER_WEIGHTS), "--epochs", "30", "--fine-tune-epochs",
                    "30", "--patience", "8", "--batch-size", "16"],
    "fer2013-head": ["--model", "fer2013", "--weights", str(FER_WEIGHTS), "--epochs", "60", "--fine-tune-epochs",
                     "0", "--patience", "8", "--batch-size", "16", "--lr", "0.003"],
    # No training options: efe_cnn.py's own defaults for fer2013 (efr.models.transfer.TRAINING_DEFAULTS).
    "fer2013-defaults": ["--model", "fer2013", "--weights", str(FER_WEIGHTS)],
}


def run_command(cmd, log_path):
    print("$", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call([str(c) for c in cmd], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"command failed with exit code {code}; see {log_path}")
    return time.perf_counter() - started


def read_cv(run_dir):
    with open(run_dir / "cv.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def fer_trunk_features(paths):
    """Features of the pretrained FER2013 trunk (no training on JAFFE): global-average-pooled."""
    import keras

    from efr.models.transfer import build_transfer_model

    built = build_transfer_model("fer2013", 2, weights=str(FER_WEIGHTS))
    pooled = built.model.get_layer("head_pool").output
    embed = keras.Model(built.model.inputs, pooled)
    images = efr_data.make_image_dataset(paths, built.image_size, 64)
    return np.asarray(embed.predict(images, verbose=0), dtype=np.float32)


def clustering_cv(dataset, folds_rows, seed):
    """Per fold and feature kind: k-means matched accuracy, NMI and nearest-centroid accuracy."""
    samples = efr_data.select(efr_data.scan_dataset(dataset, require_all=False), include_augmented=False)
    class_names = efr_data.class_names_of(samples)
    paths = [s.path for s in samples]
    labels = np.asarray(efr_data.labels_of(samples, class_names))
    subjects = np.asarray([s.subject for s in samples])
    features = {"hog": cluster.hog_features(paths), "pixels": cluster.pixel_features(paths),
                "fer2013-trunk": fer_trunk_features(paths)}
    results = {name: [] for name in features}
    for row in folds_rows:
        test = np.isin(subjects, row["test_subjects"].split())
        for name, feats in features.items():
            reduce = cluster.fit_reducer(feats[~test], pca=50, seed=seed)
            test_features = reduce(feats[test])
            k = len(set(labels[test].tolist()))
            scores = cluster.cluster_scores(test_features, labels[test], k, "kmeans", seed)
            centroid = cluster.nearest_centroid_accuracy(reduce(feats[~test]), labels[~test], test_features,
                                                         labels[test])
            results[name].append({"fold": int(row["fold"]), "matched_accuracy": scores["matched_accuracy"],
                                  "nmi": scores["nmi"], "nearest_centroid": centroid})
    return results


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default="seed,fer2013,fer2013-b16,fer2013-head", help=f"comma list of {', '.join(RECIPES)}")
    parser.add_argument("--reuse", action="store_true", help="keep CV runs whose cv.csv already exists")
    args = parser.parse_args(argv)
    if not JAFFE.is_dir() or not FER_WEIGHTS.is_file():
        print(f"skipped: needs {JAFFE} and {FER_WEIGHTS} (real photos and weights are not in the repository)")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    dataset = OUT / "jaffe_ds"
    py = sys.executable
    if not (dataset / "manifest.csv").is_file():
        run_command([py, "crop.py", "--src", JAFFE, "--dst", dataset, "--layout", "folders", "--subject-regex",
                     r"^([A-Z]{2})\.", "--quiet"], OUT / "crop.log")

    cv = {}
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        run_dir = OUT / "runs" / (f"{name}-cv{args.folds}" + (f"-seed{args.seed}" if args.seed else ""))
        if not (args.reuse and (run_dir / "cv.csv").is_file()):
            seconds = run_command([py, "efe_cnn.py", "--dataset", dataset, "--runs-dir", OUT / "runs", "--name",
                                   run_dir.name, "--exist-ok", "--folds", args.folds, "--seed", args.seed, "--quiet",
                                   *RECIPES[name]], OUT / f"{run_dir.name}.log")
            print(f"  {name}: {seconds:.0f} s")
        cv[name] = read_cv(run_dir)
    reference = next(iter(cv.values()))
    for name, rows in cv.items():
        if [r["test_subjects"] for r in rows] != [r["test_subjects"] for r in reference]:
            raise SystemExit(f"{name}'s folds differ from the first run's: not comparable")

    print("folds (test subjects):", "; ".join(r["test_subjects"] for r in reference))
    clusters = clustering_cv(dataset, reference, args.seed)

    lines = [f"| method | accuracy per fold | mean ± sd ({args.folds} folds) |", "|---|---|---|"]
    for name, rows in cv.items():
        accs = [float(r["accuracy"]) for r in rows]
        lines.append(f"| {name} (efe_cnn.py, test accuracy) | {' '.join(f'{a:.3f}' for a in accs)} | "
                     f"{mean_std(accs)} |")
    for name, rows in clusters.items():
        for key, label in (("matched_accuracy", "k-means matched accuracy"), ("nmi", "k-means NMI"),
                           ("nearest_centroid", "nearest-centroid accuracy")):
            values = [r[key] for r in rows]
            lines.append(f"| {name} features, {label} | {' '.join(f'{v:.3f}' for v in values)} | "
                         f"{mean_std(values)} |")
    table = "\n".join(lines)
    print(table)
    chance = 1.0 / len(efr_data.class_names_of(efr_data.scan_dataset(dataset, require_all=False)))
    text = (f"JAFFE, {args.folds}-fold subject-disjoint CV (seed {args.seed}); chance accuracy {chance:.3f}\n\n"
            f"{table}\n")
    results = OUT / ("results.md" if not args.seed else f"results-seed{args.seed}.md")
    results.write_text(text)
    print(f"written {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
