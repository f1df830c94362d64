"""Subject-disjoint 5-fold cross-validation of the seed CNN on JAFFE (real photos).

Needs ../shared/data/jaffe (10 posers, 7 expressions, 213 greyscale TIFFs; not part
of the repository): skipped with a message when absent.  Crops it with crop.py
(folders layout, subject = the two capitals before the first dot), then runs
efe_cnn.py --folds 5 and prints the mean and standard deviation over folds.

    python bench/jaffe_cv.py --size 96 --epochs 40
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JAFFE = REPO.parent / "shared" / "data" / "jaffe"
OUT = REPO / "bench" / "out" / "jaffe"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=JAFFE)
    parser.add_argument("--size", type=int, default=96, help="crop and training side in pixels")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--augment", choices=("none", "online"), default="online")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(f"skipped: {args.src} not found (JAFFE is not shipped with the repository)")
        return 0

    dataset = OUT / f"Dataset{args.size}"
    if not (dataset / "manifest.csv").is_file():
        crop = [sys.executable, str(REPO / "crop.py"), "--src", str(args.src), "--dst", str(dataset),
                "--layout", "folders", "--subject-regex", r"^([A-Z]{2})\.", "--size", str(args.size), "--quiet"]
        print("$", " ".join(crop), flush=True)
        subprocess.run(crop, check=True)
    name = f"jaffe-s{args.size}-e{args.epochs}-{args.augment}-seed{args.seed}"
    train = [sys.executable, str(REPO / "efe_cnn.py"), "--dataset", str(dataset), "--runs-dir", str(OUT / "runs"),
             "--name", name, "--exist-ok", "--folds", str(args.folds), "--img-size", str(args.size),
             "--epochs", str(args.epochs), "--patience", str(args.patience), "--batch-size", str(args.batch_size),
             "--augment", args.augment, "--seed", str(args.seed)]
    print("$", " ".join(train), flush=True)
    started = time.perf_counter()
    subprocess.run(train, check=True)
    minutes = (time.perf_counter() - started) / 60
    metrics = json.loads((OUT / "runs" / name / "metrics.json").read_text())
    print(f"\nJAFFE {args.folds}-fold subject-disjoint CV, seed CNN at {args.size} px, augment {args.augment}, "
          f"{args.epochs} epochs max (patience {args.patience}), {minutes:.1f} min")
    print(f"  accuracy  {metrics['accuracy_mean']:.3f} ± {metrics['accuracy_std']:.3f}   "
          f"(chance {metrics['chance_accuracy']:.3f}; pooled {metrics['test_accuracy']:.3f})")
    print(f"  macro-F1  {metrics['macro_f1_mean']:.3f} ± {metrics['macro_f1_std']:.3f}")
    for row in metrics["per_fold"]:
        print(f"  fold {row['fold']}: accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
              f"test subjects {row['test_subjects']}  epochs {row['epochs_run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
