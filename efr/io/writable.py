"""Can an output folder be written?  Asked before any slow work, so a read-only or misplaced --out is one line.

``check_writable`` looks at the folder, or at its nearest existing parent when it does
not exist yet (it creates nothing), and writes and removes one empty probe file there.
``os_error_message`` turns an OSError met while writing (a full disk, a folder made
read-only mid-run) into the one line the command-line scripts print.
"""

import errno
import os
from pathlib import Path

from efr.io.errors import EFRError

# OSErrors that are the machine's or the user's doing, not a bug: reported as one line (efr.commands.cli.run).
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR}


def _probe(folder):
    """Create and remove an empty file in ``folder`` (raises OSError when that cannot be done)."""
    probe = Path(folder) / f".efr-write-test-{os.getpid()}"
    with open(probe, "xb"):
        pass
    probe.unlink()


def check_writable(path, option="--out"):
    """Raise EFRError unless folder ``path`` exists and can be written, or can be created where it would go."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise EFRError(f"{option} {path} {where}: give a folder")
    try:
        _probe(existing)
    except OSError as err:
        raise EFRError(f"{option} {path}: cannot write in {existing} ({err.strerror or err}); "
                       f"choose an {option} you can write to") from err
    return path


def os_error_message(err):
    """The one line for an OSError about a file (its path, what went wrong, what to do), or None for others."""
    if err.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = err.filename if err.filename is not None else "an output file"
    advice = ("free some space, or write to another disk" if err.errno in (errno.ENOSPC, errno.EDQUOT)
              else "check the folder's permissions, or choose another output folder")
    return f"cannot write {where}: {err.strerror or err}; {advice}"
