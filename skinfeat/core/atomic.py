"""Write a file or a directory so that a reader never sees it half-written: into a
temporary name beside it, then renamed into place (``os.replace`` is atomic on one
file system). On failure the temporary one is removed and ``path`` is unchanged.
The finished file gets the usual permissions (umask), not mkstemp's private ones.

Every temporary name carries the writer's process id (``.NAME.PID.xxxx.tmp``), so
what a killed writer left behind is recognisable: each later write to the same
path first removes the leftovers of writers that are no longer running
(``sweep``); a live writer's files are never touched. (The kill tests hold a write
just before its rename with ``tests/held_writes.py``, outside the package.)

    with atomic_path("out.npz", suffix=".npz") as tmp:   # any writer that takes a path
        np.savez(tmp, x=x)
    write_atomically("out.csv", lambda f: f.write(text))  # a text (or binary) file object
    with atomic_dir("models/best") as tmp:                # a whole directory
        (tmp / "a.json").write_text("{}")
"""

import ctypes
import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

_TEMP = re.compile(r"(\d+)\.[a-z0-9_]{8}(?![a-z0-9_])")  # PID, then mkstemp's 8 random characters


def _prefix(path):
    return f".{Path(path).name}."


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def leftovers(path):
    """Temporary files and directories beside ``path`` that a writer of ``path``
    which is no longer running left behind."""
    path = Path(path)
    prefix = _prefix(path)
    found = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = _TEMP.match(entry.name[len(prefix):])
        if match and int(match[1]) != os.getpid() and not _alive(int(match[1])):
            found.append(Path(entry.path))
    return found


_ANY_TEMP = re.compile(r"\.(.+)\.(\d+)\.[a-z0-9_]{8}(?![a-z0-9_])")


def leftovers_in(directory):
    """What killed writers of any file in ``directory`` left there (for folders of
    files with new names each time, such as run records)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return [Path(e.path) for e in entries
            if (m := _ANY_TEMP.match(e.name)) and int(m[2]) != os.getpid() and not _alive(int(m[2]))]


def sweep(path, everything=False):
    """Remove what killed writers of ``path`` left behind (see ``leftovers``); with
    ``everything``, ``path`` is a directory and the leftovers of any of its files go."""
    for left in leftovers_in(path) if everything else leftovers(path):
        if left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
        else:
            left.unlink(missing_ok=True)


def _finish(tmp, path):
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_path(path, suffix=".tmp"):
    """A temporary path beside ``path``; renamed onto ``path`` when the block ends
    without an error, removed otherwise. ``suffix``: for writers that insist on
    one (``np.savez`` appends ``.npz`` to a name without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_prefix(path)}{os.getpid()}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _finish(tmp, path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path):
    """A temporary directory beside ``path``; when the block ends without an error
    it takes ``path``'s place (``replace_dir``: an old ``path`` stays until the new
    one is in), otherwise it is removed and ``path`` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{_prefix(path)}{os.getpid()}.", suffix=".tmp"))
    try:
        yield tmp
        _finish(tmp, path)
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b):
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where
    the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new, path):
    """Put directory ``new`` at ``path``. An existing ``path`` is swapped out in one
    step where the system allows it, so ``path`` is never missing (a kill at any
    moment leaves the old or the new directory there, and the other one as a
    leftover that ``sweep`` removes); ``new`` is gone afterwards."""
    new, path = Path(new), Path(path)
    if not path.exists():
        os.replace(new, path)
        return
    if not path.is_dir() or path.is_symlink():
        raise IsADirectoryError(errno.EISDIR, "a directory cannot replace a file", str(path))
    if _exchange(new, path):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{_prefix(path)}{os.getpid()}.", suffix=".old"))
    os.replace(path, old)  # fallback: two renames, the old directory kept until the new one is in
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
