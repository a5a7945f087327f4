"""Is a lower precision (``skinfeat extract --precision``) worth it: speed against BMCA?

For float32, bfloat16 (oneDNN mixed precision) and int8 (the calibrated TFLite copy,
``skinfeat.features.precision``), on the default module (``efficientnet-lite0-stages-sog``):

- speed: forward-only images/s on the same decoded batch of 32 real images, in
  interleaved rounds (this VM's speed drifts), each precision's ratio to float32
  taken within a round;
- accuracy: the default recipe of ``skinfeat extract`` (square centre crops, 2 robust
  views) at that precision on ``--n`` HAM10000 images (whole lesions, drawn with seed
  0; default all), the default head of ``skinfeat fit`` (logreg) in lesion-grouped
  5-fold CV (``make_folds(k=5, seed=0)``), and the shift check of ``fit --shift
  standard`` (the fold-0 head on fold 0 under the 15 standard shifts, each shifted image
  through the backbone in the features' precision): its worst BMCA.

Rule (issue 16): the default stays float32 unless another precision is at least 1.3x
faster with a BMCA change of at most 0.003 (in CV and at the worst shift). A precision
within that on the point estimates is "not established" while the standard error of
its paired per-fold CV change exceeds 0.003 (the measurement cannot resolve the
threshold; a larger --n can).

    python benchmarks/bench_precision.py --n 2000 --json out.json

Runs are real records (``$SKINFEAT_RUNS``, default ``bench_precision/runs`` under
``$SKINFEAT_HOME``); a killed run resumes (finished fits are read back, features are
cached in ``$SKINFEAT_FEATURES`` by recipe).
"""

import os
import time

from common import argument_parser, log, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PRECISIONS = ("float32", "bfloat16", "int8")
MIN_SPEEDUP, MAX_BMCA_CHANGE = 1.3, 0.003


def lesion_subset(manifest, n, seed=0):
    """Whole lesions in a random order (``seed``) until ``n`` images; all of them when n is None."""
    import numpy as np

    if not n or n >= len(manifest):
        return manifest
    lesions = np.asarray(manifest.lesion_ids)
    order = np.random.default_rng(seed).permutation(np.unique(lesions))
    counts = {lesion: int(c) for lesion, c in zip(*np.unique(lesions, return_counts=True))}
    keep, total = set(), 0
    for lesion in order:
        if total >= n:
            break
        keep.add(lesion)
        total += counts[lesion]
    return manifest.subset([i for i, lesion in enumerate(lesions) if lesion in keep])


