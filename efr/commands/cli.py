"""What every top-level script shares: logging set-up and turning EFRError into an exit code.

Library code raises and logs; only the scripts print and choose exit codes.
"""

import logging
import sys

from efr.io.errors import EFRError

EXIT_USER_ERROR = 2
MAX_SEED = 2**32 - 1  # NumPy's and TensorFlow's seeds are unsigned 32-bit numbers


def seed_value(text):
    """argparse type of --seed: a whole number 0 .. 2**32-1 (a negative one is a traceback deep in NumPy)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value}: use a whole number from 0 to {MAX_SEED}")
    return value


def add_common_arguments(parser):
    parser.add_argument("--seed", type=seed_value, default=0,
                        help="random seed, 0 or more; the same seed repeats the run (default 0)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors; no progress bars")
    add_verbose_argument(parser)
    return parser


def add_verbose_argument(parser):
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up and C++ log lines (hidden by default)")
    return parser


def setup_logging(quiet=False, verbose=False):
    """Log lines to stderr (warnings only when ``quiet``); ``verbose`` lets TensorFlow's own lines through."""
    from efr.io import tfquiet

    tfquiet.set_verbose(verbose)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)


def error_exit_code(err):
    """Log ``err`` as ``run`` would and return its exit status (a bug: its traceback, and 1)."""
    def fail(_argv):
        raise err

    try:
        return run(fail)
    except BaseException:  # noqa: BLE001 - not a user error: the traceback, for a bug report
        logging.getLogger("efr").error("error: %s: %s", type(err).__name__, err, exc_info=err)
        return 1


def run(main, argv=None):
    """Call ``main(argv)``; a user error becomes one 'error:' line and exit status 2."""
    try:
        code = main(argv)
    except EFRError as err:
        logging.getLogger("efr").error("error: %s", err)
        return EXIT_USER_ERROR
    except OSError as err:
        from efr.io.writable import os_error_message

        message = os_error_message(err)  # a full disk or a read-only folder: the user's to fix, not a bug
        if message is None:
            raise
        logging.getLogger("efr").error("error: %s", message)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        # A stage that knows how it resumes says so (efr.io.runstate.RunInterrupted); the rest finish on a re-run.
        message = str(err) or "interrupted: finished files are kept; re-run the same command to complete"
        logging.getLogger("efr").error("%s", message)
        return 130
    return 0 if code is None else code
