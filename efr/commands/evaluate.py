"""`efr evaluate` / evaluate.py: score a trained model on a labelled photo folder it never saw (cross-dataset).

    efr evaluate --model runs/NAME/best.keras --data other-set/ --out runs/NAME/eval-other
    efr evaluate --model runs/NAME/best.keras --data jaffe/ --subject-regex '^([A-Z]{2})\\.'
    efr evaluate --model runs/NAME/best.keras --data Dataset2/Test --faces-only

Labels come from RaFD file names or <Emotion>/ folders (aliases accepted); faces are found
as in training.  Writes metrics.json, predictions.csv, confusion matrices, the per-class
report and report.html into --out.  Reference: docs/evaluate.md.
"""

import argparse
from pathlib import Path

from efr.commands.cli import add_common_arguments, setup_logging
from efr.commands import entry_points

SUMMARY = "score a trained model on a labelled photo folder it never saw (cross-dataset evaluation)"
PARSER_KWARGS = {"description": __doc__.replace("`efr evaluate` / ", ""),
                 "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_arguments(parser):
    """evaluate's options: the one place they are defined."""
    from efr.evaluate.crossdataset import LAYOUTS

    parser.add_argument("--model", required=True, help="a model saved by efe_cnn.py, e.g. runs/NAME/best.keras")
    parser.add_argument("--data", required=True, help="folder of labelled photos (RaFD names or <Emotion>/ folders; "
                        "searched recursively; never modified)")
    parser.add_argument("--out", default=None, help="output folder (default: eval-<data folder name> beside the model)")
    parser.add_argument("--exist-ok", action="store_true", help="write into an existing --out that holds other files")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="rafd: labels from RaFD file names; folders: from <Emotion>/ folders (default auto)")
    parser.add_argument("--subject-regex", default=None,
                        help=r"folders layout: regex on the file name whose first group is the subject id "
                        r"(e.g. '^([A-Z]{2})\.' for JAFFE); gives the subject count and the subject bootstrap")
    parser.add_argument("--angle", default="all", help="RaFD names: camera angles to score (090, a list such as "
                        "045,090,135, or all; default all); the others are counted and listed, not scored")
    parser.add_argument("--gaze", default="all",
                        help="RaFD names: gazes to score (frontal, left, right, a comma list, or all; default all)")
    parser.add_argument("--faces-only", action="store_true",
                        help="the photos are already face crops (a Dataset split): skip face detection")
    parser.add_argument("--cascade", default=None,
                        help="Haar cascade (default: the one the model's training crops used)")
    parser.add_argument("--margin", type=float, default=None,
                        help="border around each face as a fraction of its side (default: as in training)")
    parser.add_argument("--batch-size", type=int, default=32, help="faces per model call (default 32)")
    parser.add_argument("--workers", type=int, default=None, help="face-detection threads (default: all cores)")
    parser.add_argument("--gallery-size", type=int, default=48, help="misclassified faces shown in report.html")
    add_common_arguments(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def default_out(model, data):
    return Path(model).parent / f"eval-{Path(data).resolve().name}"


def settings_from_args(args):
    from efr.crop.options import parse_angles, parse_gazes
    from efr.evaluate.crossdataset import EvalSettings

    out = args.out if args.out is not None else default_out(args.model, args.data)
    return EvalSettings(model=args.model, data=args.data, out=str(out), faces_only=args.faces_only,
                        layout=args.layout, subject_regex=args.subject_regex, angles=parse_angles(args.angle),
                        gazes=parse_gazes(args.gaze), cascade=args.cascade,
                        margin=args.margin, batch_size=args.batch_size, workers=args.workers,
                        gallery_size=args.gallery_size, seed=args.seed, exist_ok=args.exist_ok)


def result_lines(metrics, out_dir):
    from efr.evaluate.stats import format_interval

    counts = metrics["photos"]
    lines = [
        f"accuracy over {counts['scored_faces']} faces found: {metrics['accuracy_faces']:.3f} "
        f"{format_interval(metrics['accuracy_faces_ci95'])} (chance {metrics['chance_accuracy']:.3f})",
        f"accuracy over all {counts['scored_faces'] + counts['no_face']} photos (no face = wrong): "
        f"{metrics['accuracy_all_photos']:.3f} {format_interval(metrics['accuracy_all_photos_ci95'])}",
    ]
    from efr.evaluate.crossdataset import overlap_line

    overlap = overlap_line(metrics.get("training_overlap"))
    if overlap:
        lines.insert(0, overlap)
    if metrics.get("transductive"):
        lines.append("these numbers are TRANSDUCTIVE: the model was trained with --subject-norm, so each face was "
                     "centred on the mean of the same person's faces in this set")
    if metrics["classes_not_in_set"]:
        outside = metrics["answers_outside_set"]
        lines.append(f"scored on {len(metrics['set_classes'])} shared classes; answers with a class the set lacks "
                     f"({', '.join(metrics['classes_not_in_set'])}): {outside['count']} ({outside['fraction']:.1%})")
    lines.append(f"report: {Path(out_dir) / 'report.html'}")
    return lines


def run_args(args):
    setup_logging(args.quiet, args.verbose)
    from efr.evaluate.crossdataset import evaluate_folder

    result = evaluate_folder(settings_from_args(args))
    print("\n".join(result_lines(result.metrics, result.out_dir)))
    return result
