"""Accuracy on real faces: efrnet, fusion (efrnet trunk) and fusion --subject-norm, fer2013, seed, with and without alignment.

    python bench/accuracy_cv.py [--folds 5] [--seed 0] [--recipes efrnet,fusion,fusion-norm,fusion-fer2013] [--reuse]

Everything goes through the product's own commands, printed before they run:

1. crop.py on JAFFE (../shared/data/jaffe: real photos, never copied into the repository)
   twice: Haar crops, and ``--align eyes`` crops; both 256 px, subjects from the file
   names, ``--folds K`` (so every run below uses the same subject-disjoint folds);
2. efe_cnn.py --folds K for each recipe on each crop set;
3. the framing of the Haar crops, measured (crop side and crop centre below the eyes,
   in eye distances): the figures efr.faces.align's constants come from.

Prints a table (mean ± sd over folds, and the folds' test subjects) and writes
bench/out/accuracy/results.md.  Skips with a message when ../shared is absent (a fresh
clone).  ``--subject-norm`` runs report two numbers: the transductive one (each test
person's photos centred together) and the same head without centring.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import efr  # noqa: E402,F401 - the oneDNN guard, before TensorFlow loads
from transfer_cv import mean_std, run_command  # noqa: E402 - bench/ is on sys.path when run as a script

SHARED = REPO.parent / "shared"
JAFFE = SHARED / "data" / "jaffe"
RAFD = SHARED / "data" / "rafd_samples"
FER_WEIGHTS = SHARED / "weights" / "fer2013_mini_XCEPTION.102-0.66.hdf5"
OUT = REPO / "bench" / "out" / "accuracy"

FER = ["--backbone", "fer2013", "--weights", str(FER_WEIGHTS)]  # fusion on the 2017 mini-Xception (needs the file)
RECIPES = {
    # name: efe_cnn.py options besides --dataset --folds --seed (epochs are maxima: early stopping on Valid)
    "seed": ["--model", "seed", "--img-size", "96", "--augment", "online", "--epochs", "40", "--patience", "8",
             "--batch-size", "16"],
    "efrnet": ["--model", "efrnet"],  # EFR's own shipped backbone, new head (efr.models.transfer's defaults)
    "efrnet-tta": ["--model", "efrnet", "--tta", "flip"],
    "fer2013": ["--model", "fer2013", "--weights", str(FER_WEIGHTS)],  # its defaults (efr.models.transfer)
    "fusion": ["--model", "fusion"],  # default trunk: efrnet
    "fusion-norm": ["--model", "fusion", "--subject-norm"],
    "fusion-tta": ["--model", "fusion", "--tta", "flip"],
    "fusion-trunk-hog": ["--model", "fusion", "--fusion-parts", "trunk,hog"],
    "fusion-trunk-hog-norm": ["--model", "fusion", "--fusion-parts", "trunk,hog", "--subject-norm"],
    "fusion-trunk": ["--model", "fusion", "--fusion-parts", "trunk"],
    "fusion-fer2013": ["--model", "fusion", *FER],
    "fusion-fer2013-norm": ["--model", "fusion", *FER, "--subject-norm"],
    "fer2013-tta": ["--model", "fer2013", "--weights", str(FER_WEIGHTS), "--tta", "flip"],
}
NEEDS_FER_FILE = {name for name, options in RECIPES.items() if str(FER_WEIGHTS) in options}
CROPS = {"haar": [], "aligned": ["--align", "eyes"]}
README_BEGIN, README_END = "<!-- accuracy_cv:begin -->", "<!-- accuracy_cv:end -->"


def framing(folder):
    """Median (Haar crop side / eye distance, crop centre below the eyes / eye distance) over a folder's photos."""
    from efr.faces import detect as faces, landmarks
    from efr.io.imageio import is_image_file, read_image

    cascade, mesh = faces.load_cascade(), landmarks.FaceMesh()
    sides, downs = [], []
    for path in sorted(p for p in Path(folder).rglob("*") if is_image_file(p)):
        image = read_image(path)
        boxes = faces.find_faces(cascade, image)
        points = mesh.points(image, boxes[0]) if boxes else None
        if points is None:
            continue
        right, left = landmarks.eye_centres(points)
        distance = float(np.hypot(*(left - right)))
        x, y, w, h = faces.square_box(boxes[0], image.shape)
        sides.append(w / distance)
        downs.append((y + h / 2 - (right[1] + left[1]) / 2) / distance)
    return len(sides), float(np.median(sides)), float(np.median(downs))


