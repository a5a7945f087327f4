"""The model directory's format: file names, format version, the manifest
(``model.json``: read and checked field by field, written atomically), the head's
arrays (``state.npz``: plain finite numbers), file hashes, the one fingerprint
check, which backbone a model may use (``backbone_spec``) and how a model
directory is written (``new_model_dir``: complete or not there). See ``skinfeat.model``
for the layout.

A model directory may come from anywhere, so reading one trusts nothing in it:
every field has its type checked before use, a symlink may not lead out of the
directory, and damage is a one-line ModelError naming the directory."""

import fnmatch
import hashlib
import json
import os
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from skinfeat.backbones.catalog import load_catalog
from skinfeat.backbones.resolve import is_finetuned_name
from skinfeat.core.atomic import atomic_dir, write_atomically
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import ModelError
from skinfeat.core.jsonsafe import json_safe
from skinfeat.core.writable import write_error
from skinfeat.data.metadata import check_encoding
from skinfeat.features.precision import PRECISIONS
from skinfeat.heads.params import PARAMS, problem
from skinfeat.imaging.images import RESIZERS
from skinfeat.imaging.lesion import LESION_OPTIONS

FORMAT = "skinfeat-model"
FORMAT_VERSION = 1
ENSEMBLE_FORMAT = "skinfeat-ensemble"  # `skinfeat ensemble --out`: skinfeat.model.ensemble_dir
MANIFEST = "model.json"
STATE = "state.npz"
FALLBACK = "fallback"  # the image-only model inside a model fitted with metadata (compare --best)
TFLITE = "backbone.tflite"
BACKBONE_KEYS = ("module", "module_source", "module_fingerprint", "module_info", "input_size",
                 "resize", "feature_dim", "views", "dtype", "augment", "lesion", "precision", "int8_calibration")
REFIT = "re-fit with `skinfeat fit --out`"
# What rebuilding or running a head from damaged arrays or files raises.
HEAD_ERRORS = (ArithmeticError, AttributeError, LookupError, OSError, TypeError, ValueError)
MAX_MANIFEST_BYTES = 1 << 24

_NONE = type(None)
_FIELDS = {  # block -> field -> the types it may have (absent counts as None)
    "": {"head": (str,), "params": (dict,), "classes": (list,), "backbone": (dict,), "files": (list,),
         "training": (dict, _NONE), "export": (dict, _NONE), "features": (dict, _NONE),
         "numpy_head": (dict, _NONE), "parts": (list, _NONE), "metadata": (dict, _NONE)},
    "backbone": {"module": (str, _NONE), "module_source": (str, _NONE), "module_fingerprint": (str, _NONE),
                 "module_info": (dict, str, _NONE), "input_size": (list, int, _NONE), "resize": (str, _NONE),
                 "feature_dim": (int, _NONE), "views": (int, _NONE), "dtype": (str, _NONE),
                 "augment": (str, _NONE), "lesion": (str, _NONE), "precision": (str, _NONE),
                 "int8_calibration": (str, _NONE)},
    "export": {"file": (str, _NONE), "sha256": (str, _NONE), "module": (str, _NONE),
               "module_fingerprint": (str, _NONE), "input_size": (list, _NONE), "resize": (str, _NONE),
               "feature_dim": (int, _NONE), "skipped": (str, _NONE)},
    "training": {"use_views": (bool, _NONE), "class_counts": (list, _NONE), "run_id": (str, _NONE)},
}


class EnsembleDirectory(ModelError):
    """``read_manifest`` of an ensemble directory: it holds several models, not one."""

    def __init__(self, directory, manifest):
        members = manifest.get("members")
        n = len(members) if isinstance(members, list) and members else 2
        super().__init__(f"model {directory} is an ensemble of {n} models (`skinfeat ensemble --out`), not one "
                         f"model; this command takes one: give it one of its members instead, e.g. export or "
                         f"explain {Path(directory) / 'members' / '0'} (members/0 to members/{n - 1})")
        self.manifest = manifest


