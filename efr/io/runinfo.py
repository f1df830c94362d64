"""What a run records about itself: settings, library versions, machine."""

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from efr import __version__
from efr.io.imageio import write_text_atomic

_PACKAGES = ("tensorflow", "keras", "opencv-python-headless", "opencv-python", "numpy", "scikit-learn", "matplotlib",
             "fpng")


def library_versions():
    versions = {"python": platform.python_version(), "efr": __version__}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(folder=None):
    """The git commit EFR runs from ("<hash>", "+dirty" when changed), or None outside a checkout."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def command_line(argv=None):
    """The command as typed (the program's name, not its full path), quoted for a shell."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        program = Path(argv[0])
        # python -m efr runs efr/__main__.py: show it as typed
        argv[0:1] = ["python", "-m", program.parent.name] if program.name == "__main__.py" else [program.name]
    return shlex.join(argv)


def provenance_rows(versions=None, started_utc=None, argv=None):
    """[(label, value)] for a report: date, EFR version, git commit, libraries, command."""
    versions = versions or library_versions()
    libraries = ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("efr",))
    return [
        ("date (UTC)", started_utc or datetime.now(timezone.utc).isoformat(timespec="seconds")),
        ("EFR version", versions.get("efr", __version__)),
        ("git commit", git_commit() or "unknown (not a git checkout)"),
        ("libraries", libraries),
        ("command", command_line(argv)),
    ]


def machine_info():
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "argv": sys.argv}


def write_json(path, data):
    """Write ``data`` as indented JSON atomically (paths and other objects become strings)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
