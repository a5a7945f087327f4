"""``extract --engine ray``: the extraction spread over a Ray cluster by Ray Data.

Each missing chunk of the feature file (``skinfeat.features.extract``) is one row of a Ray
dataset; ``map_batches`` sends it to an actor of an ``ActorPoolStrategy`` pool.
An actor loads the module once, reads, decodes and resizes the chunk's images
with the local engine's own tf.data functions, runs the network (one GPU per
actor when the network runs on GPUs) and returns one row per image. The driver
collects the rows of each chunk and hands a finished chunk to the same writer
as the local engine, so the parts, the key and the final HDF5 file are the
same: a killed driver resumes from its finished chunks, and Ray retries the
work of a lost actor.

The images and the module must be readable at the same paths on every node (a
shared file system), or the module must be a built-in, which a node builds
from its installed weights. Without ``--ray-address`` a local Ray is started
for the run and shut down after it; inside a driver that already called
``ray.init`` that cluster is used and left running.
"""

import itertools
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from skinfeat.backbones.resolve import resolve_module
from skinfeat.core.devices import choose
from skinfeat.core.errors import SkinfeatError, UsageError
from skinfeat.core.tf_runtime import stderr_without, tensorflow
from skinfeat.features.pipeline import batched, forward_views, image_loader
from skinfeat.features.precision import check, forward

RAY_VERSION = "2.60.0"  # setup.cfg pins the same


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'ray[data]==" + RAY_VERSION + "'") from None
    import logging

    for name in ("ray", "ray.data"):  # its per-run INFO lines; warnings and errors still show
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Progress bars disabled": skinfeat draws its own
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return ray


class ChunkExtractor:
    """A Ray Data actor: the features of one chunk per call (``__call__``)."""

    def __init__(self, module, size, key_parts, precision, device, int8_bytes, threads):
        tf = tensorflow()
        if threads:  # the CPUs Ray gave this actor, not every core of its node
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))

        mod = _local_module(module)
        int8_path = None
        if int8_bytes is not None:
            import tempfile

            fd, int8_path = tempfile.mkstemp(suffix=".tflite")
            with os.fdopen(fd, "wb") as f:
                f.write(int8_bytes)
        self.fwd = forward(mod, precision, device, int8_path)
        self.views, self.dim = key_parts["views"], mod.feature_dim
        self.load = image_loader(tuple(size), key_parts["resize"], self.views, key_parts["augment_seed"] or 0,
                            key_parts.get("augment", "mild"), key_parts.get("lesion", "none"))

    def __call__(self, batch):
        out = []
        for chunk, start, stop, paths in zip(batch["chunk"], batch["start"], batch["stop"], batch["paths"]):
            t0 = time.perf_counter()
            rows = np.arange(start, stop, dtype=np.int64)
            n = len(rows)
            feats = np.zeros((n, self.dim), np.float32)
            views = np.zeros((n, self.views, self.dim), np.float32)
            ok = np.zeros(n, bool)
            for got, images, extra in batched(rows, np.asarray(paths, dtype=str), self.load):
                at = got.numpy() - start
                f, v = forward_views(self.fwd, images, extra, self.views)
                feats[at], ok[at] = f, True
                if self.views:
                    views[at] = v
            seconds = time.perf_counter() - t0
            out.append(dict(chunk=np.full(n, chunk, np.int64), row=rows, ok=ok, features=feats,
                            seconds=np.full(n, seconds), **({"views": views} if self.views else {})))
        return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def _local_module(module):
    """The module on this node: the driver's copy where its files are here, else (a
    built-in) resolved and built here; either way its fingerprint must match."""

    if os.path.isdir(module.path):
        return module
    if not module.builtin:
        raise UsageError(f"module {module.name} is not at {module.path} on this Ray node; put it on a file "
                         "system every node reads at the same path")
    here = resolve_module(module.name)
    if here.fingerprint != module.fingerprint:
        raise UsageError(f"module {module.name} built on this Ray node differs from the driver's "
                         f"(fingerprint {here.fingerprint[:12]}, expected {module.fingerprint[:12]}); "
                         "install the same skinfeat and weights on every node")
    return here