def forward_speeds(mod, manifest, size, rounds, seconds, log):
    """{precision: [images/s per round]} of the network alone on one decoded batch of 32."""
    import numpy as np

    from skinfeat.features.extract import DEFAULT_RESIZE
    from skinfeat.features.pipeline import batched, image_loader
    from skinfeat.features.precision import forward, int8_model

    rows = np.linspace(0, len(manifest) - 1, 32).round().astype(np.int64)
    batch = next(iter(batched(rows, np.asarray(manifest.paths, dtype=object)[rows].astype(str),
                               image_loader(size, DEFAULT_RESIZE, 0, 0))))[1].numpy()
    int8 = int8_model(mod, manifest, size, DEFAULT_RESIZE, "none")
    fns = {p: forward(mod, p, "cpu", int8 if p == "int8" else None) for p in PRECISIONS}
    speeds = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for p, fn in fns.items():
            fn(batch)  # warm up (traces, rewrites, allocates)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                fn(batch)
                n += len(batch)
            speeds[p].append(n / (time.perf_counter() - start))
        log("round %d: %s" % (r, ", ".join(f"{p} {s[-1]:.1f} img/s ({s[-1] / speeds['float32'][-1]:.2f}x)"
                                          for p, s in speeds.items())))
    return speeds


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="images (whole lesions, seed 0); default all")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    parser.add_argument("--seconds", type=float, default=10.0, help="per precision per round")
    parser.add_argument("--no-shift", dest="shift", action="store_false", help="CV only, no shift check")
    args = parser.parse_args(argv)

    import numpy as np

    from skinfeat.backbones.resolve import DEFAULT_MODULE, resolve_module
    from fitsteps import FitSteps
    from skinfeat.data.layouts import load_dataset
    from skinfeat.imaging.augment import DEFAULT_AUGMENT
    from skinfeat.features.extract import DEFAULT_RESIZE, DEFAULT_VIEWS, extract_features
    from skinfeat.imaging.shifts import STANDARD, parse_shifts

    start = time.perf_counter()
    steps = FitSteps("bench_precision")
    manifest = lesion_subset(load_dataset(data=args.data), args.n)
    shifts = parse_shifts(list(STANDARD)) if args.shift else ()
    mod = resolve_module(DEFAULT_MODULE)
    size = tuple(mod.input_size or (224, 224))
    log(f"{len(manifest)} images of {len(set(manifest.lesion_ids))} lesions; speed: {args.rounds} rounds")
    speeds = forward_speeds(mod, manifest, size, args.rounds, args.seconds, log)
    table = {}
    for p in PRECISIONS:
        t0 = time.perf_counter()
        log(f"[{p}] features: {DEFAULT_MODULE}, {DEFAULT_RESIZE}, {DEFAULT_VIEWS} {DEFAULT_AUGMENT} views")
        features = extract_features(manifest, mod, views=DEFAULT_VIEWS, augment=DEFAULT_AUGMENT, precision=p,
                                    dataset_name="ham10000", progress=True)
        step = f"{p} n={len(manifest)}{'' if shifts else ' (no shift)'}"
        record = steps.fit(step, features.path, manifest, shifts, log, p)
        m, worst = record["metrics"]["bmca"], ((record.get("shift") or {}).get("worst") or {})
        ratios = [s / f for s, f in zip(speeds[p], speeds["float32"])]
        table[p] = {"images_per_second": float(np.mean(speeds[p])), "speed_ratio": float(np.mean(ratios)),
                    "speed_ratios": ratios, "bmca": m["mean"], "bmca_std": m["std"], "bmca_folds": m["folds"],
                    "worst_bmca": worst.get("bmca"), "worst_bmca_shift": worst.get("bmca_shift"),
                    "extract_images_per_second": features.images_per_second, "record": record["record_path"],
                    "features": str(features.path), "seconds": round(time.perf_counter() - t0, 1)}
        log(f"[{p}] CV BMCA {m['mean']:.3f}±{m['std']:.3f}, worst shift {worst.get('bmca')}, "
            f"{time.perf_counter() - t0:.0f} s")

    base = table["float32"]
    print(f"HAM10000, {len(manifest)} images (whole lesions, seed 0), {DEFAULT_MODULE} ({DEFAULT_RESIZE}, "
          f"{DEFAULT_VIEWS} {DEFAULT_AUGMENT} views), logreg, 5-fold CV; worst of {len(shifts)} standard shifts on "
          f"fold 0; forward-only speed on 32 decoded images, {args.rounds} interleaved rounds; "
          f"{(time.perf_counter() - start) / 60:.1f} min")
    print(f"{'precision':<10} {'img/s':>6} {'x f32 (rounds)':>22} {'CV BMCA':>13} {'ΔCV±SE':>13} "
          f"{'worst BMCA (shift)':>26} {'Δworst':>7}  verdict")
    for p, row in table.items():
        row["bmca_change"] = row["bmca"] - base["bmca"]
        paired = np.subtract(row["bmca_folds"], base["bmca_folds"])  # the same folds: per-fold change
        row["bmca_change_se"] = float(paired.std(ddof=1) / np.sqrt(len(paired))) if p != "float32" else 0.0
        row["worst_change"] = (row["worst_bmca"] - base["worst_bmca"]) if shifts else None
        changes = [abs(c) for c in (row["bmca_change"], row["worst_change"]) if c is not None]
        within = p != "float32" and row["speed_ratio"] >= MIN_SPEEDUP and max(changes) <= MAX_BMCA_CHANGE
        # A change "of at most 0.003" is shown only by a measurement that resolves 0.003.
        row["adopt"] = within and row["bmca_change_se"] <= MAX_BMCA_CHANGE
        verdict = "(baseline)" if p == "float32" else (
            "ADOPT" if row["adopt"] else
            f"not established: ΔCV's SE {row['bmca_change_se']:.3f} > {MAX_BMCA_CHANGE}" if within else
            f"keep float32 (needs >= {MIN_SPEEDUP}x and |ΔBMCA| <= {MAX_BMCA_CHANGE})")
        rounds = "/".join(f"{r:.2f}" for r in row["speed_ratios"])
        worst = f"{row['worst_bmca']:.3f} ({row['worst_bmca_shift']})" if shifts else "-"
        print(f"{p:<10} {row['images_per_second']:>6.1f} {row['speed_ratio']:>5.2f}x ({rounds:>14}) "
              f"{row['bmca']:>7.3f}±{row['bmca_std']:.3f} {row['bmca_change']:>+7.3f}±{row['bmca_change_se']:.3f} "
              f"{worst:>26} "
              f"{row['worst_change'] if row['worst_change'] is None else format(row['worst_change'], '+.3f'):>7}"
              f"  {verdict}")
    print("ΔCV±SE: the mean of the per-fold paired BMCA changes and its standard error (sd / sqrt(5))")
    write_json(args.json, {"n": len(manifest), "table": table})


if __name__ == "__main__":
    main()
