"""Cross-dataset evaluation: score a trained model on a labelled photo folder it never saw (= `efr evaluate`).

Thin wrapper: the options and the work live in efr/commands/evaluate.py, shared with `efr evaluate`.
Reference: docs/evaluate.md (or `python evaluate.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.evaluate import build_parser, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
