"""What a run records about itself: settings, library versions, machine."""

import json
import os
import platform
import sys
from importlib import metadata

from efr import __version__
from efr.imageio import write_text_atomic

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


def machine_info():
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "argv": sys.argv}


def write_json(path, data):
    """Write ``data`` as indented JSON atomically (paths and other objects become strings)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
