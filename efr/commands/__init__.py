"""The `efr` command: one verb per stage, each with exactly the options of its script.

    efr crop | augment | train | evaluate | predict | cluster | pipeline | demo | backbone | serve | export  [options]

Every verb lives in ``efr.commands.<verb>`` with ``add_arguments(parser)`` (the one home
of its options), ``run_args(args)`` and ``main(argv)``.  The top-level scripts (crop.py,
data_aug.py, efe_cnn.py, evaluate.py, predict.py, cluster.py, demo.py) are thin
wrappers over the same modules, so an option added to a stage appears in its script,
in `efr <verb>` and, for crop, augment and train, in `efr pipeline` alike.
"""

import argparse
import importlib
import sys

from efr import __version__
from efr.commands.cli import run

VERBS = ("crop", "augment", "train", "evaluate", "predict", "cluster", "pipeline", "demo", "backbone",
         "serve", "export")
SCRIPTS = {"crop": "crop.py", "augment": "data_aug.py", "train": "efe_cnn.py", "evaluate": "evaluate.py",
           "predict": "predict.py", "cluster": "cluster.py", "pipeline": None, "demo": "demo.py",
           "backbone": None, "serve": None, "export": None}


def entry_points(module_name):
    """``build_parser(prog=None)``, ``parse_args(argv=None)`` and ``main(argv=None)`` of one verb module.

    Built from the module's ``add_arguments``, ``PARSER_KWARGS`` and ``run_args``, looked up
    when called, so that every verb (and its script) parses and runs the same way.
    """
    def module():
        return sys.modules[module_name]

    def build_parser(prog=None):
        return module().add_arguments(argparse.ArgumentParser(prog=prog, **module().PARSER_KWARGS))

    def parse_args(argv=None):
        return build_parser().parse_args(argv)

    def main(argv=None):
        module().run_args(parse_args(argv))
        return 0

    return build_parser, parse_args, main


def command_module(verb):
    """The module of one verb (efr.commands.<verb>)."""
    if verb not in VERBS:
        raise KeyError(verb)
    return importlib.import_module(f"efr.commands.{verb}")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="efr",
        description="EFR: facial-expression recognition from raw photos to a report you can cite. "
        "`efr pipeline --src PHOTOS --out PROJECT` runs crop -> augment -> train -> report in one go; "
        "`efr <command> --help` shows each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"efr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb in VERBS:
        module = command_module(verb)
        module.add_arguments(commands.add_parser(verb, help=module.SUMMARY, **module.PARSER_KWARGS))
    return parser


def main(argv=None):
    """Entry point of the `efr` console command and of `python -m efr`; returns the exit status."""
    args = build_parser().parse_args(argv)
    module = command_module(args.command)

    def call(_argv):
        module.run_args(args)
        return 0

    return run(call)
