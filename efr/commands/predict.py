"""`efr predict` / predict.py: the emotion of every face in photos, folders, videos or a camera.

    efr predict --model runs/NAME/best.keras photo.jpg folder/ clip.mp4
    efr predict --model runs/NAME/best.keras photos/ --out predictions/ --format json
    efr predict --model runs/NAME/best.keras --camera 0 --show

Faces are found and cropped exactly as crop.py does (efr.faces.detect), so they look as they
did in training.  Prints a table (file or frame, box, label, confidence, probability
per class); with --out DIR also writes DIR/predictions.csv (or .json) and annotated
copies of the photos or annotated videos under DIR/annotated/.  Input files are
never modified.  Reference: docs/predict.md.
"""

import argparse
import os
from pathlib import Path

from efr.commands.cli import add_verbose_argument, setup_logging
from efr.commands import entry_points
from efr.io.errors import EFRError
from efr.models.litert import DEFAULT_RUNTIME, RUNTIMES
from efr.predict.predictor import DEFAULT_BATCH_SIZE
from efr.predict.writers import FORMATS, format_summary, format_table
from efr.predict.run import predict

SUMMARY = "emotion of every face in photos, folders, videos or a camera"
PARSER_KWARGS = {
    "description": "Predict the emotion of every face in photos, folders (recursive), videos or a camera.",
    "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
}


def add_arguments(parser):
    """predict's options: the one place they are defined."""
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="photos, folders (searched recursively) or videos (mp4, avi, mov, mkv, ...)")
    parser.add_argument("--model", required=True, help="a model saved by efe_cnn.py, e.g. runs/NAME/best.keras")
    parser.add_argument("--camera", type=int, default=None, metavar="INDEX",
                        help="read a camera instead of files (0 = the first camera); stop with q (--show) or Ctrl-C")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write predictions.<format> and annotated photos/videos (DIR/annotated/) here")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="file format of the predictions in --out")
    parser.add_argument("--faces-only", action="store_true",
                        help="inputs are already-cropped faces (e.g. a Dataset folder): skip face detection")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="faces per model call")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="what runs the classifier: litert (XNNPACK, faster on CPU; converted once per model and "
                        "cached), keras, or auto (litert when converted already or for a video, a camera or 200+ photos, "
                        "and only when it gives Keras' outputs; else keras)")
    parser.add_argument("--subject-norm", action="store_true",
                        help="for fusion models trained with --subject-norm: centre each person's faces on their own "
                        "mean (TRANSDUCTIVE; photos: at least 3 faces a person, people from RaFD names or "
                        "--subject-regex; videos and cameras: the running mean of each face track)")
    parser.add_argument("--subject-regex", default=None,
                        help=r"with --subject-norm: regex on the file name whose first group is the person, "
                        r"e.g. '^([A-Z]{2})\.' for JAFFE")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos and cameras: analyse every Nth frame (annotated videos keep every frame)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="videos and cameras: stop after N frames")
    parser.add_argument("--max-faces", type=int, default=None, metavar="N",
                        help="keep only the N largest faces of each photo or frame")
    parser.add_argument("--cascade", default=None,
                        help="Haar cascade (default: the one the model's training crops used, else crop.py's default)")
    parser.add_argument("--margin", type=float, default=None,
                        help="border around each face as a fraction of its side (default: as in training)")
    parser.add_argument("--show", action="store_true",
                        help="show annotated frames in a window (needs the desktop opencv-python build)")
    parser.add_argument("--table-rows", type=int, default=50, help="rows of the table printed on the terminal")
    parser.add_argument("--workers", type=int, default=None, help="face-detection threads (default: all cores)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="use a model from a run that did not finish (interrupted, killed or failed)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors; no progress bars")
    add_verbose_argument(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def common_root(inputs):
    """The folder the table's file names are shown relative to (the inputs' common parent)."""
    try:
        return Path(os.path.commonpath([str(Path(p).parent) for p in inputs])) if inputs else None
    except ValueError:  # absolute and relative paths mixed, or different drives
        return None


def run_args(args):
    """Predict as the parsed arguments say; return the PredictionResult."""
    setup_logging(args.quiet, args.verbose)
    if args.table_rows < 0:
        raise EFRError(f"--table-rows {args.table_rows}: expected 0 or more")
    result = predict(
        args.model, args.inputs, camera=args.camera, out_dir=args.out, fmt=args.format,
        batch_size=args.batch_size, every=args.every, max_frames=args.max_frames, faces_only=args.faces_only,
        subject_norm=args.subject_norm, subject_regex=args.subject_regex,
        cascade=args.cascade, margin=args.margin, max_faces=args.max_faces, show=args.show,
        workers=args.workers, progress=not args.quiet, allow_unfinished=args.allow_unfinished,
        runtime=args.runtime,
    )
    print(format_table(result, max_rows=args.table_rows, common_root=common_root(args.inputs)))
    print(format_summary(result))
    if result.predictions_file is not None:
        print(f"predictions: {result.predictions_file}")
        print(f"annotated photos/videos: {Path(args.out) / 'annotated'}")
    return result