def run_seed(seed, crops, recipes, args):
    """Every recipe on one seed's folds: (table lines, {(crop, recipe): test subjects per fold},
    {(crop, recipe): (its label, mean over folds)})."""
    py = sys.executable
    lines = ["| crops | method | accuracy per fold | mean ± sd | without --subject-norm (inductive) |",
             "|---|---|---|---|---|"]
    folds_seen, means = {}, {}
    for crop in crops:
        dataset = OUT / (f"jaffe-{crop}" + (f"-seed{seed}" if seed else ""))  # folds follow the seed
        if not (dataset / "crop_summary.json").is_file():
            run_command([py, "crop.py", "--src", JAFFE, "--dst", dataset, "--layout", "folders", "--subject-regex",
                         r"^([A-Z]{2})\.", "--folds", args.folds, "--seed", seed, "--quiet", *CROPS[crop]],
                        OUT / f"crop-{crop}-seed{seed}.log")
        for name in recipes:
            run_dir = OUT / "runs" / f"{crop}-{name}-cv{args.folds}-seed{seed}"
            if not (args.reuse and (run_dir / "metrics.json").is_file()):
                seconds = run_command([py, "efe_cnn.py", "--dataset", dataset, "--runs-dir", OUT / "runs", "--name",
                                       run_dir.name, "--exist-ok", "--folds", args.folds, "--seed", seed,
                                       "--quiet", *RECIPES[name]], OUT / f"{run_dir.name}.log")
                print(f"  seed {seed} {crop} {name}: {seconds:.0f} s", flush=True)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            per_fold = metrics["per_fold"]
            folds_seen[(crop, name)] = [r["test_subjects"] for r in per_fold]
            accs = [r["accuracy"] for r in per_fold]
            plain = (mean_std([r["plain_accuracy"] for r in per_fold]) + " (this run)"
                     if "plain_accuracy" in per_fold[0] else "")
            label = name + (" (transductive)" if "plain_accuracy" in per_fold[0] else "")
            means[(crop, name)] = (label, float(np.mean(accs)))
            lines.append(f"| {crop} | {label} | {' '.join(f'{a:.3f}' for a in accs)} | {mean_std(accs)} | {plain} |")
            print(lines[-1], flush=True)
    reference = next(iter(folds_seen.values()))
    if any(v != reference for v in folds_seen.values()):
        raise SystemExit(f"seed {seed}: the runs' folds differ: not comparable")
    return lines, folds_seen, means


def seed_table(per_seed, crops, recipes):
    """Lines of a table: each recipe's mean over folds on each seed, and the mean ± sd of those over seeds."""
    seeds = list(per_seed)
    lines = [f"| crops | method | mean over folds, fold seeds {', '.join(map(str, seeds))} | mean ± sd over seeds |",
             "|---|---|---|---|"]
    for crop in crops:
        for name in recipes:
            label = per_seed[seeds[0]][2][(crop, name)][0]
            values = [per_seed[seed][2][(crop, name)][1] for seed in seeds]
            lines.append(f"| {crop} | {label} | {' '.join(f'{v:.3f}' for v in values)} | {mean_std(values)} |")
    print("\n".join(lines), flush=True)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default=None,
                        help="comma list of fold seeds (e.g. 0,1,2): every recipe on each seed's folds, and a table "
                             "of the means over seeds; the first seed's per-fold table is kept (default: --seed)")
    parser.add_argument("--recipes", default="efrnet,fusion,fusion-norm,fusion-trunk-hog,fusion-trunk-hog-norm",
                        help=f"comma list of {', '.join(RECIPES)}")
    parser.add_argument("--crops", default="haar,aligned", help="comma list of haar, aligned")
    parser.add_argument("--reuse", action="store_true", help="keep runs whose metrics.json already exists")
    parser.add_argument("--write-readme", action="store_true",
                        help=f"replace README.md's section between {README_BEGIN} and {README_END} with this run's table")
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not JAFFE.is_dir() or (NEEDS_FER_FILE & set(recipes) and not FER_WEIGHTS.is_file()):
        print(f"skipped: needs {JAFFE} (and {FER_WEIGHTS} for {', '.join(sorted(NEEDS_FER_FILE))}): real photos "
              "and third-party weights are not in the repository")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    crops = [c.strip() for c in args.crops.split(",") if c.strip()]
    per_seed = {seed: run_seed(seed, crops, recipes, args) for seed in seeds}
    lines, folds_seen, _ = per_seed[seeds[0]]
    reference = next(iter(folds_seen.values()))
    means = seed_table(per_seed, crops, recipes) if len(seeds) > 1 else []
    seed = seeds[0]  # the seed of the per-fold table

    frames = [f"| {name} | {n} | {side:.2f} | {down:.2f} |" for name, folder in
              (("JAFFE", JAFFE), ("RaFD frames", RAFD)) if folder.is_dir()
              for n, side, down in [framing(folder)]]
    subjects = "; ".join(reference)
    text = (f"JAFFE (10 people, 213 photos, 7 classes, chance 0.143), {args.folds}-fold subject-disjoint CV, seed "
            f"{seed}; test subjects per fold: {subjects}\n\n" + "\n".join(lines) + "\n\n"
            + ("Over fold seeds:\n\n" + "\n".join(means) + "\n\n" if means else "")
            + "Haar crop framing, medians (efr.faces.align's ALIGN_SIDE and ALIGN_DOWN):\n\n"
            "| set | faces | side / eye distance | centre below eyes / eye distance |\n|---|---|---|---|\n"
            + "\n".join(frames) + "\n")
    print(text)
    (OUT / f"results-seed{seed}.md").write_text(text)
    print(f"written {OUT / f'results-seed{seed}.md'}")
    if args.write_readme:
        write_readme(lines, subjects, args, seed, means)
    return 0


def write_readme(lines, subjects, args, seed, means=()):
    """README.md's results table: this run's rows, with the command, date and git commit that made them."""
    from datetime import datetime, timezone

    from common import write_text_atomic
    from run_all import git_commit, replace_section

    command = "python bench/accuracy_cv.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:]))
    section = "\n".join([
        README_BEGIN,
        *lines,
        "",
        f"Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (git {git_commit()}); "
        f"{args.folds} subject-disjoint folds, seed {seed}, test people per fold: {subjects}. "
        "A row marked transductive centres each test person's photos together; its last column is the same "
        "model without centring.",
        *(["", "The same recipes on other fold seeds (each seed deals the 10 people into other folds), so that no "
           "figure is one lucky draw:", "", *means] if means else []),
        README_END,
    ])
    path = REPO / "README.md"
    write_text_atomic(path, replace_section(path.read_text(encoding="utf-8"), section, README_BEGIN, README_END))
    print(f"written {path} (section {README_BEGIN})")


if __name__ == "__main__":
    sys.exit(main())
