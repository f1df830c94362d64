"""Stage 2: multiply the Train (and Valid) photos of a Dataset with label-preserving transforms.

    python data_aug.py --dataset Dataset                      # default recipe, 4 copies per photo
    python data_aug.py --dataset Dataset --recipe original    # the seed project's 12 outputs per photo
    python data_aug.py --dataset Dataset --clean              # remove every augmented file again

Augmented files go beside their originals as <stem>__aug-<recipe>-<k>-<transforms>.png and
are listed in Dataset/manifest.csv; Test is never augmented.  See efr/augment_dataset.py.
"""

import argparse
import logging
import sys

from efr import augment
from efr.augment_dataset import AUGMENTABLE_SPLITS, augment_dataset, clean_augmented, format_counts_table
from efr.cli import add_common_arguments, run, setup_logging
from efr.imageio import PNG_WRITERS

log = logging.getLogger("efr")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    if args.clean:
        result = clean_augmented(args.dataset, splits=args.splits)
        log.info("removed %d augmented file(s) and %d manifest row(s)", result.removed, result.rows_removed)
        print(format_counts_table(result.before, result.after))
        return 0
    if args.recipe == augment.ORIGINAL_RECIPE and args.copies is not None:
        log.warning("warning: --copies is ignored with --recipe original (always 12 outputs per photo)")
    result = augment_dataset(
        args.dataset,
        recipe=args.recipe,
        copies=augment.DEFAULT_COPIES if args.copies is None else args.copies,
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
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
