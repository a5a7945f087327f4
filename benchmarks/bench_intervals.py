"""Are the intervals right, and fast enough? (issue 27)

1. Coverage: on simulated data with a known BMCA difference between two
   classifiers, the share of paired 95 % intervals that hold the true difference,
   grouped (lesions of 1-4 images sharing their difficulty, resampled by lesion)
   and ungrouped; and what resampling images of grouped data gives.
2. Speed: the intervals of a 10,015-image, 5-fold run (target < 10 s) and
   ``compare`` over 20 recorded runs with their paired marks (target < 2 s).
3. On HAM10000: how much wider the lesion-grouped interval is than the image one,
   for the runs recorded in ``runs/`` (the main job's; skipped when there are none).

    python benchmarks/bench_intervals.py
"""

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, argument_parser, load_average, log, write_json

from devtools.synthetic import PAIR_RECALL as P
from devtools.synthetic import simulate_pair as simulate
from skinfeat.core.intervals import Resamples, interval, paired_difference

TARGETS = {"coverage": (0.93, 0.97), "interval_seconds": 10.0, "compare_seconds": 2.0}


def coverage(grouped, resample_groups, n_sets, paired=True, delta=0.05):
    """Share of ``n_sets`` simulated datasets whose 95 % interval holds the truth: of the
    paired BMCA difference (``delta``), or of classifier A's BMCA (the mean of P)."""
    rng = np.random.default_rng(21 + grouped + 2 * resample_groups + 4 * paired)
    hits = 0
    for i in range(n_sets):
        y, a, b, lesion = simulate(rng, 400, delta, grouped)
        r = Resamples.draw(lesion if resample_groups else None, n=len(y), n_resamples=1000, seed=i)
        if paired:
            d = paired_difference(y, a, b, r)
            hits += d["low"] <= delta <= d["high"]
        else:
            d = interval(y, None, a, r, ("bmca",))["bmca"]
            hits += d["low"] <= P.mean() <= d["high"]
    return hits / n_sets


def synthetic_run(n=10015, lesions=7470, k=5, seed=0):
    rng = np.random.default_rng(seed)
    lesion = np.sort(rng.integers(0, lesions, n))
    fold = lesion % k
    y = rng.choice(7, n, p=[0.11, 0.67, 0.05, 0.03, 0.11, 0.01, 0.02])
    logits = rng.normal(size=(n, 7)) + 2.0 * np.eye(7)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba, lesion.astype(str), fold


def compare_seconds(n_runs=20):
    """Seconds of ``leaderboard_rows`` (records read, intervals shown, every row paired
    with the best) over ``n_runs`` recorded 10,015-image runs of the same folds."""
    from skinfeat.data.folds import folds_hash
    from skinfeat.runs.compare import leaderboard_rows
    from skinfeat.runs.records import read_records, write_record

    y, proba, lesion, fold = synthetic_run()
    ids = np.array([f"ISIC_{i:07d}" for i in range(len(y))])
    sha = folds_hash(ids, fold)
    with tempfile.TemporaryDirectory() as runs:
        for r in range(n_runs):
            noisy = proba * np.random.default_rng(r).uniform(0.5, 1.5, proba.shape)
            noisy /= noisy.sum(1, keepdims=True)
            run_id = f"run{r:02d}"
            np.savez_compressed(Path(runs) / f"{run_id}.oof.npz", image_id=ids, label=y, lesion_id=lesion, fold=fold,
                                proba=noisy.astype(np.float32), pred=noisy.argmax(1))
            folds_bmca = [float(np.mean([np.mean(noisy[(fold == f) & (y == c)].argmax(1) == c) for c in range(7)]))
                          for f in range(5)]
            write_record({"run_id": run_id, "created": f"2026-01-01T00:00:{r:02d}", "head": "logreg",
                          "settings": f"s{r}", "backbone": {"module": "m", "dataset": "ham10000"},
                          "features": {"key": f"k{r}"}, "folds": {"sha256": sha, "k": 5},
                          "metrics": {"bmca": {"mean": float(np.mean(folds_bmca)), "std": 0.01, "folds": folds_bmca}},
                          "intervals": {"bmca": {"low": 0.5, "high": 0.6}}, "predictions_file": f"{run_id}.oof.npz"},
                         runs)
        start = time.perf_counter()
        rows = leaderboard_rows(read_records(runs), runs=runs)
        seconds = time.perf_counter() - start
    assert sum(r["vs_best_note"] == "best" for r in rows) == 1 and len(rows) == n_runs
    return seconds


