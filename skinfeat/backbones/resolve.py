"""Turn what the user typed after ``--module`` into a ``Module``."""

import hashlib
import os
import re
import tempfile
from pathlib import Path

from skinfeat.backbones import cache
from skinfeat.backbones.build import build_builtin, builtin_dir, is_built
from skinfeat.backbones.catalog import Entry, load_catalog
from skinfeat.backbones.module import Module
from skinfeat.core.errors import ModuleError
from skinfeat.core.tf_runtime import tensorflow_hub

# Chosen by the worst shift (README "How the defaults were chosen"): EfficientNet-Lite0
# with multi-layer pooling and shades-of-gray colour constancy inside the module.
DEFAULT_MODULE = "efficientnet-lite0-stages-sog"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
FINETUNED = "finetuned/"  # names of modules `skinfeat finetune` put in the module cache
_FINETUNED_NAME = re.compile(r"finetuned/[A-Za-z0-9][A-Za-z0-9._-]*")


def resolve_module(spec=None, *, input_size=None, check=True):
    """The backbone named by ``spec``:

    - a catalog name (``efficientnet-lite0``; built-ins are converted into the
      module cache on first use, offline);
    - a TF-Hub / Kaggle Models handle (``https://...``), downloaded and cached by
      ``tensorflow_hub`` (``TFHUB_CACHE_DIR`` honoured);
    - a local SavedModel directory, or a ``.tar.gz`` of one;
    - ``finetuned/NAME``: a module ``skinfeat finetune`` wrote into the module cache.

    ``None`` means ``DEFAULT_MODULE``. ``input_size`` (height, width) overrides
    the module's size; it is refused for a module whose signature fixes another.
    Modules that skinfeat did not build are loaded and checked here, so a bad
    one fails now with a ModuleError that says why (``check=False``: named and
    fingerprinted only, without TensorFlow; loading it later checks it).
    """
    spec = DEFAULT_MODULE if spec is None else str(spec)
    catalog = load_catalog()
    if spec in catalog.entries:
        entry = catalog.entries[spec]
        if entry.builtin:
            return Module(spec, build_builtin(entry), "builtin", entry, input_size)
        return _checked(Module(spec, _fetch(entry.handle, catalog), "handle", entry, input_size), check)
    if spec.startswith(FINETUNED):  # the cache first; a local directory of that name second
        found = _finetuned(spec, input_size)
        if found is not None or not Path(spec).exists():
            return found or _no_finetuned(spec)
    if "://" in spec:
        return _checked(Module(spec, _fetch(spec, catalog), "handle", input_size=input_size), check)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("saved_model.pb", "saved_model.pbtxt")):
            raise ModuleError(f"{path} is a directory but not a SavedModel (no saved_model.pb in it); "
                              "give the directory that tf.saved_model.save wrote")
        return _checked(Module(str(path.resolve()), path.resolve(), "directory", input_size=input_size), check)
    if path.is_file():
        if not spec.endswith(ARCHIVE_SUFFIXES):
            raise ModuleError(f"{path} is a file; expected a SavedModel directory or a .tar.gz of one")
        directory = cache.extract_tarball(path)
        return _checked(Module(str(path.resolve()), directory, "archive", input_size=input_size), check)
    if "/" in spec or spec.startswith((".", "~")) or spec.endswith(ARCHIVE_SUFFIXES):
        raise ModuleError(f"{spec}: no such SavedModel directory or archive")
    raise catalog.unknown(spec)


def _checked(module, check):
    return module.check() if check else module


def quick_fingerprint(spec):
    """The fingerprint of the module ``spec`` names, read without loading it (no
    TensorFlow): a built built-in or a fine-tuned module (their descriptor) or a
    SavedModel directory (its files' hash); None where that cannot be done (a handle,
    an archive, a built-in not built yet, an unknown name)."""
    spec = str(spec)
    entry = load_catalog().entries.get(spec)
    if entry is not None:
        return Module(spec, builtin_dir(entry), "builtin", entry).fingerprint if entry.builtin and is_built(entry) \
            else None
    if is_finetuned_name(spec):
        found = _finetuned(spec, None)
        return found.fingerprint if found is not None else None
    path = Path(spec).expanduser()
    return cache.fingerprint(path) if (path / "saved_model.pb").is_file() else None


