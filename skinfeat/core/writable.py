"""Where commands write: each output place is checked before the long work starts
(``check_writable``), and a write that fails anyway becomes one line naming the
place (``write_error``, ``writing``), not an OSError traceback.

    check_writable(out, "the report")              # before any work
    with writing(out, "the report"):
        write_atomically(out, ...)
"""

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from skinfeat.core.errors import CacheError

_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EISDIR: "it is a folder, not a file",
            errno.ENOTDIR: "it or a folder above it is a file, not a folder",
            errno.EFBIG: "the file is too large for the file system"}
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # fixed by freeing space


def reason(exc):
    """What an OSError means for a write, in a few words."""
    return _REASONS.get(exc.errno, exc.strerror or str(exc))


def write_error(path, exc, what="output"):
    """The CacheError of a failed write of ``what`` to ``path``."""
    fix = ("free some space there or write elsewhere" if exc.errno in FULL else
           "give another path" if exc.errno in (errno.EISDIR, errno.ENOTDIR) else "choose a writable place")
    return CacheError(f"cannot write {what} to {path}: {reason(exc)}; {fix}")


@contextmanager
def writing(path, what="output"):
    """Turn an OSError of the block (a write of ``path``) into ``write_error``."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc, what) from None


def probe(path, folder=False):
    """OSError unless a file (``folder``: a folder) can be written at ``path``: it is
    not of the other kind, and one byte can be written in the folder that will
    hold it (the nearest one that exists), through a nameless file that leaves
    nothing behind. Creates nothing."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        code = errno.ENOTDIR if folder else errno.EISDIR
        raise OSError(code, os.strerror(code), str(path))
    place = path if folder and path.is_dir() else path.parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(place))
    with tempfile.TemporaryFile(dir=place) as f:
        f.write(b"\0")
        f.flush()


def check_writable(path, what="output", folder=False):
    """``probe``, as a CacheError naming ``path`` and ``what`` would be written there.
    Call it before the long work whose result goes to ``path``."""
    try:
        probe(path, folder)
    except OSError as exc:
        raise write_error(path, exc, what) from None
