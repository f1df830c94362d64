"""Stage 1: crop the faces out of raw photos into a subject-disjoint Train/Valid/Test dataset (= `efr crop`).

Thin wrapper: the options and the work live in efr/commands/crop.py, shared with `efr crop`.
Reference: docs/crop.md (or `python crop.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.crop import build_parser, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