def is_finetuned_name(spec):
    """Whether ``spec`` names a module of skinfeat's own cache (``finetuned/NAME``, never a path)."""
    return bool(_FINETUNED_NAME.fullmatch(str(spec)))


def finetuned_modules():
    """``{name: descriptor}`` of the fine-tuned modules in the module cache."""
    root = cache.modules_dir() / FINETUNED
    found = {}
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        descriptor = cache.read_descriptor(directory)
        if directory.is_dir() and descriptor and descriptor.get("kind") == "finetuned":
            found[FINETUNED + directory.name] = descriptor
    return found


def finetuned_entry(name, descriptor):
    """A catalog Entry for a fine-tuned module, from its descriptor."""
    return Entry(name=name, source=descriptor.get("source", "skinfeat finetune"),
                 input_size=tuple(descriptor["input_size"]), feature_dim=int(descriptor["feature_dim"]),
                 preprocessing=descriptor.get("preprocessing", "inside the module"),
                 pretraining=descriptor.get("pretraining", "unknown"), license=descriptor.get("license", "unknown"))


def _finetuned(spec, input_size):
    """The fine-tuned module ``spec`` of the module cache, or None."""
    directory = cache.modules_dir() / spec
    descriptor = cache.read_descriptor(directory) if _FINETUNED_NAME.fullmatch(spec) else None
    if not descriptor or descriptor.get("kind") != "finetuned":
        return None
    return Module(spec, directory, "finetuned", finetuned_entry(spec, descriptor), input_size)


def _no_finetuned(spec):
    known = ", ".join(finetuned_modules()) or "none yet"
    raise ModuleError(f"no fine-tuned module {spec!r} in the module cache {cache.modules_dir() / FINETUNED} "
                      f"(fine-tuned modules there: {known}); make it with `skinfeat finetune`, "
                      "or check SKINFEAT_HOME")


def _fetch(handle, catalog):
    """Local directory of a TF-Hub / Kaggle handle, via tensorflow_hub's resolver and cache."""
    hub = tensorflow_hub()

    try:
        return hub.resolve(handle)
    except Exception as exc:  # urllib, tarfile and TF file errors: all mean "could not fetch"
        offline = ", ".join(e.name for e in catalog.builtins())
        raise ModuleError(
            f"could not fetch {handle}: {exc}. Handles need network access the first time "
            f"(then they are cached in TFHUB_CACHE_DIR); with no network, use a built-in "
            f"offline backbone: {offline}") from None


def build_module(name, force=False):
    """Build a built-in catalog backbone (or fetch a handle into the TF-Hub cache);
    return its SavedModel directory."""
    entry = load_catalog().get(name)
    if entry.builtin:
        return build_builtin(entry, force=force)
    return Path(resolve_module(name).path)


def availability(entry):
    """A word for ``modules list``: can this catalog entry be used right now?"""
    if entry.builtin:
        if is_built(entry):
            return "built"
        try:
            entry.weights_path()
        except ModuleError:
            return "weights missing"
        return "offline"
    return "cached" if _hub_cached(entry.handle) else "network"


def _hub_cached(handle):
    """Whether tensorflow_hub's cache holds ``handle`` (its layout: sha1 of the handle,
    plus a descriptor file written after a complete download)."""
    root = Path(os.environ.get("TFHUB_CACHE_DIR") or Path(tempfile.gettempdir()) / "tfhub_modules")
    name = hashlib.sha1(handle.encode("utf8")).hexdigest()
    return (root / name).is_dir() and (root / f"{name}.descriptor.txt").is_file()
