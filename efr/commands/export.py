"""`efr export`: a trained model as a deployable TensorFlow Lite, SavedModel or ONNX file.

    efr export --model runs/NAME/best.keras --format tflite            # best.tflite + best.tflite.json
    efr export --model efrnet --format savedmodel --out efrnet_savedmodel

Beside the export, ``<out>.json`` holds the classes and the preprocessing; each export is
checked against Keras on a probe batch.  Reference: docs/serve.md (export section).
"""

import argparse

from efr.commands import entry_points
from efr.commands.cli import add_verbose_argument, setup_logging
from efr.models.export import FORMATS, TOLERANCE

SUMMARY = "a model as a deployable tflite, SavedModel or ONNX file, with its classes and preprocessing"
PARSER_KWARGS = {
    "description": "Export a model for use outside EFR: the file (or SavedModel folder) plus <out>.json with its "
    f"classes and preprocessing; checked against Keras on a probe batch (largest difference {TOLERANCE:g}).",
    "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
}


def add_arguments(parser):
    """export's options: the one place they are defined."""
    parser.add_argument("--model", required=True,
                        help="a model saved by efe_cnn.py (runs/NAME/best.keras) or a built-in one (efrnet)")
    parser.add_argument("--format", choices=FORMATS, required=True,
                        help="tflite (LiteRT / TensorFlow Lite), savedmodel (a TensorFlow SavedModel folder) or onnx")
    parser.add_argument("--out", default=None,
                        help="where to write it (default: <model name>.tflite / .onnx / <model name>_savedmodel "
                        "in the current folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="export a model from a run that did not finish (interrupted, killed or failed)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    add_verbose_argument(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def run_args(args):
    """Export as the parsed arguments say; return the Exported."""
    from efr.models.export import export_model

    setup_logging(args.quiet, args.verbose)
    done = export_model(args.model, args.format, out=args.out, overwrite=args.overwrite,
                        allow_unfinished=args.allow_unfinished)
    print(f"{args.format}: {done.path} (largest difference from Keras on the probe batch: {done.gap:.2g})")
    print(f"classes and preprocessing: {done.info_path}")
    return done