def damaged(directory, what):
    """The error for a model directory that is damaged in ``what`` way."""
    return ModelError(f"model {directory} is incomplete or damaged: {what}; re-fit it with "
                      f"`skinfeat fit --out {directory}`")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory, optional=()):
    """The decoded and checked model.json of ``directory``, with every file it lists
    present (but those matching a pattern in ``optional``); ModelError saying what is
    wrong otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist; expected a folder written by "
                         "`skinfeat fit --out DIR`")
    path = directory / MANIFEST
    try:
        refuse_links_out(directory)
        if not path.is_file():
            raise ModelError(f"{directory} holds no {MANIFEST}; expected a model directory written by "
                             "`skinfeat fit --out DIR`")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise damaged(directory, f"its {MANIFEST} has {path.stat().st_size} bytes, not a few thousand")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read model {directory}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); {REFIT}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{path} holds {json.dumps(manifest)[:40]}, not a skinfeat model (expected a JSON "
                         f"object with format {FORMAT!r}); {REFIT}")
    if manifest.get("format") == ENSEMBLE_FORMAT:
        raise EnsembleDirectory(directory, manifest)
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not a skinfeat model (format={manifest.get('format')!r}, expected "
                         f"{FORMAT!r}); {REFIT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has model format version {manifest.get('format_version')}, this "
                         f"skinfeat reads version {FORMAT_VERSION}; {REFIT}")
    _check_fields(directory, manifest)
    missing = [name for name in manifest["files"] if not any(fnmatch.fnmatchcase(name, p) for p in optional)
               and not (directory / name).is_file()]
    if missing:
        raise ModelError(f"model {directory} is incomplete or damaged: it is missing {', '.join(missing)} "
                         f"(listed in its {MANIFEST}); copy the whole directory, or re-fit with "
                         f"`skinfeat fit --out {directory}`")
    return manifest


def refuse_links_out(directory):
    root = os.path.realpath(directory)
    for entry in os.scandir(directory):
        if entry.is_symlink() and os.path.commonpath([root, os.path.realpath(entry.path)]) != root:
            raise damaged(directory, f"its {entry.name} is a link to {os.readlink(entry.path)}, outside the model")


def _check_fields(directory, manifest):
    """Every field skinfeat reads has the type it expects; classes, file names, sizes
    and parameters are ones it knows."""

    def bad(where, value, expected):
        return damaged(directory, f"its {MANIFEST} has {where} = {json.dumps(value)[:60]}, expected {expected}")

    for block, fields in _FIELDS.items():
        values = manifest if not block else manifest.get(block) or {}
        for key, types in fields.items():
            value = values.get(key)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                expected = " or ".join("null" if t is _NONE else t.__name__ for t in types)
                raise bad(f"{block + '.' if block else ''}{key}", value, expected)
    for i, part in enumerate(manifest.get("parts") or []):
        if not isinstance(part, dict) or not isinstance(part.get("backbone"), dict) \
                or not isinstance(part.get("export"), (dict, _NONE)):
            raise bad(f"parts[{i}]", part, "{backbone: {...}, export: {...} or null}")
        for block in ("backbone", "export"):
            for key, types in _FIELDS[block].items():
                value = (part.get(block) or {}).get(key)
                if not isinstance(value, types) or isinstance(value, bool):
                    raise bad(f"parts[{i}].{block}.{key}", value,
                              " or ".join("null" if t is _NONE else t.__name__ for t in types))
    if manifest.get("parts") is not None and len(manifest["parts"]) < 2:
        raise bad("parts", manifest["parts"], "two or more backbones (one is the backbone block)")
    if manifest.get("metadata") is not None:
        why = check_encoding(manifest["metadata"])
        if why:
            raise bad("metadata", manifest["metadata"], f"a metadata encoding ({why})")
    classes, files = manifest["classes"], manifest["files"]
    if len(classes) < 2 or len(set(map(str, classes))) < len(classes) or not set(map(str, classes)) <= set(CLASSES):
        raise bad("classes", classes, f"two or more of {', '.join(CLASSES)}")
    if not all(isinstance(f, str) and f not in ("", ".", "..") and os.path.basename(f) == f for f in files):
        raise bad("files", files, "names of files inside the model directory")
    blocks = []
    for i, part in enumerate(model_parts(manifest)):
        where = f"parts[{i}]." if manifest.get("parts") else ""
        if part["export"].get("file") not in (None, part["file"]):
            raise bad(f"{where}export.file", part["export"]["file"], repr(part["file"]))
        blocks += [(f"{where}backbone", part["backbone"]), (f"{where}export", part["export"])]
    for where, block in blocks:
        size = block.get("input_size")
        if isinstance(size, list) and not (len(size) == 2 and all(_count(s) and s > 0 for s in size)):
            raise bad(f"{where}.input_size", size, "[height, width]")
    counts = (manifest.get("training") or {}).get("class_counts")
    if counts is not None and not (len(counts) == len(CLASSES) and all(_count(c) and c >= 0 for c in counts)):
        raise bad("training.class_counts", counts, f"{len(CLASSES)} image counts")
    if manifest["head"] not in PARAMS:
        raise bad("head", manifest["head"], f"one of {', '.join(PARAMS)}")
    why = problem(manifest["head"], manifest["params"])
    if why:
        raise damaged(directory, f"its {MANIFEST} params: {why}")


def model_parts(manifest):
    """The backbones of a model, in the order their features are joined: each
    ``{"backbone": block, "export": block, "file": its TFLite file name}``. One
    (the manifest's own backbone and export blocks), or the ``parts`` of a model
    fitted on several backbones' features (``skinfeat.features.join``)."""
    parts = manifest.get("parts")
    if not parts:
        return [{"backbone": manifest["backbone"], "export": manifest.get("export") or {}, "file": TFLITE}]
    return [{"backbone": p["backbone"], "export": p.get("export") or {}, "file": part_file(i)}
            for i, p in enumerate(parts)]


def part_file(index):
    return f"backbone-{index}.tflite"


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool)


