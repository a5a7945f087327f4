"""Does combining what is known beat the best single backbone, clean and under shift?

On HAM10000 with lesion-grouped 5-fold CV (``make_folds(k=5, seed=0)``, the
folds of every other benchmark), logistic regression (skinfeat's default head)
on:

- each built-in offline backbone alone: EfficientNet-Lite0 (the default recipe,
  ``efficientnet-lite0-stages-sog``), Lite1, Lite2 and MobileNet v1, every one
  extracted the default way (square crops plus 2 robust views);
- the best pair (the two best backbones alone, joined: ``fit --features A
  --features B``) and all four joined;
- the stacked ensemble of the four single runs (``skinfeat ensemble``: a
  logistic-regression meta-learner on their out-of-fold probabilities,
  cross-validated over the same folds);
- each of these with patient metadata (``--metadata age,sex,localization``).

Every row has its 5-fold CV BMCA (mean ± std) and the shift check of ``fit
--shift standard`` (the fold-0 head on fold 0 under the 15 standard shifts: the
worst). Prints the fit time and the process's peak memory after each row. The
runs are real records (``$SKINFEAT_RUNS``, default ``bench_fusion/runs`` under
``$SKINFEAT_HOME``), so ``skinfeat compare`` shows them; a killed run resumes
(finished rows are read back).

    python benchmarks/bench_fusion.py              # everything: about 1.5 h on 2 cores the first time
    python benchmarks/bench_fusion.py --no-shift   # CV only

Targets (issue 12): the stacked ensemble beats the best single backbone by >= 3
BMCA points in CV and does not lose under the worst shift; metadata adds >= 1.5
BMCA points in CV.
"""

import json
import time
from pathlib import Path

from common import argument_parser, log, peak_mib, write_json

BACKBONES = ("efficientnet-lite0-stages-sog", "efficientnet-lite1", "efficientnet-lite2", "mobilenet-v1")
METADATA = ("age", "sex", "localization")
TARGETS = {"stack_gain": 0.03, "metadata_gain": 0.015}


class Bench:
    """Runs rows once: each finished row's record path is kept in ``steps.json``."""

    def __init__(self, home, runs, manifest, shifts, log):
        self.home, self.runs, self.manifest, self.shifts, self.log = home, runs, manifest, shifts, log
        self.index_path = home / "steps.json"
        self.index = json.loads(self.index_path.read_text()) if self.index_path.is_file() else {}
        self.rows = {}

    def done(self, name):
        path = self.index.get(name)
        return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None

    def keep(self, name, record, seconds):
        self.index[name] = record["record_path"]
        self.index_path.write_text(json.dumps(self.index, indent=1))
        self.rows[name] = (record, seconds, peak_mib())

    def fit(self, name, features, metadata=None):
        from skinfeat.runs.fit import run_fit

        record = self.done(name)
        start = time.perf_counter()
        if record is None:
            self.log(f"[{name}] fitting logreg on {len(features)} backbone(s)"
                     + (" with metadata" if metadata else ""))
            record = run_fit(features if len(features) > 1 else features[0], "logreg", runs=self.runs,
                             shift_data=self.manifest if self.shifts else None, shifts=self.shifts,
                             progress=True, metadata=metadata, log=self.log)
        self.keep(name, record, time.perf_counter() - start)
        return record

    def ensemble(self, name, members):
        from skinfeat.runs.ensemble import run_ensemble

        record = self.done(name)
        start = time.perf_counter()
        if record is None:
            self.log(f"[{name}] stacking {len(members)} runs")
            record = run_ensemble([self.rows[m][0]["run_id"] for m in members], method="stack", runs=self.runs,
                                  shift_data=self.manifest if self.shifts else None, shifts=self.shifts,
                                  log=self.log, progress=True)
        self.keep(name, record, time.perf_counter() - start)
        return record


def bmca(record):
    return record["metrics"]["bmca"]["mean"]