def _plan(ray, device, workers):
    """(device kind, actors, CPUs per actor, GPUs per actor) for this cluster."""

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(r.get("GPU", 0) for r in nodes))
    kind = choose(device, gpus, where="the Ray cluster")
    node_cpus = [int(r.get("CPU", 0)) for r in nodes if r.get("CPU", 0) >= 1]
    if not node_cpus:
        raise UsageError("the Ray cluster has no CPUs to run actors on; start its nodes with --num-cpus")
    if kind == "gpu":
        actors = workers or gpus
        if actors > gpus:
            raise UsageError(f"--workers {actors}: the Ray cluster has {gpus} GPUs, one per actor; "
                             f"pass --workers {gpus} or fewer")
        return kind, actors, 1, 1
    # One actor per node using all its CPUs by default: one model copy per node, and
    # TensorFlow's own threads use the cores.
    per = min(node_cpus)
    if workers and workers > sum(node_cpus):
        raise UsageError(f"--workers {workers}: the Ray cluster has {sum(node_cpus)} CPUs, at least one per "
                         f"actor; pass --workers {sum(node_cpus)} or fewer, or add nodes")
    if workers:
        per = max(1, min(per, sum(node_cpus) // workers))
    actors = workers or sum(c // per for c in node_cpus)
    return kind, actors, per, 0


@dataclass
class Cluster:
    """A connected Ray and how the extraction uses it."""
    ray: object
    device: str  # cpu or gpu
    actors: int
    cpus: int  # per actor
    gpus: int  # per actor


@contextmanager
def session(run, precision):
    """Connect to the cluster at ``run.ray_address`` (or start a local Ray, shut down at
    the end; or use this driver's running one) and plan the actors: a ``Cluster``.
    Every error of connecting or planning comes before any file is touched."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        _check_reachable(run.ray_address)
        try:
            ray.init(address=run.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = run.ray_address or "a local Ray"
            raise UsageError(f"--engine ray: cannot start or reach {where} ({str(exc).splitlines()[0]}); "
                             "check --ray-address (ray://host:10001 or host:6379) or drop it") from None
    try:
        kind, actors, cpus, gpus = _plan(ray, run.device, run.workers)
        check(precision, kind)
        yield Cluster(ray, kind, actors, cpus, gpus)
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address):
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at ``address``."""
    import socket

    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected host:port (the head's GCS, e.g. 10.0.0.5:6379), "
                         "ray://host:10001 or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"--engine ray: cannot reach a Ray cluster at {address} ({exc.strerror or exc}); "
                         "start one with `ray start --head` there, or check --ray-address") from None


def extract_on_ray(cluster, manifest, mod, todo, key_parts, size, precision, int8_path, flush):
    """Extract chunks ``todo`` (``(i, start, stop)``) on ``cluster`` (``session``),
    calling ``flush(i, rows, feats, views, seconds)`` for each as it completes."""
    from ray.data import ActorPoolStrategy, DataContext

    ray, kind, cpus = cluster.ray, cluster.device, cluster.cpus
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver draws its own (skinfeat.core.progress)
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    paths = [str(p) for p in manifest.paths]
    items = [{"chunk": i, "start": start, "stop": stop, "paths": paths[start:stop]} for i, start, stop in todo]
    int8_bytes = open(int8_path, "rb").read() if int8_path else None
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ChunkExtractor, batch_size=1, compute=ActorPoolStrategy(size=min(cluster.actors, len(items))),
        num_cpus=cpus, num_gpus=cluster.gpus,
        fn_constructor_kwargs=dict(module=mod, size=list(size), key_parts=key_parts, precision=precision,
                                   device=kind, int8_bytes=int8_bytes, threads=cpus if kind == "cpu" else None))
    sizes = {i: stop - start for i, start, stop in todo}
    got = {}
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    try:
        # Ray's C++ core logs an error-level line as it creates each Ray Data actor
        # (their constructor arguments sit in the object store, ray#53727): not a fault.
        with stderr_without(lambda line: "constructor arguments in the object store" in line):
            first = next(batches, None)
        for batch in itertools.chain([first] if first is not None else [], batches):
            for i in np.unique(batch["chunk"]):
                sel = batch["chunk"] == i
                got.setdefault(int(i), []).append({k: v[sel] for k, v in batch.items()})
                if sum(len(p["row"]) for p in got[int(i)]) == sizes[int(i)]:
                    _flush(int(i), got.pop(int(i)), key_parts["views"], flush)
    except ray.exceptions.RayError as exc:
        cause = _skinfeat_cause(exc)
        if cause is not None:
            raise cause from None
        raise
    if got:  # Ray returned fewer rows than it was given: never silently a short file
        raise SkinfeatError(f"Ray returned incomplete chunks {sorted(got)}; run the command again to redo them")


def _flush(i, pieces, views, flush):
    joined = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    order = np.argsort(joined["row"], kind="stable")
    ok = joined["ok"][order]
    rows = joined["row"][order][ok]
    flush(i, [rows], [joined["features"][order][ok]], [joined["views"][order][ok]] if views else [],
          float(joined["seconds"].max()))


def _skinfeat_cause(exc):
    """The SkinfeatError an actor raised (a bad module on a node...), if that is what failed."""
    seen = exc
    for _ in range(8):
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None:
            return None
        if isinstance(cause, SkinfeatError):
            return cause
        seen = cause
    return None