def ham10000_widths(runs_dir):
    """[(run, grouped width, image width)] of the BMCA intervals of the runs in ``runs_dir``."""
    from skinfeat.runs.combine import read_oof
    from skinfeat.runs.records import read_records

    out = []
    for record in read_records(runs_dir):
        try:
            oof = read_oof(record, runs_dir)
        except Exception:  # noqa: BLE001, S112 (a run without predictions: left out)
            continue
        rows = oof["pred"] >= 0
        y, proba, pred, fold = oof["label"][rows], oof["proba"][rows], oof["pred"][rows], oof["fold"][rows]
        grouped = interval(y, proba, pred, Resamples.draw(oof["lesion_id"][rows].astype(str), fold), ("bmca",))
        images = interval(y, proba, pred, Resamples.draw(None, fold), ("bmca",))
        out.append((f"{record['head']} {record.get('settings_label') or 'default'}",
                    grouped["bmca"]["high"] - grouped["bmca"]["low"], images["bmca"]["high"] - images["bmca"]["low"]))
    return out


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=1000, help="simulated datasets per coverage figure")
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="recorded runs for the HAM10000 widths")
    args = parser.parse_args(argv)
    result = {}
    log(f"coverage over {args.sets} simulated datasets each ({load_average()})")
    cases = (("paired difference, grouped data, lesions resampled", True, True, True),
             ("paired difference, independent images, images resampled", False, False, True),
             ("one BMCA, grouped data, lesions resampled", True, True, False),
             ("one BMCA, independent images, images resampled", False, False, False),
             ("one BMCA, grouped data, images resampled (what skinfeat does not do)", True, False, False))
    for label, grouped, by_group, paired in cases:
        result[label] = coverage(grouped, by_group, args.sets, paired)
        print(f"coverage of the 95% interval, {label}: {result[label]:.3f} "
              f"(target {TARGETS['coverage'][0]}-{TARGETS['coverage'][1]}; true difference 0.05, A's BMCA "
              f"{P.mean():.4f})")
    y, proba, lesion, fold = synthetic_run()
    start = time.perf_counter()
    interval(y, proba, proba.argmax(1), Resamples.draw(lesion, fold, grouped_by="lesion"))
    result["interval_seconds"] = time.perf_counter() - start
    print(f"intervals (BMCA, accuracy, macro AUC; 1,000 lesion resamples) of a 10,015-image 5-fold run: "
          f"{result['interval_seconds']:.2f} s (target < {TARGETS['interval_seconds']:.0f} s, ratio "
          f"{result['interval_seconds'] / TARGETS['interval_seconds']:.2f})")
    from skinfeat.core.operating import operating_points

    start = time.perf_counter()
    operating_points(y, proba, Resamples.draw(lesion, fold, grouped_by="lesion"))
    result["operating_seconds"] = time.perf_counter() - start
    print(f"operating points (melanoma, malignant; 1,000 lesion resamples) of the same run: "
          f"{result['operating_seconds']:.2f} s (target < 10 s, issue 30)")
    result["compare_seconds"] = compare_seconds()
    print(f"compare over 20 recorded 10,015-image runs, each paired with the best: {result['compare_seconds']:.2f} s "
          f"(target < {TARGETS['compare_seconds']:.0f} s, ratio {result['compare_seconds'] / TARGETS['compare_seconds']:.2f})")
    widths = ham10000_widths(args.runs) if Path(args.runs).is_dir() else []
    for name, grouped, images in widths:
        print(f"HAM10000 {name}: BMCA interval width {grouped:.4f} resampling lesions, {images:.4f} resampling "
              f"images ({grouped / images:.2f}x)")
    result["ham10000_widths"] = widths
    print(load_average())
    write_json(args.json, json.loads(json.dumps(result)))


if __name__ == "__main__":
    main()
