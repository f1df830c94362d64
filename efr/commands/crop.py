"""`efr crop` / crop.py: crop the faces out of raw photos into a subject-disjoint Train/Valid/Test dataset.

    efr crop --src path/to/RaFD --dst Dataset
    efr crop --src jaffe --dst Dataset-jaffe --subject-regex '^([A-Z]{2})\\.'

Writes Dataset/{Train,Valid,Test}/<Emotion>/*.png (256x256 faces), Dataset/manifest.csv
(one row per source photo, with what happened to it), crop_settings.json and
crop_summary.json.  Never writes under --src.  Reference: docs/crop.md.
"""

import argparse
import os

from efr.faces import detect as faces
from efr.faces.align import ALIGN_MODES
from efr.commands.cli import add_common_arguments, setup_logging
from efr.commands import entry_points
from efr.crop.options import LAYOUTS, ON_MISS, CropOptions, parse_angles, parse_gazes
from efr.crop.run import crop_dataset
from efr.data.split import DEFAULT_FRACTIONS, parse_fractions

SUMMARY = "crop faces from raw photos into a subject-disjoint Train/Valid/Test Dataset"
PARSER_KWARGS = {
    "description": "Crop faces from raw photos (RaFD names or <Emotion>/ folders) into "
    "Dataset/{Train,Valid,Test}/<Emotion>/ with a subject-disjoint split and a manifest.",
    "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
}


def add_arguments(parser):
    """crop's options: the one place they are defined (crop.py, `efr crop` and `efr pipeline` use it)."""
    parser.add_argument("--src", required=True, help="folder of raw photos (searched recursively; never modified)")
    parser.add_argument("--dst", default="Dataset", help="output dataset folder (must not be inside --src)")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="rafd: labels from RaFD file names; folders: emotion from <Emotion>/ folder names")
    parser.add_argument("--subject-regex", default=None,
                        help=r"folders layout: regex on the file name whose first group is the subject id, "
                        r"e.g. '^([A-Z]{2})\.' for JAFFE (KA.AN1.39.tiff -> KA); without it photos are split "
                        "one by one and a person can be in two splits")
    parser.add_argument("--angle", default="090", help="RaFD camera angles to keep: 090 (frontal), a list "
                        "such as 045,090,135, or all")
    parser.add_argument("--gaze", default="frontal",
                        help="RaFD gazes to keep: frontal, left, right (comma list) or all")
    parser.add_argument("--cascade", default=faces.DEFAULT_CASCADE,
                        help="Haar cascade: a file name bundled with OpenCV (e.g. haarcascade_frontalface_default.xml) "
                        "or a path to an XML file")
    parser.add_argument("--margin", type=float, default=faces.DEFAULT_MARGIN,
                        help="extra border around the detected face, as a fraction of its side (e.g. 0.1)")
    parser.add_argument("--align", choices=ALIGN_MODES, default="none",
                        help="eyes: find 468 landmarks (MediaPipe face mesh) in the Haar box and turn the crop so "
                        "the eyes are level, keeping the Haar crop's framing; saves Dataset/landmarks.npz")
    parser.add_argument("--size", type=int, default=faces.DEFAULT_IMAGE_SIZE, help="side of the square crops, pixels")
    parser.add_argument("--split", nargs=3, metavar=("TRAIN", "VALID", "TEST"),
                        default=[f"{round(f * 100)}" for f in DEFAULT_FRACTIONS],
                        help="shares of subjects per split: percentages (70 15 15) or fractions (0.7 0.15 0.15)")
    parser.add_argument("--folds", type=int, default=0,
                        help="also deal every subject into one of K cross-validation folds (manifest column fold)")
    parser.add_argument("--on-miss", choices=ON_MISS, default="skip",
                        help="photo with no face: skip it (listed in the manifest), crop its centre square, "
                        "or stop with an error")
    parser.add_argument("--min-neighbors", type=int, default=faces.DEFAULT_MIN_NEIGHBORS,
                        help="Haar minNeighbors: lower finds more faces and more false ones")
    parser.add_argument("--min-face", type=float, default=CropOptions.min_face,
                        help="smallest face side as a fraction of the photo's shorter side")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="threads (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output folder made with other settings (its Train/Valid/Test and manifest)")
    add_common_arguments(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def options_from_args(args):
    """CropOptions from parsed arguments (raises EFRError for a bad --angle, --gaze or --split)."""
    return CropOptions(
        layout=args.layout,
        subject_regex=args.subject_regex,
        angles=parse_angles(args.angle),
        gazes=parse_gazes(args.gaze),
        cascade=args.cascade,
        margin=args.margin,
        size=args.size,
        fractions=parse_fractions(args.split),
        seed=args.seed,
        folds=args.folds,
        on_miss=args.on_miss,
        min_neighbors=args.min_neighbors,
        min_face=args.min_face,
        align=args.align,
    )


def run_args(args):
    """Run the stage for parsed arguments; return the CropSummary (raises EFRError when nothing is usable)."""
    setup_logging(args.quiet, args.verbose)
    summary = crop_dataset(args.src, args.dst, options_from_args(args), workers=args.workers,
                           overwrite=args.overwrite, progress=not args.quiet)
    print(summary.format())
    summary.raise_if_unusable()
    return summary
