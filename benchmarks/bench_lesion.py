"""Does cropping to the lesion (``skinfeat extract --lesion``) help, clean and under shift?

On HAM10000 with lesion-grouped 5-fold CV (``make_folds(k=5, seed=0)``, the
folds of every other benchmark), logistic regression (skinfeat's default head)
on the default recipe (``efficientnet-lite0-stages-sog``, square centre crops,
2 robust views) extracted:

- as it is (``--lesion none``, the default);
- cropped to a square box around the lesion found without labels
  (``--lesion crop``, ``skinfeat.imaging.lesion``);
- the same after DullRazor hair removal (``--lesion crop+hair``).

Every row has its 5-fold CV BMCA (mean ± std) and the shift check of ``fit
--shift standard`` (the fold-0 head on fold 0 under the 15 standard shifts, each
shifted image cropped as a user's image would be: the worst BMCA and the worst
accuracy), the extraction speed and the fit time. The runs are real records
(``$SKINFEAT_RUNS``, default ``bench_lesion/runs`` under ``$SKINFEAT_HOME``), so
``skinfeat compare`` shows them; a killed run resumes (finished rows are read back,
features are cached in ``$SKINFEAT_FEATURES`` by recipe).

    python benchmarks/bench_lesion.py              # about 1 h on 2 cores the first time
    python benchmarks/bench_lesion.py --no-shift   # CV only

Rule (issue 13): cropping (or hair removal) becomes the default only if it beats
the uncropped recipe in CV AND under the worst shift.
"""

import time

from common import argument_parser, log, write_json

MODULE = "efficientnet-lite0-stages-sog"
ROWS = {"no crop": "none", "lesion crop": "crop", "lesion crop + hair removal": "crop+hair"}


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shift", dest="shift", action="store_true", default=True)
    parser.add_argument("--no-shift", dest="shift", action="store_false", help="CV only, no shift check")
    args = parser.parse_args(argv)

    from fitsteps import FitSteps
    from skinfeat.data.layouts import load_dataset
    from skinfeat.features.extract import extract_features
    from skinfeat.imaging.shifts import STANDARD, parse_shifts

    steps = FitSteps("bench_lesion")
    manifest = load_dataset(data=args.data)
    shifts = parse_shifts(list(STANDARD)) if args.shift else ()
    start = time.perf_counter()
    table = {}
    for name, lesion in ROWS.items():
        step = f"{name}{'' if args.shift else ' (no shift)'}"
        t0 = time.perf_counter()
        log(f"[{name}] features: {MODULE}, crop, 2 robust views, --lesion {lesion}")
        features = extract_features(manifest, MODULE, resize="crop", views=2, augment="robust", lesion=lesion,
                                    dataset_name="ham10000", progress=True)
        extract_s = time.perf_counter() - t0
        record = steps.fit(step, features.path, manifest, shifts, log, name)
        m = record["metrics"]["bmca"]
        w = (record.get("shift") or {}).get("worst") or {}
        clean = (record.get("shift") or {}).get("clean") or {}
        table[name] = {"lesion": lesion, "bmca": m["mean"], "bmca_std": m["std"],
                       "clean_fold0_bmca": clean.get("bmca"), "worst_bmca": w.get("bmca"),
                       "worst_bmca_shift": w.get("bmca_shift"), "worst_accuracy": w.get("accuracy"),
                       "worst_accuracy_shift": w.get("accuracy_shift"),
                       "images_per_second": features.images_per_second,
                       "extract_seconds": features.seconds if not features.reused else None,
                       "cv_seconds": (record.get("timings") or {}).get("cv_seconds"),
                       "record": record["record_path"], "features": str(features.path)}
        log(f"[{name}] CV BMCA {m['mean']:.3f}±{m['std']:.3f}, worst shift "
            f"{w.get('bmca')} ({w.get('bmca_shift')}), {time.perf_counter() - t0:.0f} s (extract {extract_s:.0f} s)")

    print(f"HAM10000, {MODULE} (crop, 2 robust views), logreg, 5-fold CV (make_folds seed 0); worst of the 15 "
          f"standard shifts on fold 0; {(time.perf_counter() - start) / 60:.1f} min this run")
    print(f"{'row':<28} {'CV BMCA':>13} {'fold-0 clean':>12} {'worst BMCA':>26} {'worst accuracy':>26} {'img/s':>6}")
    for name, row in table.items():
        def cell(value, shift):
            return f"{value:.3f} {shift}" if value is not None else "-"
        print(f"{name:<28} {row['bmca']:>7.3f}±{row['bmca_std']:.3f} "
              f"{row['clean_fold0_bmca'] or float('nan'):>12.3f} "
              f"{cell(row['worst_bmca'], row['worst_bmca_shift']):>26} "
              f"{cell(row['worst_accuracy'], row['worst_accuracy_shift']):>26} {row['images_per_second']:>6.1f}")
    base = table["no crop"]
    for name, row in list(table.items())[1:]:
        cv_gain = row["bmca"] - base["bmca"]
        shift_gain = (row["worst_bmca"] - base["worst_bmca"]) if shifts else None
        wins = cv_gain > 0 and (shift_gain is None or shift_gain >= 0)
        print(f"{name} vs no crop: CV {cv_gain * 100:+.1f} BMCA points"
              + (f", worst shift {shift_gain * 100:+.1f}" if shift_gain is not None else "")
              + f": {'WINS' if wins else 'does not win'}")
    write_json(args.json, table)


if __name__ == "__main__":
    main()
