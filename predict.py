"""Stage 4: the emotion of every face in photos, folders, videos or a camera (= `efr predict`).

Thin wrapper: the options and the work live in efr/commands/predict.py, shared with `efr predict`.
Reference: docs/predict.md (or `python predict.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.predict import build_parser, common_root, main, parse_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
