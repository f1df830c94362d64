"""Shared helpers of the bench scripts: the common JSON result shape, and what a run records.

Every bench script that ``bench/run_all.py`` drives takes ``--json PATH`` and writes one
result there, in this shape (``result()`` builds it, ``write_result()`` writes it)::

    {
      "name": "crop",                                  # short name of the benchmark
      "command": "python bench/bench_crop.py --subjects 2",  # as run
      "rows": [                                        # the figures, in display order
        {"label": "efr, 2 workers", "value": 97.3, "unit": "photos/s", "detail": "1.64 s"},
        {"label": "faces found (original / efr)", "value": "16/16, 16/16", "unit": ""},
        ...
      ],
      "targets": [                                     # ratios measured side by side in one run
        {"name": "crop / decoding floor", "ratio": 0.41, "op": ">=", "target": 0.5,
         "met": false, "detail": "crop 97.3 photos/s, floor 236.1 photos/s, best of 3 rounds"},
        ...
      ],
      "notes": ["free text, one line each"]
    }

``value`` is a number or a short string; ``unit`` may be ""; ``detail`` is optional.
``op`` is how ``ratio`` is compared with ``target`` (">=", ">", "<=", "<"); ``met`` is
that comparison.  A row label may start with a group and a colon ("faces only: efr",
"end to end: original") to group rows of one benchmark; e.g. bench_predict.py's rows are
the faces-only rates of efr / fer / plain loop / ceiling and the end-to-end rates of
efr / fer / original, and its targets ratios such as "faces only: efr / fer".

Bench scripts print as before; the JSON file is written in addition.
"""

import json
import math
import numbers
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def row(label, value, unit="", detail=None):
    """One figure: a label, a number (or short text) and its unit."""
    entry = {"label": str(label), "value": _plain(value), "unit": str(unit)}
    if detail:
        entry["detail"] = str(detail)
    return entry


def target(name, ratio, goal, op=">=", detail=""):
    """A target: ``ratio`` compared with ``goal`` by ``op``; ``met`` is False for a missing ratio (None, NaN)."""
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}: choose from {', '.join(OPS)}")
    ratio = None if ratio is None or ratio != ratio else float(ratio)
    return {"name": str(name), "ratio": ratio, "op": op, "target": float(goal),
            "met": ratio is not None and bool(OPS[op](ratio, float(goal))), "detail": str(detail)}


def result(name, command, rows=(), targets=(), notes=()):
    """A whole result in the common shape."""
    return {"name": str(name), "command": str(command), "rows": list(rows), "targets": list(targets),
            "notes": [str(n) for n in notes]}


def command_line(argv=None, script=None):
    """``python bench/<script> <args>`` as typed, without ``--json PATH`` (it only says where results went)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--json":
            skip = True
            continue
        if arg.startswith("--json="):
            continue
        kept.append(arg)
    script = Path(script or sys.argv[0])
    try:
        shown = script.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = script.as_posix()
    return shlex.join(["python", shown, *kept])


def add_json_option(parser):
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the results to PATH as JSON (the shape in bench/common.py)")


def write_result(path, data):
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file + os.replace)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text_atomic(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def machine():
    """Cores, CPU model (from /proc/cpuinfo) and RAM (GiB, from /proc/meminfo) of this machine."""
    model, ram_gib = platform.processor() or "unknown", None
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    ram_gib = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "ram_gib": ram_gib, "platform": platform.platform()}


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def versions():
    """python, tensorflow, keras, opencv, numpy, efr versions, from the installed packages (nothing imported)."""
    found = {"python": platform.python_version()}
    for key, names in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",)),
                       ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
                       ("numpy", ("numpy",))):
        for name in names:
            try:
                found[key] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            found[key] = "not installed"
    found["efr"] = efr_version()
    return found


def efr_version():
    """efr.__version__ of this checkout, read from the file (importing efr would set up TensorFlow's logging)."""
    try:
        for line in (REPO / "efr" / "__init__.py").read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    except OSError:
        pass
    return "unknown"


def synthetic_key():
    """A short hash of efr/data/synthetic/: photos generated by another version of it are made again."""
    import hashlib

    files = sorted((REPO / "efr" / "data" / "synthetic").glob("*.py"))
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:12]


def best_per_call(rounds, fn, min_seconds):
    """(seconds of one call, calls per round): the fastest of ``rounds`` rounds, each round
    repeating ``fn`` enough times to last about ``min_seconds`` (the warm-up call's time
    decides how many), as timeit's autorange does.

    Short calls timed one by one are the ones a quiet instant of a busy machine flatters;
    rounds of equal length let a short job and a long one meet the same noise.
    """
    start = time.perf_counter()
    fn()
    calls = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-9)))
    best = None
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        seconds = (time.perf_counter() - start) / calls
        best = seconds if best is None else min(best, seconds)
    return best, calls


def now_utc():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(value):
    """Numbers as plain Python ints/floats (NumPy scalars are not JSON; NaN becomes None), text as is."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return None if number != number else round(number, 4)
    return str(value)
