"""`efr demo` / demo.py: the whole pipeline in one command, on synthetic RaFD-like photos (no download needed).

    efr demo                  # about 1-4 minutes on 2 CPU cores (docs/demo.md); everything under demo/
    efr demo --smoke          # the smallest settings: checks that every stage runs

Stages: draw 40 people x 8 emotions x 3 gazes as 681x1024 RaFD-named photos
(efr.data.synthetic.render) -> crop (64 px faces, subject-disjoint Train/Valid/Test) -> augment
(2 variants per Train/Valid photo) -> train (the seed CNN at 64 px) -> predict on
the raw photos of the Test subjects, people the model never saw.  Ends by printing
where the run's report.html is.  Re-running reuses what is already done.  Reference: docs/demo.md.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from efr.commands.cli import setup_logging
from efr.commands import entry_points
from efr.demo import DemoSettings, check_settings, held_out_photos, score_predictions, smoke_settings

SUMMARY = "the whole pipeline on synthetic faces (no download), ending with a report"
PARSER_KWARGS = {"description": __doc__.replace("`efr demo` / ", ""),
                 "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_arguments(parser):
    """demo's options: the one place they are defined."""
    defaults = DemoSettings()
    parser.add_argument("--out", default=str(defaults.out), help=f"folder for everything (default {defaults.out})")
    parser.add_argument("--subjects", type=int, default=None, help=f"synthetic people (default {defaults.subjects})")
    parser.add_argument("--img-size", type=int, default=None,
                        help=f"face crop and model input side, pixels (default {defaults.img_size})")
    parser.add_argument("--epochs", type=int, default=None, help=f"maximum training epochs (default {defaults.epochs})")
    parser.add_argument("--seed", type=int, default=0, help="random seed for photos, split, augmentation and training")
    parser.add_argument("--smoke", action="store_true",
                        help="smallest settings (7 people, 32 px, 2 epochs, small frames): a quick check, not a result")
    return parser


build_parser, parse_args, main = entry_points(__name__)


def settings_from_args(args):
    settings = smoke_settings(args.out, args.seed) if args.smoke else DemoSettings(out=Path(args.out), seed=args.seed)
    changes = {k: v for k, v in (("subjects", args.subjects), ("img_size", args.img_size), ("epochs", args.epochs))
               if v is not None}
    settings = replace(settings, **changes)
    check_settings(settings)
    return settings


def banner(number, total, title):
    print(f"\n=== [{number}/{total}] {title} ===", flush=True)


def command_line(verb, argv, max_args=12):
    """The stage's equivalent command, with a long list of input files shortened."""
    shown = [str(a) for a in argv]
    if len(shown) > max_args:
        shown = shown[:max_args] + [f"... ({len(argv) - max_args} more)"]
    return f"$ efr {verb} {' '.join(shown)}"


def run_stage(verb, argv):
    """Run one stage as `efr <verb> argv` would (its own parser and run_args); return what it returns."""
    from efr.commands import command_module

    print(command_line(verb, argv), flush=True)
    module = command_module(verb)
    return module.run_args(module.parse_args([str(a) for a in argv]))


def make_photos(settings):
    from efr.data.synthetic.render import generate_rafd_like

    return generate_rafd_like(settings.photos_dir, subjects=settings.subjects, gazes=settings.gazes,
                              seed=settings.seed, size=settings.render_size, progress=True)


def run_args(args):
    setup_logging(False)
    settings = settings_from_args(args)
    out = Path(settings.out)
    started = time.perf_counter()
    times = {}
    print(f"EFR demo: {settings.subjects} synthetic people x 8 emotions x {len(settings.gazes)} gaze(s), "
          f"{settings.img_size} px faces, up to {settings.epochs} epochs; everything goes to {out}/", flush=True)

    stage_start = time.perf_counter()
    banner(1, 5, f"drawing synthetic RaFD-like photos into {settings.photos_dir}")
    photos = make_photos(settings)
    print(f"{len(photos)} photos ({settings.render_size[0]}x{settings.render_size[1]})")
    times["photos"] = time.perf_counter() - stage_start

    stage_start = time.perf_counter()
    banner(2, 5, "crop.py: find and crop the faces, split people into Train/Valid/Test")
    run_stage("crop", ["--src", settings.photos_dir, "--dst", settings.dataset_dir, "--size", settings.img_size,
                       "--gaze", ",".join(settings.gazes), "--seed", settings.seed, "--overwrite"])
    times["crop"] = time.perf_counter() - stage_start

    stage_start = time.perf_counter()
    banner(3, 5, "data_aug.py: add augmented copies of the Train and Valid faces (Test untouched)")
    # Start from the originals each time, so a re-run with another --seed is not refused.
    run_stage("augment", ["--dataset", settings.dataset_dir, "--clean", "--quiet"])
    run_stage("augment", ["--dataset", settings.dataset_dir, "--copies", settings.copies, "--seed", settings.seed])
    times["augment"] = time.perf_counter() - stage_start

    stage_start = time.perf_counter()
    banner(4, 5, "efe_cnn.py: train the CNN, evaluate it on the Test people, write the report")
    run_stage("train", ["--dataset", settings.dataset_dir, "--img-size", settings.img_size,
                        "--epochs", settings.epochs, "--patience", settings.patience, "--seed", settings.seed,
                        "--name", settings.run_dir.name, "--runs-dir", settings.runs_dir, "--exist-ok"])
    times["train"] = time.perf_counter() - stage_start

    stage_start = time.perf_counter()
    banner(5, 5, "predict.py: emotions of held-out raw photos (people never seen in training)")
    held_out = held_out_photos(settings)
    model = settings.run_dir / "best.keras"
    run_stage("predict", ["--model", model, "--out", settings.predictions_dir, "--table-rows", 16, *held_out])
    score = score_predictions(settings.predictions_dir / "predictions.csv")
    times["predict"] = time.perf_counter() - stage_start

    total = time.perf_counter() - started
    metrics_path = settings.run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    print("\n=== done ===")
    print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total:.0f} s")
    if "test_accuracy" in metrics:
        print(f"test accuracy (efe_cnn.py, Test faces): {metrics['test_accuracy']:.3f} "
              f"(chance {metrics.get('chance_accuracy', 1 / 8):.3f})")
    print(f"held-out raw photos (predict.py): {score.correct}/{score.photos} right = {score.accuracy:.3f}"
          + (f", {score.no_face} without a detected face" if score.no_face else ""))
    print(f"predictions: {settings.predictions_dir / 'predictions.csv'}, "
          f"annotated photos in {settings.predictions_dir / 'annotated'}")
    print("synthetic faces: these numbers show the code works, not how it does on real photos.")
    print(f"report: {settings.run_dir / 'report.html'}")
    return settings
