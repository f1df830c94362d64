"""`efr cluster` / cluster.py: classification by clustering: cluster the faces of a Dataset split and score the clusters.

    efr cluster --dataset Dataset --model runs/<name>/best.keras --out runs/<name>/cluster
    efr cluster --dataset Dataset --features hog --out runs/hog-cluster

Writes cluster.json (matched accuracy, NMI, ARI per method; nearest-centroid accuracy;
settings and versions) and cluster_map.png (2-D map coloured by true emotion).  Reference: docs/cluster.md.
"""

import argparse

from efr.commands.cli import add_common_arguments, setup_logging
from efr.commands import entry_points

SUMMARY = "cluster the faces of a Dataset split (model features, pixels or HOG) and score the clusters"
PARSER_KWARGS = {"description": "Classification by clustering: cluster the faces of a Dataset split and score the "
                 "clusters.", "formatter_class": argparse.ArgumentDefaultsHelpFormatter}


def add_arguments(parser):
    """cluster's options: the one place they are defined."""
    from efr.evaluate.cluster import FEATURES, METHODS

    parser.add_argument("--dataset", default="Dataset", help="Dataset folder made by crop.py")
    parser.add_argument("--model", default=None, help="trained EFR model (runs/<name>/best.keras); "
                        "needed for --features model, and gives the class order otherwise")
    parser.add_argument("--features", choices=FEATURES, default="model",
                        help="model: the model's penultimate layer; pixels: grey 48x48 thumbnails; "
                        "hog: OpenCV HOG of grey 64x64 faces")
    parser.add_argument("--pca", type=int, default=50, help="PCA dimensions after standardising (0: none)")
    parser.add_argument("--split", default="Test", help="split whose faces are clustered")
    parser.add_argument("--centroid-split", default="Train",
                        help="split the nearest-centroid classifier takes its centroids from ('' for none)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--map", choices=("tsne", "pca"), default="tsne", help="2-D map method")
    parser.add_argument("--out", required=True, help="output folder (e.g. runs/<name>/cluster)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="use a --model from a run that did not finish (interrupted, killed or failed)")
    add_common_arguments(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def run_args(args):
    setup_logging(args.quiet, args.verbose)
    from efr.evaluate.cluster import run_clustering  # checks every option before reading a face

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return run_clustering(args.dataset, args.out, model_path=args.model, features=args.features,
                          pca=args.pca or None, split=args.split, centroid_split=args.centroid_split or None,
                          methods=methods, map_method=args.map, seed=args.seed,
                          allow_unfinished=args.allow_unfinished)
