"""Speed and quality of the heads: 5-fold lesion-grouped CV, as `skinfeat fit` runs it.

    python benchmarks/bench_heads.py [--features FILE] [--heads softmax,logreg,lightgbm]
                                     [--folds FILE | --cv 5] [--record]

Without --features it builds a synthetic set shaped like HAM10000 features:
10,015 x 1,280, the real class counts (NV 6,705 ... DF 115), lesion groups
(about 1.34 images per lesion) and a weak class structure. Its scores say
nothing about real images; only the timings carry over.

Prints, per head: seconds of the 5-fold CV and the ratio to the time target
(logreg and softmax <= 60 s, lightgbm <= 180 s on the 2-core machine), BMCA and
top-3 mean ± std with their ratio to the quality targets (best head BMCA >= 0.55,
top-3 >= 0.93; meaningful on the real HAM10000 features of the default backbone).
The machine is shared: the load average is printed next to the timings.
With --record the runs also go into runs/ for `skinfeat compare`.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (puts the repository on sys.path: skinfeat, devtools)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TIME_TARGETS = {"logreg": 60.0, "softmax": 60.0, "lightgbm": 180.0}
BMCA_TARGET, TOP3_TARGET = 0.55, 0.93


def synthetic_file(directory, views):
    from devtools.synthetic import write_synthetic

    path = Path(directory) / "synthetic_10015x1280.h5"
    start = time.perf_counter()
    write_synthetic(path, dim=1280, separation=0.35, views=views, seed=0)
    print(f"synthetic features: 10,015 x 1,280{f' x {views + 1} views' if views else ''}, "
          f"HAM10000 class counts, written in {time.perf_counter() - start:.1f} s")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, help="features file (default: synthetic HAM10000-shaped set)")
    parser.add_argument("--heads", default="logreg,softmax,lightgbm")
    parser.add_argument("--folds", type=Path, help="folds file from `skinfeat data split`")
    parser.add_argument("--cv", type=int, default=None, help="K default folds (default 5)")
    parser.add_argument("--views", type=int, default=0, help="synthetic only: augmented views per image")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="HEAD.KEY=VALUE",
                        help="head parameter, e.g. -p lightgbm.n_jobs=2 (repeatable)")
    parser.add_argument("--record", action="store_true", help="write run records into runs/")
    args = parser.parse_args()

    from skinfeat.runs.fit import run_fit

    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        head, _, name = key.partition(".")
        try:
            value = eval(value, {})  # numbers, None, tuples from the command line
        except Exception:
            pass
        params.setdefault(head, {})[name] = value

    with tempfile.TemporaryDirectory() as tmp:
        features = args.features or synthetic_file(tmp, args.views)
        runs = None if args.record else Path(tmp) / "runs"
        results = []
        for head in args.heads.split(","):
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            record = run_fit(features, head, params.get(head), folds_path=args.folds, cv=args.cv,
                             log=lambda line: print("  " + line, flush=True), runs=runs)
            wall = time.perf_counter() - start
            results.append((head, record, wall, (load_before + os.getloadavg()[0]) / 2))

    real = args.features is not None
    print(f"\n{'head':<9} {'CV s':>6} {'target':>7} {'ratio':>6}  {'BMCA':>13} {'top-3':>13}  "
          f"{'wall s':>6} {'load':>5}")
    for head, record, wall, load in results:
        cv = record["timings"]["cv_seconds"]
        target = TIME_TARGETS.get(record["head"], 60.0)
        m = record["metrics"]
        print(f"{record['head']:<9} {cv:6.1f} {target:7.0f} {cv / target:6.2f}  "
              f"{m['bmca']['mean']:.3f}±{m['bmca']['std']:.3f}   {m['top3']['mean']:.3f}±{m['top3']['std']:.3f}  "
              f"{wall:6.1f} {load:5.1f}")
    best = max(results, key=lambda r: r[1]["metrics"]["bmca"]["mean"])[1]
    bmca, top3 = best["metrics"]["bmca"]["mean"], best["metrics"]["top3"]["mean"]
    base = best["baseline"]
    print(f"\nbest head {best['head']}: BMCA {bmca:.3f} (target {BMCA_TARGET}, ratio {bmca / BMCA_TARGET:.2f}), "
          f"top-3 {top3:.3f} (target {TOP3_TARGET}, ratio {top3 / TOP3_TARGET:.2f})"
          + ("" if real else "  [synthetic data: quality targets do not apply]"))
    print(f"always-NV baseline: BMCA {base['bmca']:.3f}, accuracy {base['accuracy']:.3f}, top-3 {base['top3']:.3f}")
    print(f"CPU cores: {os.cpu_count()}; load average now {os.getloadavg()[0]:.1f} "
          "(other processes share the cores: compare ratios measured in one run)")


if __name__ == "__main__":
    main()
