"""The whole pipeline in one command on synthetic RaFD-like photos (= `efr demo`).

Thin wrapper: the options and the work live in efr/commands/demo.py, shared with `efr demo`.
Reference: docs/demo.md (or `python demo.py --help`).
"""

import sys

from efr.commands.cli import run
from efr.commands.demo import build_parser, command_line, main, parse_args, settings_from_args  # noqa: F401

if __name__ == "__main__":
    sys.exit(run(main))
