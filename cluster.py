"""Classification by clustering: cluster the faces of a Dataset split and score the clusters (= `efr cluster`).

Thin wrapper: the options and the work live in efr/commands/cluster.py, shared with `efr cluster`.
Reference: docs/cluster.md (or `python cluster.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.cluster import build_parser, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
