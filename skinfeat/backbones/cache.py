"""The module cache under ``$SKINFEAT_HOME/modules``: atomic, fingerprinted builds.

Like TF-Hub's ``atomic_download``: take a lock, write into a temporary
directory next to the destination, add a descriptor, then rename into place.
A directory at the final name is therefore always complete; its descriptor
records the SavedModel's fingerprint, checked again before the module is used.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import tarfile
import time
from pathlib import Path

from skinfeat.core import paths
from skinfeat.core.atomic import atomic_dir
from skinfeat.core.errors import CacheError, ModuleError
from skinfeat.core.writable import reason

DESCRIPTOR = "skinfeat-module.json"
LOCK_TIMEOUT_S = 600


def modules_dir():
    return paths.skinfeat_home() / "modules"


def fingerprint(saved_model_dir):
    """sha256 over ``saved_model.pb`` and ``variables/*`` (names and bytes, sorted)."""
    root = Path(saved_model_dir)
    files = [p for p in (root / "saved_model.pb", root / "saved_model.pbtxt") if p.is_file()]
    variables = root / "variables"
    if variables.is_dir():
        files += sorted(p for p in variables.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        _update(digest, path)
    return digest.hexdigest()


def _update(digest, path):
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def read_descriptor(directory):
    """The descriptor dict of a cached module, or None if there is none."""
    try:
        return json.loads((Path(directory) / DESCRIPTOR).read_text())
    except (OSError, ValueError):
        return None


def _unwritable(where, exc):
    return CacheError(
        f"cannot write the module cache at {where}: {reason(exc)}. "
        "Set SKINFEAT_HOME to a writable directory (or build the module where the cache is writable).")


@contextlib.contextmanager
def _lock(path, timeout_s=LOCK_TIMEOUT_S):
    """An exclusive ``flock`` on ``path`` (released even if the holder dies)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    with f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CacheError(f"{path} has been locked by another process for {timeout_s} s; "
                                     "is another build stuck? Retry later.") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_build(final, produce, *, is_complete, force=False):
    """Create directory ``final`` by ``produce(tmp_dir) -> descriptor dict``, atomically.

    Skips the work when ``is_complete(final)`` (checked again under the lock, so
    concurrent callers build once). The descriptor (plus the fingerprint) is
    written inside the directory before the rename.
    """
    final = Path(final)
    if not force and is_complete(final):
        return final
    with _lock(final.with_name(final.name + ".lock")):
        if not force and is_complete(final):
            return final
        try:
            with atomic_dir(final) as tmp:  # swept after a kill; an old build stays until the new one is in
                descriptor = produce(tmp)
                descriptor["fingerprint"] = fingerprint(tmp)
                (tmp / DESCRIPTOR).write_text(json.dumps(descriptor, indent=2) + "\n")
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
                raise _unwritable(final.parent, exc) from None
            raise
    return final


def verify(directory):
    """Raise ModuleError unless the cached module's files match its descriptor."""
    descriptor = read_descriptor(directory)
    if descriptor is None or fingerprint(directory) != descriptor.get("fingerprint"):
        raise ModuleError(
            f"cached module {directory} is corrupt (its files no longer match the fingerprint "
            "recorded when it was built); rebuild it with `skinfeat modules build NAME --force` "
            "or delete the directory")


def extract_tarball(archive):
    """Unpack a ``.tar.gz`` SavedModel into the cache (once per archive content);
    return the directory that holds ``saved_model.pb``."""
    archive = Path(archive).resolve()
    digest = _update(hashlib.sha256(), archive).hexdigest()

    def produce(tmp):
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ModuleError(f"cannot unpack {archive}: {exc}") from None
        return {"archive": str(archive), "sha256": digest}

    final = atomic_build(modules_dir() / "archives" / digest[:16], produce,
                         is_complete=lambda d: read_descriptor(d) is not None)
    found = sorted(p.parent for p in final.rglob("saved_model.pb"))
    if not found:
        raise ModuleError(f"{archive} holds no SavedModel (no saved_model.pb inside)")
    return found[0]
