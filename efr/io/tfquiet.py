"""TensorFlow without its C++ start-up chatter, unless asked for (``--verbose``).

TensorFlow prints lines such as ``E0000 ... failed call to cuInit: ... CUDA error`` or
``I0000 ... cudart_stub.cc ... Could not find cuda drivers`` on every start: they read
as failures and are not.  Two sources, two switches, both set before TensorFlow loads:

* its C++ log, which ``TF_CPP_MIN_LOG_LEVEL`` filters (set to 3 here unless the user
  set it: then theirs is kept);
* lines its shared libraries write to stderr while they load, before that filter
  exists (``WARNING: All log messages before absl::InitializeLog() ...``).  While the
  ``tensorflow`` package is first imported, stderr goes to a temporary file; the
  known start-up lines are dropped and anything else is written back to stderr.

``install()`` runs from ``efr/__init__.py``; ``set_verbose(True)`` (the scripts'
``--verbose``) undoes both before TensorFlow is imported.
"""

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "3"
# What TensorFlow and its libraries print while loading, and nothing else.
START_UP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub|cpu_feature_guard|cuda_\w+|port)\.cc:\d+\]"
    r"|To enable the following instructions:.*rebuild TensorFlow"
    r"|oneDNN custom operations are on)"
)

_state = {"level_set_by_efr": False, "finder": None}


class _QuietLoader(importlib.abc.Loader):
    """The tensorflow package's own loader, run with stderr captured."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _captured_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` (once) and wraps its loader in _QuietLoader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        _remove_finder()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _captured_stderr:
    """Send file descriptor 2 to a temporary file; write back its lines that are not start-up noise."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        kept = [line for line in text.splitlines() if line.strip() and not START_UP_NOISE.match(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
        return False


def _remove_finder():
    finder = _state["finder"]
    if finder is not None and finder in sys.meta_path:
        sys.meta_path.remove(finder)
    _state["finder"] = None


def install():
    """Quiet TensorFlow's start-up (see the module docstring); a no-op once TensorFlow is loaded."""
    if LEVEL_VARIABLE not in os.environ:
        os.environ[LEVEL_VARIABLE] = QUIET_LEVEL
        _state["level_set_by_efr"] = True
    if "tensorflow" not in sys.modules and _state["finder"] is None:
        _state["finder"] = _QuietTensorFlowFinder()
        sys.meta_path.insert(0, _state["finder"])


def set_verbose(verbose):
    """``verbose``: show TensorFlow's start-up and C++ log lines (a level the user set is kept)."""
    if verbose:
        _remove_finder()
        if _state["level_set_by_efr"]:
            os.environ[LEVEL_VARIABLE] = "0"
    else:
        install()
