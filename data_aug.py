"""Stage 2: add augmented copies of a Dataset's Train and Valid photos (= `efr augment`).

Thin wrapper: the options and the work live in efr/commands/augment.py, shared with `efr augment`.
Reference: docs/augment.md (or `python data_aug.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.augment import build_parser, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