def read_state(directory, manifest):
    """The head's arrays in ``state.npz``: plain finite numbers (never unpickled), with
    ``classes_`` the classes model.json names and ``n_features_in_`` a count."""
    path = Path(directory) / STATE
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError
        with np.load(path, allow_pickle=False) as npz:
            state = {name: npz[name] for name in npz.files}
    except (OSError, EOFError, ValueError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error):
        raise damaged(directory, f"its {STATE} is truncated or not a numpy .npz archive of plain arrays") from None
    for name, array in state.items():
        if array.dtype.kind not in "biuf":
            raise damaged(directory, f"its {STATE} array {name} holds {array.dtype} values, expected numbers")
        if not np.isfinite(array).all():
            raise damaged(directory, f"its {STATE} array {name} holds NaN or infinite values")
    want = [CLASSES.index(c) for c in manifest["classes"]]
    classes, offsets, n = (state.get(k) for k in ("classes_", "class_offsets_", "n_features_in_"))
    if classes is None or classes.ndim != 1 or classes.tolist() != want:
        shown = "none" if classes is None else np.array2string(classes, threshold=10)
        raise damaged(directory, f"its {STATE} classes_ ({shown}) are not the classes of its {MANIFEST} ({want})")
    if offsets is None or offsets.shape != classes.shape:
        raise damaged(directory, f"its {STATE} class_offsets_ has shape {getattr(offsets, 'shape', None)}, "
                                 f"expected ({len(want)},)")
    if n is None or n.ndim != 0 or n != int(n) or n < 1:
        raise damaged(directory, f"its {STATE} n_features_in_ is {n}, expected a count of features")
    return state


def probe_head(directory, function, n_features, n_classes):
    """Run a loaded head ``function`` on zeros: arrays that do not fit together fail
    here, as damage, not later on the user's images."""
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(function(np.zeros((2, n_features), np.float32)))
    except HEAD_ERRORS as exc:
        why = (str(exc).strip().splitlines() or [""])[0]
        raise damaged(directory, f"its head's arrays do not fit together ({type(exc).__name__}: {why})") from None
    if out.shape != (2, n_classes) or not np.isfinite(out).all():
        raise damaged(directory, f"its head gives {out.shape} values on 2 images, expected finite (2, {n_classes})")


def write_manifest(directory, manifest):
    """Write ``manifest`` as ``directory``/model.json, atomically."""

    text = json.dumps(json_safe(manifest), indent=1)
    write_atomically(Path(directory) / MANIFEST, lambda f: f.write(text))


def check_fingerprint(directory, manifest, fingerprint, subject, fix):
    """ModelError unless ``fingerprint`` (of ``subject``: the backbone as it is now,
    or a file made from it) is the one the model's features were extracted with."""
    saved = (manifest.get("backbone") or {}).get("module_fingerprint")
    if fingerprint != saved:
        raise ModelError(f"model {directory}: {subject} has fingerprint {str(fingerprint)[:12]}, but the model "
                         f"was fitted on features of fingerprint {str(saved)[:12]}: the backbone changed since "
                         f"the model was fitted; {fix}")


