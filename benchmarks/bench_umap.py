"""How long a UMAP map of a whole feature file takes, as a user meets it: in a
fresh process, imports and numba's JIT compilation included. The goal: all
10,015 HAM10000 images (1280-D features) in under 60 s on a 2-core machine.

    .venv/bin/python benchmarks/bench_umap.py --features features/<file>.h5
    .venv/bin/python benchmarks/bench_umap.py --synthetic          # 10,015 x 1,280
    .venv/bin/python benchmarks/bench_umap.py --synthetic --repeat 2   # 2nd run: JIT warm

Nothing is cached: every run computes the map. Prints one line per run and a
JSON record at the end.
"""

import time

START = time.perf_counter()  # before the heavy imports: they are part of what a user waits for

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402

import common  # noqa: E402, F401 (puts the repository on sys.path: skinfeat)
import numpy as np  # noqa: E402

GOAL_S = 60.0
# HAM10000 class counts in CLASSES order (MEL NV BCC AKIEC BKL DF VASC).
HAM10000_COUNTS = (1113, 6705, 514, 327, 1099, 115, 142)


def synthetic_features(n=10015, dim=1280, seed=0):
    """Non-negative (post-ReLU-like) features: seven class clusters in HAM10000 proportions
    on a 64-dimensional subspace, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    counts = np.round(np.array(HAM10000_COUNTS) * n / sum(HAM10000_COUNTS)).astype(int)
    counts[1] += n - counts.sum()
    labels = np.repeat(np.arange(7), counts)
    basis = rng.normal(size=(64, dim)) / 8
    centres = rng.normal(size=(7, 64))
    latent = centres[labels] + rng.normal(scale=1.2, size=(n, 64))
    x = np.maximum(latent @ basis + rng.normal(scale=0.3, size=(n, dim)), 0)
    return x.astype(np.float32), labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", help="a skinfeat features file (.h5)")
    source.add_argument("--synthetic", action="store_true", help="random 10,015 x 1,280 features")
    parser.add_argument("--n", type=int, default=10015, help="rows of synthetic data")
    parser.add_argument("--dim", type=int, default=1280, help="feature dimension of synthetic data")
    parser.add_argument("--method", default="umap", help="umap (default), tsne or pca")
    parser.add_argument("--pca-dims", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs in this process (later ones: JIT warm)")
    args = parser.parse_args()

    from skinfeat.viz.embed import embed

    if args.synthetic:
        x, _ = synthetic_features(args.n, args.dim, args.seed)
        source = f"synthetic {args.n}x{args.dim}"
    else:
        from skinfeat.features.store import read_features

        x = read_features(args.features, with_views=False).features
        source = args.features
    imports_s = time.perf_counter() - START
    print(f"{source}: {x.shape[0]:,} x {x.shape[1]:,}; python start + imports + data {imports_s:.1f} s")
    params = {} if args.method == "pca" else {"pca_dims": args.pca_dims}
    runs = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        embed(x, args.method, seed=args.seed, **params)
        runs.append(time.perf_counter() - t0)
        total = time.perf_counter() - START if i == 0 else runs[-1]
        what = "first run, from process start" if i == 0 else "warm run"
        print(f"run {i + 1}: {args.method} {runs[-1]:.1f} s; {what}: {total:.1f} s = "
              f"{total / GOAL_S:.2f} x the {GOAL_S:.0f} s goal")
    record = {"benchmark": "viz-map", "source": source, "method": args.method, "n": int(x.shape[0]),
              "dim": int(x.shape[1]), "pca_dims": args.pca_dims, "seed": args.seed,
              "import_s": round(imports_s, 2), "runs_s": [round(r, 2) for r in runs],
              "fresh_process_s": round(imports_s + runs[0], 2),
              "ratio_to_goal": round((imports_s + runs[0]) / GOAL_S, 3),
              "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
              "machine": platform.processor() or platform.machine()}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