def worst(record):
    return ((record.get("shift") or {}).get("worst") or {}).get("bmca")


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shift", dest="shift", action="store_true", default=True)
    parser.add_argument("--no-shift", dest="shift", action="store_false", help="CV only, no shift check")
    parser.add_argument("--backbone", action="append", help=f"backbones (default: {', '.join(BACKBONES)})")
    args = parser.parse_args(argv)

    from fitsteps import FitSteps
    from skinfeat.data.layouts import load_dataset
    from skinfeat.features.extract import extract_features
    from skinfeat.imaging.shifts import STANDARD, parse_shifts

    place = FitSteps("bench_fusion")  # its home and runs; its fits are its own (Bench)
    manifest = load_dataset(data=args.data)
    bench = Bench(place.home, place.runs, manifest, parse_shifts(list(STANDARD)) if args.shift else (), log)
    backbones = args.backbone or list(BACKBONES)
    start = time.perf_counter()
    files = {}
    for name in backbones:  # cached in features/ by recipe: extracted once
        log(f"features of {name} (crop, 2 robust views)")
        files[name] = str(extract_features(manifest, name, resize="crop", views=2, augment="robust",
                                           dataset_name="ham10000", progress=True).path)
    for name in backbones:
        bench.fit(name, [files[name]])
    ranked = sorted(backbones, key=lambda b: -bmca(bench.rows[b][0]))
    pair = ranked[:2]
    groups = {"best pair " + " + ".join(pair): pair, "all four": backbones} if len(backbones) > 2 else \
        {" + ".join(pair): pair}
    for name, members in groups.items():
        bench.fit(name, [files[b] for b in members])
    bench.ensemble("stack of the singles", backbones)
    for name in backbones:
        bench.fit(f"{name} + metadata", [files[name]], METADATA)
    for name, members in groups.items():
        bench.fit(f"{name} + metadata", [files[b] for b in members], METADATA)
    bench.ensemble("stack of the singles + metadata", [f"{b} + metadata" for b in backbones])

    print(f"HAM10000, logreg, 5-fold CV (make_folds seed 0); worst of the 15 standard shifts on fold 0; "
          f"{(time.perf_counter() - start) / 60:.1f} min this run")
    print(f"{'row':<58} {'dim':>5} {'CV BMCA':>13} {'worst shift':>20} {'fit s':>7} {'peak MiB':>9}")
    table = {}
    for name, (record, seconds, mib) in bench.rows.items():
        w = (record.get("shift") or {}).get("worst") or {}
        cell = f"{w['bmca']:.3f} {w['bmca_shift']}" if w else "-"
        dim = record["backbone"].get("feature_dim") or "-"
        m = record["metrics"]["bmca"]
        fit_s = (record.get("timings") or {}).get("cv_seconds") or seconds
        print(f"{name:<58} {dim:>5} {m['mean']:>7.3f}±{m['std']:.3f} {cell:>20} {fit_s:>7.0f} {mib:>9.0f}")
        table[name] = {"bmca": m["mean"], "bmca_std": m["std"], "worst": w.get("bmca"),
                       "worst_shift": w.get("bmca_shift"), "dim": record["backbone"].get("feature_dim"),
                       "seconds": fit_s, "peak_mib": mib, "record": record["record_path"]}
    best = ranked[0]
    stack, single, single_meta = (bench.rows[k][0] for k in ("stack of the singles", best, f"{best} + metadata"))
    gain = bmca(stack) - bmca(single)
    holds = worst(stack) is not None and worst(single) is not None and worst(stack) >= worst(single)
    meta_gain = bmca(single_meta) - bmca(single)
    print(f"targets: stack - best single ({best}) = {gain * 100:+.1f} BMCA points (>= "
          f"{TARGETS['stack_gain'] * 100:.0f}), worst shift {worst(stack)} vs {worst(single)} "
          f"({'holds' if holds else 'LOSES'}); metadata on {best}: {meta_gain * 100:+.1f} points "
          f"(>= {TARGETS['metadata_gain'] * 100:.1f})")
    write_json(args.json, table)


if __name__ == "__main__":
    main()