def resize_policy(directory, block, error=ModelError):
    """The resize policy recorded in a backbone or export ``block``; never a default.
    ``error``: the exception class for a missing or unknown one."""

    policy = (block or {}).get("resize")
    if not policy:
        raise error(f"model {directory} does not record the resize policy its features were extracted "
                    "with (backbone.resize in model.json), so images cannot be prepared as they were; "
                    "re-extract with `skinfeat extract`, then re-fit with `skinfeat fit --out`")
    if policy not in RESIZERS:
        raise error(f"model {directory} records resize policy {policy!r}, which this skinfeat does not know "
                    f"(expected one of {', '.join(RESIZERS)}); re-fit with `skinfeat fit --out {directory}`")
    return policy


def _recorded(where, block, key, known, default, what, error):
    """``block[key]`` (``default`` where absent: made before it existed); ``error``
    (naming ``where``) for a value this skinfeat does not know."""
    value = (block or {}).get(key) or default
    if value not in known:
        raise error(f"{where} records {what} {value!r}, which this skinfeat does not know (expected one of "
                    f"{', '.join(known)}); update skinfeat, or re-extract with `skinfeat extract --{key}` and "
                    "re-fit with `skinfeat fit --out`")
    return value


def lesion_policy(where, block, error=ModelError):
    """The lesion preprocessing (``skinfeat.imaging.lesion``) recorded in a backbone ``block``
    (of a model.json, or a features file's attributes); "none" where it is absent."""

    return _recorded(where, block, "lesion", LESION_OPTIONS, "none", "lesion preprocessing", error)


def precision_policy(where, block, error=ModelError):
    """The precision (``skinfeat.features.precision``) the features of a backbone ``block`` were
    extracted at; "float32" where it is absent."""

    return _recorded(where, block, "precision", PRECISIONS, "float32", "precision", error)


def backbone_spec(directory, manifest, module=None, block=None):
    """What ``resolve_module`` may load as the backbone of the model in ``directory``:
    ``module`` when the user names one (``--module``), otherwise the recorded module
    only if the catalog has it or it is a ``finetuned/NAME`` of skinfeat's own module
    cache (resolved there only, never as a path); ``block``: the backbone block
    of one of its ``model_parts`` (default: the model's own). A model folder never picks a SavedModel path or a
    handle by itself: the graph it names could do anything when it runs."""
    if module:
        return str(module)
    recorded = (block or manifest["backbone"]).get("module")
    if not recorded:
        raise ModelError(f"model {directory} does not record which backbone produced its features; pass it "
                         "with --module, or re-fit with `skinfeat fit --out` on features from `skinfeat extract`")

    entries = load_catalog().entries.values()
    if recorded in {e.name for e in entries} | {e.handle for e in entries if e.handle}:
        return recorded
    if is_finetuned_name(recorded):  # one `skinfeat finetune` wrote into skinfeat's own module cache
        return recorded
    kind = "the TF-Hub/Kaggle handle" if "://" in recorded else "the SavedModel at"
    raise ModelError(f"model {directory}'s backbone is {kind} {recorded}, which is not in the catalog; "
                     f"pass it with --module {recorded} if you trust it")


@contextmanager
def new_model_dir(directory):
    """A temporary directory beside ``directory`` that takes its place when the block
    ends (``skinfeat.core.atomic.atomic_dir``: a model directory is complete or it is not
    there, an old one stays until the new one is in, and what killed writers left is
    swept); an OSError, such as a full disk, is one error naming ``directory``
    (``skinfeat.core.writable.write_error``) and ``directory`` is unchanged."""

    directory = Path(directory)
    target = Path(os.path.realpath(directory))  # --out may be a link to the model's folder
    if target.exists() and not target.is_dir():
        raise ModelError(f"{directory} is a file; expected a model directory or a new path")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise ModelError(f"{directory} exists and is not a skinfeat model directory; "
                         "expected an empty or new directory for --out: pick another path")
    try:
        with atomic_dir(target) as tmp:
            yield tmp
    except OSError as exc:
        raise write_error(directory, exc, "the model") from None
