"""Stream a dataset through a backbone once into a content-keyed HDF5 feature file.

How it stays fast, flat in memory and safe to kill:

* Images are read, decoded and resized by a tf.data pipeline running in
  parallel with the network; only one chunk of rows (``CHUNK`` images) is ever
  held in memory.
* Each finished chunk is saved atomically as ``<file>.parts/chunk-NNNNN.npz``.
  A killed run resumes from the chunks it has; a batch never spans two chunks,
  so a resumed run computes exactly what an uninterrupted one does.
* When all chunks are there, the HDF5 file is assembled under a temporary name
  and renamed into place: a file under the final name is always complete.
* A lock file keeps two processes from extracting the same key at once; the
  second waits, then finds the finished file and does nothing.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinfeat import __version__
from skinfeat.backbones.resolve import resolve_module
from skinfeat.core.atomic import atomic_path, write_atomically
from skinfeat.core.devices import DEFAULT_DEVICE, DEVICES, resolve
from skinfeat.core.errors import CacheError, DataError, SkinfeatError, UsageError
from skinfeat.core.paths import features_dir
from skinfeat.core.progress import bar as progress_bar
from skinfeat.core.tf_runtime import tensorflow
from skinfeat.core.writable import FULL, probe, reason, write_error
from skinfeat.data.manifest import content_hashes
from skinfeat.features.pipeline import BATCH_SIZE, DECODE_THREADS, decode_path, forward_views, image_pipeline  # noqa: F401 (re-exported)
from skinfeat.features.precision import DEFAULT_PRECISION, extra_attrs, forward, int8_model
from skinfeat.features.precision import check as precision_check
from skinfeat.features.ray_engine import extract_on_ray, session
from skinfeat.features.store import (
    CONTENT_HEX,
    FORMAT_VERSION,
    TRAINED_ON,
    check_layout,
    read_attrs,
    trained_on_attr,
    write_feature_file,
)
from skinfeat.imaging.augment import AUGMENTS, DEFAULT_AUGMENT, augment_image, resize_tf  # noqa: F401 (re-exported)
from skinfeat.imaging.images import decode
from skinfeat.imaging.lesion import DEFAULT_LESION, LESION_OPTIONS, TAGS

RESIZE_POLICIES = ("squash", "crop", "pad")
# Chosen by the worst shift (benchmarks/bench_shift.py, README "How the defaults were
# chosen"): letterboxing (pad) scored best in-distribution (CV BMCA 0.598 vs crop
# 0.595) but its models learn the black bars and fall to 0.28-0.48 BMCA on images
# framed otherwise; square centre crops plus robust views hold.
DEFAULT_RESIZE = "crop"
DEFAULT_VIEWS = 2  # robust views per image for `skinfeat extract`: 2 scored as well as 4 under shift
ON_ERROR = ("skip", "fail")
DTYPES = ("float32", "float16")
ENGINES = ("local", "ray")
CHUNK = 1024  # rows per resumable part; a multiple of BATCH_SIZE
DEFAULT_SIZE = (224, 224)  # for modules that accept any size


@dataclass
class Run:
    """How an extraction runs (nothing of it is in the key): the engine, the device
    (resolved to cpu or gpu for the local engine; as asked for Ray, whose cluster
    decides), and for Ray the cluster address and number of actors."""
    engine: str = "local"
    device: str = DEFAULT_DEVICE
    ray_address: str = None
    workers: int = None


@dataclass
class ExtractResult:
    path: Path
    key: str
    reused: bool
    n_images: int
    skipped: list = field(default_factory=list)  # [(image_id, reason)]
    seconds: float = 0.0  # running the backbone (decode, resize, network), summed over chunks
    images_per_second: float = 0.0  # n_images / seconds
    wall_seconds: float = 0.0  # the whole call: building and loading the backbone, writing the file


# ----------------------------------------------------------------------------- keys

def manifest_digest(manifest, hashes=None):
    """sha256 over every row: id, label, lesion, metadata and the file's bytes
    (``hashes``: the rows' ``content_hashes``, computed when not given)."""
    h = hashlib.sha256()
    columns = sorted(manifest.metadata)
    for i, (image_id, content) in enumerate(zip(manifest.image_ids, hashes or content_hashes(manifest))):
        meta = [str(manifest.metadata[c][i]) for c in columns]
        row = [image_id, int(manifest.labels[i]), manifest.lesion_ids[i], content, *meta]
        h.update(json.dumps(row).encode())
    h.update(json.dumps(columns).encode())
    return h.hexdigest()


def feature_key(parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def slug(text):
    text = re.sub(r"^[a-z]+://", "", str(text).rstrip("/"))
    return re.sub(r"[^A-Za-z0-9.]+", "-", text)[-40:].strip("-.") or "module"


def _why_unreadable(path):
    """Why an image failed to decode (only called for failures)."""
    try:
        decode(path)
    except DataError as exc:
        return str(exc)
    return "could not be resized or augmented"


# ----------------------------------------------------------------------------- files

@contextmanager
def _locked(lock_path, progress):
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"another skinfeat process is extracting {lock_path[:-5]}; waiting for it...",
                      file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _writable_error(path, exc, parts=None, detail=""):
    """The one-line error of a failed write: what happened, what is kept, what to do."""

    if exc.errno not in FULL:
        return write_error(path, exc, "features")
    done = sorted(parts.glob("chunk-*.npz")) if parts is not None and parts.is_dir() else []
    if done:
        fix = (f"free space there (the same command then resumes from the {len(done)} finished "
               f"part{'s' if len(done) > 1 else ''} kept in {parts}) or pass --out on another disk")
    else:
        fix = "free space there or pass --out on another disk (nothing finished was changed)"
    return CacheError(f"cannot write features to {path}: {reason(exc)}{detail}; {fix}")


def _save_npz(path, **arrays):
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def _assemble(out, parts, manifest, key_parts, attrs, dim, hashes, trained_on=None):
    """Write the final HDF5 file from the chunk parts, one chunk in memory at a time.
    ``trained_on``: the image ids a fine-tuned backbone was trained on (None: not fine-tuned)."""
    index = [np.load(p, allow_pickle=False) for p in parts]  # npz arrays load on access
    rows = np.concatenate([c["rows"] for c in index]).astype(np.int64)
    skipped = [(manifest.image_ids[r], str(reason)) for c in index
               for r, reason in zip(c["skipped_rows"], c["skipped_reasons"])]
    seconds = float(sum(float(c["seconds"]) for c in index))
    views = key_parts["views"]
    chunks = ((c["features"], c["views"] if views else None) for c in index)
    all_attrs = {**attrs, **key_parts, "n_images": len(rows), "feature_dim": int(dim),
                 "extract_seconds": round(seconds, 3),
                 "images_per_second": round(len(rows) / seconds, 2) if seconds else 0.0}
    if trained_on is not None:  # the leak guard of `fit` (skinfeat.data.folds.unseen_folds) reads it
        all_attrs[TRAINED_ON] = trained_on_attr(np.asarray(manifest.image_ids)[rows], trained_on)
    need = len(rows) * int(dim) * np.dtype(key_parts["dtype"]).itemsize * (1 + views)
    free = shutil.disk_usage(out.parent).free
    if need > free:
        raise _writable_error(out, OSError(errno.ENOSPC, "full"), out.with_name(out.name + ".parts"),
                              f" (the file needs at least {need / 1e6:.1f} MB, {free / 1e6:.1f} MB are free)")
    with atomic_path(out) as tmp:
        write_feature_file(
            tmp, chunks=chunks, n=len(rows), dim=dim, views=views, dtype=key_parts["dtype"],
            image_ids=np.asarray(manifest.image_ids)[rows], labels=np.asarray(manifest.labels)[rows],
            lesion_ids=np.asarray(manifest.lesion_ids)[rows],
            metadata={k: np.asarray(v, dtype=object)[rows] for k, v in manifest.metadata.items()},
            content=[hashes[r][:CONTENT_HEX] for r in rows],
            skipped=skipped, attrs=all_attrs)
    return skipped, seconds, len(rows)


# ----------------------------------------------------------------------------- main entry

def extract_features(manifest, module=None, *, out=None, resize=DEFAULT_RESIZE, views=0,
                     augment=DEFAULT_AUGMENT, augment_seed=0, image_size=None, dtype="float32", on_error="skip",
                     dataset_name="dataset", progress=True, chunk_size=CHUNK, lesion=DEFAULT_LESION,
                     precision=DEFAULT_PRECISION, device=DEFAULT_DEVICE, engine="local", ray_address=None,
                     workers=None):
    """Extract features of every image in ``manifest`` with ``module`` (a spec for
    ``skinfeat.backbones.resolve.resolve_module`` or a resolved module) into an HDF5 file.

    Returns an ExtractResult. Rerunning with the same inputs reuses the file.
    ``lesion``: crop each image to its lesion first (``skinfeat.imaging.lesion``); part of the
    key (and the file name) unless "none", so features made otherwise never mix.
    ``chunk_size`` (a multiple of BATCH_SIZE) is how many rows a resumable part holds.
    ``precision`` (``skinfeat.features.precision``): part of the key unless float32. ``device``
    (``skinfeat.core.devices``): auto, cpu or gpu; not part of the key. ``engine``: ``local``
    (this process) or ``ray`` (``skinfeat.features.ray_engine``: Ray Data over ``workers``
    actors on the cluster at ``ray_address``, or on a local Ray started for the run);
    both write the same file.
    """
    if resize not in RESIZE_POLICIES:
        raise UsageError(f"--resize {resize!r} is not a resize policy; expected one of {', '.join(RESIZE_POLICIES)}")
    _check_choices(("--on-error", on_error, ON_ERROR), ("--dtype", dtype, DTYPES))
    if views < 0:
        raise UsageError(f"--views {views}: expected 0 or a positive number of augmented views")
    _check_choices(("--lesion", lesion, LESION_OPTIONS), ("--augment", augment, AUGMENTS),
                   ("--engine", engine, ENGINES))
    if engine == "local" and (ray_address or workers):
        raise UsageError("--ray-address and --workers are options of --engine ray; add --engine ray or drop them")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: expected a positive number of Ray actors")
    precision_check(precision, device)  # the device asked for: int8 on --device gpu is refused before any GPU look-up
    if device not in DEVICES:
        raise UsageError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if engine == "local":  # a Ray cluster's devices are known once connected

        device = resolve(device)  # cpu or gpu from here on
        precision_check(precision, device)
    if chunk_size <= 0 or chunk_size % BATCH_SIZE:
        raise UsageError(f"chunk_size {chunk_size}: expected a positive multiple of {BATCH_SIZE}")
    if len(manifest) == 0:
        raise DataError("the dataset has no images; point --data at a folder with JPEG or PNG files")

    start = time.perf_counter()
    if hasattr(module, "load"):
        mod = module
    else:
        mod = resolve_module(module)
    size = _image_size(mod, image_size)
    hashes = content_hashes(manifest)  # each file read once: for the key, then kept in the file
    key_parts = {
        "module": mod.name, "module_fingerprint": mod.fingerprint, "input_size": list(size),
        "resize": resize, "views": int(views), "augment_seed": int(augment_seed) if views else None,
        **({"augment": augment} if views else {}), **({"lesion": lesion} if lesion != "none" else {}),
        **({"precision": precision} if precision != DEFAULT_PRECISION else {}),
        "dtype": dtype, "manifest_sha256": manifest_digest(manifest, hashes), "format_version": FORMAT_VERSION,
    }
    key = feature_key(key_parts)
    out = Path(out) if out else features_dir() / (
        f"{slug(dataset_name)}__{slug(mod.name)}__{resize}{TAGS[lesion]}{f'-{augment}{views}' if views else ''}"
        f"{f'-{precision}' if precision != DEFAULT_PRECISION else ''}"
        f"__{key[:12]}.h5")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        reuse = _reusable(out, key)
        if reuse:
            return reuse
        probe(out)  # a read-only or full place fails before any work
        run = Run(engine, device, ray_address, workers)
        with _engine(run, precision) as cluster, _locked(str(out) + ".lock", progress):
            reuse = _reusable(out, key)  # another process may have finished it meanwhile
            if reuse:
                return reuse
            result = _extract_locked(manifest, mod, out, key, key_parts, size, on_error, progress,
                                     dataset_name, chunk_size, run, hashes, cluster)
            result.wall_seconds = time.perf_counter() - start
            return result
    except OSError as exc:
        raise _writable_error(out, exc, out.with_name(out.name + ".parts")) from None


def _check_choices(*options):
    """UsageError for the first (option, value, choices) whose value is not a choice."""
    for option, value, choices in options:
        if value not in choices:
            raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def _image_size(mod, image_size):
    if image_size is None:
        return tuple(mod.input_size or DEFAULT_SIZE)
    image_size = tuple(image_size)
    if mod.input_size and tuple(mod.input_size) != image_size:
        raise UsageError(f"module {mod.name} expects images of {mod.input_size[0]}x{mod.input_size[1]}, "
                         f"but --size {image_size[0]}x{image_size[1]} was requested; drop --size")
    return image_size


def _reusable(out, key):
    if not out.exists():
        return None
    attrs = read_attrs(out)
    if attrs.get("key") != key:
        raise CacheError(f"{out} holds features for other inputs (key {str(attrs.get('key'))[:12]}, "
                         f"expected {key[:12]}); choose another --out or delete that file")
    import h5py

    try:
        with h5py.File(out, "r") as f:
            check_layout(f, out)
            skipped = list(zip(f["skipped/image_id"].asstr()[:], f["skipped/reason"].asstr()[:]))
    except (SkinfeatError, OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        print(f"{out} is damaged ({exc}); extracting it again", file=sys.stderr)
        return None
    return ExtractResult(out, key, True, int(attrs["n_images"]), skipped,
                         float(attrs.get("extract_seconds", 0)), float(attrs.get("images_per_second", 0)))


def _engine(run, precision):
    """The Ray cluster of ``--engine ray`` (``skinfeat.features.ray_engine.session``), else nothing."""
    if run.engine != "ray":
        return nullcontext()

    return session(run, precision)


def _extract_locked(manifest, mod, out, key, key_parts, size, on_error, progress, dataset_name, chunk, run, hashes,
                    cluster=None):
    parts_dir = out.with_name(out.name + ".parts")
    stamp = parts_dir / "key.txt"
    if parts_dir.exists() and (not stamp.exists() or stamp.read_text() != f"{key} {chunk}"):
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(exist_ok=True)
    write_atomically(stamp, lambda f: f.write(f"{key} {chunk}"))

    n = len(manifest)
    starts = list(range(0, n, chunk))
    spans = [(s, min(s + chunk, n)) for s in starts]
    part = [parts_dir / f"chunk-{i:05d}.npz" for i in range(len(starts))]
    todo = [i for i in range(len(starts)) if not part[i].exists()]
    precision = key_parts.get("precision", DEFAULT_PRECISION)
    if todo:
        views = key_parts["views"]

        def flush(i, rows, feats, view_feats, seconds):
            _flush_chunk(part[i], manifest, *spans[i], rows, feats, view_feats, views, mod.feature_dim,
                         seconds, on_error)
            bar.update(spans[i][1] - spans[i][0])

        int8_path = None
        if precision == "int8":
            int8_path = int8_model(mod, manifest, size, key_parts["resize"], key_parts.get("lesion", "none"))
        done_before = n - sum(spans[i][1] - spans[i][0] for i in todo)
        bar = progress_bar(None, progress, total=n, initial=done_before, unit="img", desc=f"extract {mod.name}")
        if run.engine == "ray":
            extract_on_ray(cluster, manifest, mod, [(i, *spans[i]) for i in todo], key_parts, size, precision,
                           int8_path, flush)
        else:
            _extract_here(manifest, mod, [(i, *spans[i]) for i in todo], key_parts, size, precision,
                                   int8_path, run.device, flush)
        bar.close()

    info = mod.describe()
    attrs = {"key": key, "dataset": dataset_name, "module_source": info.get("source", ""), "module_info": info,
             "lesion": key_parts.get("lesion", "none"), "precision": precision, "skinfeat_version": __version__,
             **extra_attrs(precision, manifest),
             "tensorflow_version": _tf_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    skipped, seconds, count = _assemble(out, part, manifest, key_parts, attrs, mod.feature_dim, hashes,
                                        mod.trained_on() if hasattr(mod, "trained_on") else None)
    shutil.rmtree(parts_dir, ignore_errors=True)
    Path(str(out) + ".lock").unlink(missing_ok=True)
    return ExtractResult(out, key, False, count, skipped, seconds, count / seconds if seconds else 0.0)


def _extract_here(manifest, mod, todo, key_parts, size, precision, int8_path, device, flush):
    """The local engine: one tf.data pipeline over every missing chunk ``(i, start, stop)``
    of ``todo``, so decoding overlaps the network; batches never span two chunks, so a
    resumed run computes what a whole one does. Calls ``flush(i, rows, feats, views,
    seconds)`` per finished chunk. ``device``: cpu or gpu (``skinfeat.core.devices.resolve``)."""
    fwd = forward(mod, precision, device, int8_path)
    views = key_parts["views"]
    pipeline = image_pipeline(manifest.paths, [(start, stop) for _, start, stop in todo], size, key_parts["resize"],
                         views, key_parts["augment_seed"] or 0, key_parts.get("augment", "mild"),
                         key_parts.get("lesion", "none"))
    it = iter(pipeline)
    pending = list(todo)
    buf_rows, buf_feats, buf_views = [], [], []
    t0 = time.perf_counter()
    while pending:
        batch = next(it, None)
        first_row = int(batch[0][0]) if batch is not None else None
        # Flush every chunk that ended before this batch's first row.
        while pending and (batch is None or first_row >= pending[0][2]):
            i = pending.pop(0)[0]
            flush(i, buf_rows, buf_feats, buf_views, time.perf_counter() - t0)
            buf_rows, buf_feats, buf_views = [], [], []
            t0 = time.perf_counter()
        if batch is None:
            break
        rows, images, extra = batch
        feats, view_feats = forward_views(fwd, images, extra, views)
        buf_rows.append(rows.numpy())
        buf_feats.append(feats)
        if views:
            buf_views.append(view_feats)


def _flush_chunk(path, manifest, start, stop, rows, feats, views_buf, views, dim, seconds, on_error):
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    missing = np.setdiff1d(np.arange(start, stop), rows)
    reasons = [_why_unreadable(manifest.paths[r]) for r in missing]
    if len(missing) and on_error == "fail":
        r = missing[0]
        raise DataError(f"cannot read image {manifest.image_ids[r]} ({manifest.paths[r]}): {reasons[0]}; "
                        "fix or remove it, or pass --on-error skip to leave it out")
    arrays = dict(rows=rows, features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
                  skipped_rows=missing.astype(np.int64), skipped_reasons=np.asarray(reasons, dtype=str),
                  seconds=np.float64(seconds))
    if views:
        arrays["views"] = np.concatenate(views_buf) if views_buf else np.zeros((0, views, dim), np.float32)
    _save_npz(path, **arrays)


def _tf_version():
    tf = tensorflow()

    return tf.__version__
