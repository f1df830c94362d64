"""`efr backbone`: train EFR's own expression network (efrnet) on FER2013 and write a shippable model.

    efr backbone --data path/to/fer2013 --out runs/efrnet              # fer2013.csv or <Split>/<Emotion>/ folders
    TF_ENABLE_ONEDNN_OPTS=1 efr backbone --data path/to/fer2013 --out runs/efrnet   # ~1.4x faster on CPU

Trains on FER2013's Training split, selects the epoch on PublicTest, and writes to --out:
settings.json, history.csv, last.keras (every epoch: run the same command again to continue
after an interruption), best.keras, and at the end efrnet.keras (the EFR model, with its
provenance), metrics.json (PublicTest accuracy with its 95 % interval, with and without flip
test-time augmentation, per class), confusion_matrix.png and curves.png.  The shipped
efr/models/weights/efrnet.keras was made by this command (docs/model-card.md).
"""

import argparse
from pathlib import Path

from efr.commands.cli import add_common_arguments, setup_logging
from efr.commands import entry_points
from efr.io.errors import EFRError

SUMMARY = "train EFR's own expression network on FER2013 (the built-in 'efrnet' model)"
PARSER_KWARGS = {"description": __doc__.replace("`efr backbone`: ", ""),
                 "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_arguments(parser):
    """backbone's options: the one place they are defined (defaults: efr.train.backbone.Recipe)."""
    from efr.train.backbone import Recipe

    parser.add_argument("--data", required=True,
                        help="FER2013: fer2013.csv, or a folder with fer2013.csv or Training/ and PublicTest/ "
                        "<Emotion>/ image folders")
    parser.add_argument("--out", default="runs/efrnet", help="run folder; the same command again continues it")
    parser.add_argument("--epochs", type=int, default=Recipe.epochs, help="epochs of the cosine schedule")
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    parser.add_argument("--lr", type=float, default=Recipe.lr, help="AdamW peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=Recipe.weight_decay)
    parser.add_argument("--label-smoothing", type=float, default=Recipe.label_smoothing)
    parser.add_argument("--widths", default=",".join(map(str, Recipe.widths)),
                        help="channels of the four stages, comma list")
    parser.add_argument("--erasing", type=float, default=Recipe.erasing,
                        help="share of training faces with one random rectangle erased")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="float16 compute on a GPU (Keras' mixed_float16 policy); no gain on a CPU")
    add_common_arguments(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def recipe_from(args):
    from efr.train.backbone import Recipe

    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError as err:
        raise EFRError(f"--widths {args.widths}: give four whole numbers, e.g. 32,64,128,256") from err
    checks = [(args.epochs >= 1, "--epochs must be 1 or more"), (args.batch_size >= 1, "--batch-size must be 1 or more"),
              (args.lr > 0, "--lr must be above 0"), (args.weight_decay >= 0, "--weight-decay must be 0 or more"),
              (0 <= args.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
              (0 <= args.erasing <= 1, "--erasing must be in [0, 1]"),
              (len(widths) == 4 and min(widths) >= 1, "--widths takes four whole numbers of 1 or more")]
    for ok, message in checks:
        if not ok:
            raise EFRError(message)
    return Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                  label_smoothing=args.label_smoothing, widths=widths, erasing=args.erasing, seed=args.seed)


def run_args(args):
    setup_logging(args.quiet, args.verbose)
    from efr.data.fer2013 import check_source
    from efr.io.writable import check_writable

    recipe = recipe_from(args)
    if args.mixed_precision:
        recipe.extra["mixed_precision"] = True
    check_source(args.data)
    check_writable(args.out)
    from efr.train import backbone

    if args.mixed_precision:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    say = None if args.quiet else (lambda line: print(line, flush=True))
    backbone.train_backbone(args.data, args.out, recipe, log=say, progress=not args.quiet)
    metrics = backbone.finish(args.data, args.out, recipe, log=say)
    print(f"PublicTest accuracy {metrics['accuracy']:.4f} (flip TTA {metrics['flip_tta']['accuracy']:.4f}); "
          f"model: {Path(args.out) / backbone.SHIPPED_NAME}")
