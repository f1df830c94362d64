"""Experiment: does offline augmentation help the seed CNN, and which recipe?

For each photo set and seed: crop.py makes one subject-disjoint Dataset, data_aug.py
makes two augmented copies of it (default recipe, and the seed project's --recipe
original), and efe_cnn.py trains the seed CNN on each of the three with the same
split, image size, epochs and seed; the test accuracy (Test is never augmented)
of each is read from runs/<name>/metrics.json.

    python bench/aug_experiment.py                              # synthetic + JAFFE when present
    python bench/aug_experiment.py --sets synthetic --seeds 0 1 2 --img-size 96 --epochs 10

Photo sets: ``synthetic`` (efr.data.synthetic.render RaFD-like portraits, --subjects people x 8
emotions, frontal) and ``jaffe`` (../shared/data/jaffe: 10 posers, 7 emotions; skipped
with a message when absent, never copied into the repository).  Everything is written
under bench/out/aug_experiment/ (git-ignored); the results table is printed and saved
as results.json there (run folders keep their metrics and reports; the Datasets and
.keras files are deleted as soon as they are used, to spare the disk).  The three
main arms train for the same number of epochs, so the augmented arms see more (and
different) batches, as in the seed project; the none-long control trains without
augmentation for (1 + default copies) x the epochs, to tell the two effects apart.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from efr.data import augment  # noqa: E402
from efr.data.synthetic.render import generate_rafd_like  # noqa: E402

OUT = REPO / "bench" / "out" / "aug_experiment"
JAFFE = REPO.parent / "shared" / "data" / "jaffe"
ARMS = ("none", "default", "original")
# A control: no augmentation, but as many epochs as the default recipe's arm makes
# batches ((1 + copies) x epochs), so "more training steps" is not mistaken for
# "augmentation helps".  Early stopping (patience) still applies.
LONG = "none-long"
ALL_ARMS = (*ARMS, LONG)


def sh(*args, log_path):
    """Run a command from the repo root; its output goes to log_path; raise with the log's tail on failure."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(map(str, args)) + "\n")
        log.flush()
        done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, stdout=log, stderr=log,
                              check=False)
    if done.returncode != 0:
        tail = Path(log_path).read_text(encoding="utf-8").splitlines()[-15:]
        raise RuntimeError(f"{args[0]} failed (exit {done.returncode}); end of {log_path}:\n" + "\n".join(tail))


def raw_photos(name, subjects, out):
    """(source folder, extra crop.py arguments) of a photo set, or None when it is absent."""
    if name == "synthetic":
        src = out / "raw_synthetic"
        generate_rafd_like(src, subjects=subjects, size=(340, 512), seed=0)
        return src, []
    if name == "jaffe":
        if not JAFFE.is_dir():
            print(f"jaffe: {JAFFE} not found; skipped")
            return None
        return JAFFE, ["--subject-regex", r"^([A-Z]{2})\."]
    raise SystemExit(f"unknown photo set {name!r}: synthetic or jaffe")


def run_arm(set_name, src, crop_args, seed, args, log_path):
    """Test accuracy of the seed CNN on one set and seed, for each arm."""
    base = args.out / set_name / f"seed{seed}"
    shutil.rmtree(base, ignore_errors=True)
    dataset = base / "Dataset"
    sh("crop.py", "--src", src, "--dst", dataset, "--size", args.img_size, "--seed", seed, "--quiet",
       *crop_args, log_path=log_path)
    accuracies = {}
    for arm in args.arms:
        plain = arm in ("none", LONG)
        arm_dataset = dataset if plain else base / f"Dataset-{arm}"
        epochs = args.epochs * (1 + augment.DEFAULT_COPIES) if arm == LONG else args.epochs
        if not plain:
            shutil.copytree(dataset, arm_dataset)
            sh("data_aug.py", "--dataset", arm_dataset, "--recipe", arm, "--seed", seed, "--quiet",
               log_path=log_path)
        name = f"augexp-{set_name}-{arm}-seed{seed}"
        started = time.perf_counter()
        sh("efe_cnn.py", "--dataset", arm_dataset, "--img-size", args.img_size, "--epochs", epochs,
           "--seed", seed, "--name", name, "--runs-dir", base / "runs", "--quiet", *args.train_args,
           log_path=log_path)
        metrics = json.loads((base / "runs" / name / "metrics.json").read_text(encoding="utf-8"))
        accuracies[arm] = metrics["test_accuracy"]
        print(f"  {set_name} seed {seed} {arm:<8} test accuracy {metrics['test_accuracy']:.3f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        if not plain:
            shutil.rmtree(arm_dataset)  # a few thousand PNGs each; the run folder keeps the results
        for model_file in (base / "runs" / name).glob("*.keras"):
            model_file.unlink()  # tens of MB each; the metrics and reports stay
    shutil.rmtree(dataset)
    return accuracies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["synthetic", "jaffe"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subjects", type=int, default=30, help="synthetic people (x 8 emotions)")
    parser.add_argument("--arms", nargs="+", choices=ALL_ARMS, default=list(ALL_ARMS),
                        help=f"what to compare (default all; {LONG}: no augmentation, "
                             f"{1 + augment.DEFAULT_COPIES}x the epochs)")
    parser.add_argument("--out", type=Path, default=OUT, help="work folder (default bench/out/aug_experiment)")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                        help="extra efe_cnn.py arguments, passed through (put last)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.txt"
    print(f"seed CNN, image size {args.img_size}, {args.epochs} epochs, seeds {args.seeds}; logs in {log_path}")

    results = {}
    for set_name in args.sets:
        found = raw_photos(set_name, args.subjects, args.out)
        if found is None:
            continue
        src, crop_args = found
        per_seed = [run_arm(set_name, src, crop_args, seed, args, log_path) for seed in args.seeds]
        results[set_name] = {arm: [acc[arm] for acc in per_seed] for arm in args.arms}

    print(f"\ntest accuracy of the seed CNN (image size {args.img_size}, {args.epochs} epochs), "
          f"mean +- sd over seeds {args.seeds}")
    print(f"{'set':<10} " + " ".join(f"{arm:>20}" for arm in args.arms))
    for set_name, arms in results.items():
        cells = []
        for arm in args.arms:
            values = arms[arm]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} +- {sd:.3f}".rjust(20))
        print(f"{set_name:<10} " + " ".join(cells))
    (args.out / "results.json").write_text(
        json.dumps({"settings": vars(args), "results": results}, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
