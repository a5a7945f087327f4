"""Extraction speed and memory, measured side by side in one run.

    python benchmarks/bench_extract.py [--module efficientnet-lite0] [--n 10015] [--memory]
    python benchmarks/bench_extract.py --engines [--n 2048] [--precisions bfloat16,int8]

Prints, for the module, in interleaved rounds (this VM's speed drifts, so each
ratio compares figures of one round):
  forward   images/s of the network alone on already-decoded batches of 32,
            measured just before and just after the pipeline run (their mean)
  pipeline  images/s of `skinfeat extract` end to end (hash, read, decode, resize,
            network, write) over the first --n HAM10000 images (default: all)
  naive     images/s of open + resize + run one image at a time (TF's old retrain.py)
  forward1  images/s of the network alone on already-decoded single images
and the ratios to the targets: pipeline >= 0.90 x forward, pipeline >= 3 x naive.
forward / naive is the most any input pipeline could reach against the naive way
at batch 32: the network's own batching gain on this machine.
With --engines, instead: `skinfeat extract` end to end (views 0) over the first
--n images (default 2048) by the local engine, the Ray engine with one actor using
every CPU and with one actor per CPU (on a local Ray started once, its start-up
timed apart), and the local engine at each of --precisions; per round, each
config's wall images/s and ratio to the local float32 one, and for Ray the
per-actor rate (images per second of actor work, start-up excluded): a cluster
of N such actors, one per node, should reach about N x that rate.
With --memory, peak resident memory of extracting all 10,015 HAM10000 images vs
1,000 of them (each in a fresh process); target: within 10 %.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def forward_only(fn, images, seconds=20.0):
    import tensorflow as tf

    batch = tf.constant(images)
    fn(batch)  # warm up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(batch).numpy()
        n += len(images)
    return n / (time.perf_counter() - start)


def naive(fn, paths, size):
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    start = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        fn(tf.constant(np.asarray(image, np.float32)[None] / 255.0)).numpy()
    return len(paths) / (time.perf_counter() - start)


def pipeline(manifest, module, out):
    from skinfeat.features.extract import extract_features

    start = time.perf_counter()
    result = extract_features(manifest, module, out=out, progress=False)
    assert not result.reused
    return len(manifest) / (time.perf_counter() - start)


def engines(manifest, module, rounds, precisions):
    """The --engines comparison (see the docstring)."""
    import numpy as np
    import ray
    from skinfeat.features.extract import extract_features

    cpus = os.cpu_count()
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"local Ray {ray.__version__} with {cpus} CPUs started in {time.perf_counter() - start:.1f} s", flush=True)
    configs = [("local float32", {}), (f"ray 1 actor x {cpus} CPUs", {"engine": "ray", "workers": 1})]
    if cpus > 1:
        configs.append((f"ray {cpus} actors x 1 CPU", {"engine": "ray", "workers": cpus}))
    configs += [(f"local {p}", {"precision": p}) for p in precisions]
    wall, actor = {c: [] for c, _ in configs}, {c: [] for c, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            line = []
            for i, (label, kw) in enumerate(configs):
                t = time.perf_counter()
                res = extract_features(manifest, module, out=Path(tmp) / f"e{r}-{i}.h5", progress=False, **kw)
                wall[label].append(len(manifest) / (time.perf_counter() - t))
                actor[label].append(res.images_per_second)  # images / seconds of chunk work
                line.append(f"{label} {wall[label][-1]:.1f}")
            print(f"round {r + 1}: " + ", ".join(line) + " images/s (wall)", flush=True)
    ray.shutdown()
    base = wall[configs[0][0]]
    print(f"\n{'config':28s} {'wall img/s':>10s} {'x local':>8s} {'work img/s':>10s}   ({len(manifest)} images, median "
          f"of {rounds} rounds; x local: median of per-round ratios)")
    for label, _ in configs:
        ratio = float(np.median([w / b for w, b in zip(wall[label], base)]))
        print(f"{label:28s} {np.median(wall[label]):10.1f} {ratio:8.2f} {np.median(actor[label]):10.1f}")
    print("work img/s of a Ray row: per actor (1 actor) or summed over actors' time; a cluster of N actors "
          "should reach about N x the 1-actor figure")


def memory_child(n, module, out):
    """Run one extraction of the first n images in this process; print peak RSS in MiB."""
    from skinfeat.data.layouts import load_dataset
    from skinfeat.features.extract import extract_features

    manifest = load_dataset(data=DATA)
    manifest = manifest.subset(range(min(n, len(manifest))))
    extract_features(manifest, module, out=out, progress=False)
    print(json.dumps({"n": len(manifest), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", default=None, help="default: the built-in default backbone")
    ap.add_argument("--n", type=int, default=None, help="images for the end-to-end run (default: all)")
    ap.add_argument("--naive-n", type=int, default=200, help="images for the naive run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    ap.add_argument("--memory", action="store_true", help="also run the peak-memory comparison")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory comparison")
    ap.add_argument("--engines", action="store_true", help="compare engines and precisions end to end instead")
    ap.add_argument("--precisions", default="bfloat16,int8", help="with --engines: precisions besides float32")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.module, args.out)
    if args.memory_only:
        return memory(args.module)

    import numpy as np
    import tensorflow as tf
    from skinfeat.backbones.resolve import resolve_module
    from skinfeat.data.layouts import load_dataset
    from skinfeat.imaging.augment import resize_tf

    mod = resolve_module(args.module)
    if args.engines:
        manifest = load_dataset(data=DATA)
        manifest = manifest.subset(range(min(args.n or 2048, len(manifest))))
        return engines(manifest, args.module, args.rounds, [p for p in args.precisions.split(",") if p])
    fn = mod.load()
    size = tuple(mod.input_size or (224, 224))
    manifest = load_dataset(data=DATA)
    manifest = manifest.subset(range(min(args.n or len(manifest), len(manifest))))
    images = np.stack([resize_tf(tf.image.convert_image_dtype(tf.io.decode_jpeg(tf.io.read_file(p)), tf.float32),
                               size, "squash").numpy() for p in manifest.paths[:32]])
    print(f"module {mod.name}, input {size[0]}x{size[1]}, {os.cpu_count()} CPUs, TF {tf.__version__}")
    print(f"{args.rounds} interleaved rounds; this VM's speed drifts, so compare within a round")
    fn(tf.constant(images))  # load and warm up once; every measurement below is warm
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            before = forward_only(fn, images, seconds=10)
            pipe = pipeline(manifest, mod, Path(tmp) / f"f{r}.h5")
            fwd = (before + forward_only(fn, images, seconds=10)) / 2
            nai = naive(fn, manifest.paths[: args.naive_n], size)
            one = forward_only(fn, images[:1], seconds=5)
            rows.append((fwd, pipe, nai, one))
            print(f"round {r + 1}: forward {fwd:6.1f}  pipeline {pipe:6.1f}  naive {nai:6.1f}  forward1 {one:6.1f}"
                  f" images/s  -> pipeline/forward {pipe / fwd:.2f}, pipeline/naive {pipe / nai:.2f},"
                  f" forward/naive {fwd / nai:.2f}", flush=True)
    fwd, pipe, nai, one = (float(np.median(col)) for col in zip(*rows))
    print(f"forward   {fwd:7.1f} images/s  (network only, batch 32, decoded tensors; median)")
    print(f"pipeline  {pipe:7.1f} images/s  (skinfeat extract, {len(manifest)} images end to end; median)")
    print(f"naive     {nai:7.1f} images/s  (one image at a time, PIL + network; median)")
    print(f"forward1  {one:7.1f} images/s  (network only, batch 1, decoded tensors; median)")
    ratio_f = float(np.median([p / f for f, p, _, _ in rows]))
    ratio_n = float(np.median([p / n for _, p, n, _ in rows]))
    ceiling = float(np.median([f / n for f, _, n, _ in rows]))
    print(f"pipeline / forward = {ratio_f:.2f}  (median of rounds; target >= 0.90) {'OK' if ratio_f >= 0.9 else 'MISSED'}")
    print(f"pipeline / naive   = {ratio_n:.2f}  (median of rounds; target >= 3.0) {'OK' if ratio_n >= 3 else 'MISSED'}")
    print(f"forward / naive    = {ceiling:.2f}  (the ceiling of pipeline / naive for any input pipeline here)")

    if args.memory:
        memory(args.module)


def memory(module):
    peaks = {}
    for n in (1000, 10015):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--memory-child", str(n), "--out", str(Path(tmp) / "m.h5")]
            if module:
                cmd += ["--module", module]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            peaks[n] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
        print(f"peak RSS  {peaks[n]:7.0f} MiB  extracting {n} images", flush=True)
    ratio = peaks[10015] / peaks[1000]
    print(f"peak 10,015 / peak 1,000 = {ratio:.3f}  (target <= 1.10) {'OK' if ratio <= 1.10 else 'MISSED'}")


if __name__ == "__main__":
    main()
