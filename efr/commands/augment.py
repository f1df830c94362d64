"""`efr augment` / data_aug.py: multiply the Train (and Valid) photos of a Dataset with label-preserving transforms.

    efr augment --dataset Dataset                      # default recipe, 4 copies per photo
    efr augment --dataset Dataset --recipe original    # the seed project's 12 outputs per photo
    efr augment --dataset Dataset --clean              # remove every augmented file again

Augmented files go beside their originals as <stem>__aug-<recipe>-<k>-<transforms>.png and
are listed in Dataset/manifest.csv; Test is never augmented.  Reference: docs/augment.md.
"""

import argparse
import logging

from efr.data import augment
from efr.data.augmented import AUGMENTABLE_SPLITS, clean_augmented, format_counts_table
from efr.data.augment_stage import augment_dataset
from efr.commands.cli import add_common_arguments, setup_logging
from efr.commands import entry_points
from efr.io.imageio import PNG_WRITERS

log = logging.getLogger("efr")

SUMMARY = "add augmented copies of the Train/Valid faces of a Dataset (Test untouched)"
PARSER_KWARGS = {"description": __doc__.replace("`efr augment` / ", ""),
                 "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_arguments(parser):
    """data_aug's options: the one place they are defined."""
    parser.add_argument("--dataset", default="Dataset", help="Dataset folder made by crop.py (default Dataset)")
    parser.add_argument("--recipe", choices=augment.RECIPES, default=augment.DEFAULT_RECIPE,
                        help="default: random flips, small rotations/shifts/zooms, lighting, blur, noise, grey; "
                             "original: the seed project's 12 fixed outputs per photo (default default)")
    parser.add_argument("--copies", type=int, default=None,
                        help=f"variants per photo for the default recipe (default {augment.DEFAULT_COPIES}); "
                             "the original recipe always makes 12")
    parser.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                        help=f"splits to augment (default {' '.join(AUGMENTABLE_SPLITS)}); Test is refused. "
                             "With --clean: splits to clean (default all)")
    parser.add_argument("--clean", action="store_true",
                        help="remove the augmented files (manifest rows of kind augmented with the __aug- suffix) "
                             "and their rows, then stop; originals are never touched")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers (default: number of CPUs)")
    parser.add_argument("--png-writer", choices=PNG_WRITERS, default=None,
                        help="fpng (default when installed): ~10x faster; opencv: files ~12%% smaller, same pixels")
    add_common_arguments(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def copies_of(args):
    return augment.DEFAULT_COPIES if args.copies is None else args.copies


def run_args(args):
    """Augment (or --clean) as the parsed arguments say; return the AugmentResult or CleanResult."""
    setup_logging(args.quiet, args.verbose)
    if args.clean:
        result = clean_augmented(args.dataset, splits=args.splits)
        log.info("removed %d augmented file(s) and %d manifest row(s)", result.removed, result.rows_removed)
        print(format_counts_table(result.before, result.after))
        return result
    if args.recipe == augment.ORIGINAL_RECIPE and args.copies is not None:
        log.warning("warning: --copies is ignored with --recipe original (always 12 outputs per photo)")
    result = augment_dataset(
        args.dataset,
        recipe=args.recipe,
        copies=copies_of(args),
        splits=args.splits or AUGMENTABLE_SPLITS,
        seed=args.seed,
        workers=args.workers,
        png_writer=args.png_writer,
        progress=not args.quiet,
    )
    log.info(
        "%d photo(s): %d augmented file(s) written, %d already present, %d unreadable photo(s) skipped, %.1f s",
        result.photos, result.written, result.already_done, len(result.unreadable), result.seconds,
    )
    print(format_counts_table(result.before, result.after))
    return result
