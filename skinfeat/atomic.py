"""Write a file so that a reader never sees it half-written: into a temporary
name beside it, then renamed into place (``os.replace`` is atomic on one file
system). On failure the temporary file is removed and ``path`` is unchanged.
The finished file gets the usual permissions (umask), not mkstemp's private ones.

    with atomic_path("out.npz", suffix=".npz") as tmp:   # any writer that takes a path
        np.savez(tmp, x=x)
    write_atomically("out.csv", lambda f: f.write(text))  # a text (or binary) file object
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, suffix=".tmp"):
    """A temporary path beside ``path``; renamed onto ``path`` when the block ends
    without an error, removed otherwise. ``suffix``: for writers that insist on
    one (``np.savez`` appends ``.npz`` to a name without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Discard(Exception):
    pass


def write_atomically(path, write, keep=None, binary=False):
    """Call ``write(file)`` on a temporary file beside ``path`` (text, UTF-8, no
    newline translation; bytes with ``binary``) and rename it into place, unless
    ``keep`` is given and ``keep(result)`` is false; returns ``write``'s result."""
    result = None
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8", newline="") as f:
                result = write(f)
                f.flush()
                os.fsync(f.fileno())
            if keep is not None and not keep(result):
                raise _Discard
    except _Discard:
        pass
    return result
