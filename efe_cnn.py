"""Stage 3: train the expression classifier on a Dataset folder and write a run folder (= `efr train`).

Thin wrapper: the options and the work live in efr/commands/train.py, shared with `efr train`.
Reference: docs/train.md (or `python efe_cnn.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.train import build_parser, main, parse_args, settings_from_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
