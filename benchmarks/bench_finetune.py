"""Does fine-tuning the backbone end to end beat the best frozen recipe, clean and under shift?

Fine-tunes the default backbone (``skinfeat.backbones.resolve.DEFAULT_MODULE``) with
``skinfeat finetune`` on folds 1-4 of ``data split --folds 5 --seed 0`` of
HAM10000 (fold 0 is never seen: not trained on, not used for early stopping),
then scores the network's own head (the model directory ``finetune`` saves) on
fold 0 clean and under the 15 standard shifts exactly as ``skinfeat evaluate``
does (TFLite backbone, numpy decode and resize: ``skinfeat.runs.evaluate``). Prints
the time per epoch and in all, and beside it the best frozen recipe of
``bench_shift.py`` (``sog-robust2``: frozen features with 2 robust views,
logreg) on the same fold.

    python benchmarks/bench_finetune.py                          # the full run: up to an hour on 2 cores
    python benchmarks/bench_finetune.py --limit 400 --epochs 1   # a quick trial on 400 images

A killed run resumes where it stopped (the same command). With ``--limit N`` a
seeded sample of N images is used (its fold-0 images scored); the module is
then named ``...-ham10000-limitN-fold0``, apart from the full one.
Targets (issue 26): clean BMCA >= 0.74 and worst-shift BMCA >= 0.64, at most 90 minutes
of training, no epoch's validation BMCA below the linear probe's by more than its noise.
"""

import json
import time
from pathlib import Path

import numpy as np
from common import argument_parser, log

from skinfeat.data.layouts import load_dataset
from skinfeat.data.split import make_folds, write_folds
from skinfeat.finetune import DEFAULTS
from skinfeat.imaging.shifts import STANDARD, parse_shifts

FROZEN = "sog-robust2"  # bench_shift.py's best recipe (README "How the defaults were chosen")
TARGETS = {"clean": 0.74, "worst": 0.64, "minutes": 90}  # issue 26 (minutes: training)


def cpu_name():
    """The CPU's model name (``lscpu``), for the note: figures compare only within one machine."""
    import subprocess

    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def frozen_results(manifest, fold, shifts, log):
    """(clean, {shift: (BMCA, accuracy)}) of bench_shift's best frozen recipe on fold 0."""
    import bench_shift

    r = bench_shift.run_recipe(FROZEN, bench_shift.RECIPES[FROZEN], manifest, fold, shifts, log)
    return {name: {"bmca": v[0], "accuracy": v[1]} for name, v in r["results"].items()}


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0], json_help="also write the results here")
    parser.add_argument("--module", default=None, help="backbone to fine-tune (default: skinfeat's default)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--size", type=int, nargs=2, default=list(DEFAULTS["size"]), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--loss", default=DEFAULTS["loss"])
    parser.add_argument("--unfreeze", default=DEFAULTS["unfreeze"])
    parser.add_argument("--augment", default=DEFAULTS["augment"])
    parser.add_argument("--bn", default=DEFAULTS["bn"])
    parser.add_argument("--limit", type=int, help="use a seeded sample of N images (a quick trial)")
    parser.add_argument("--shift", action="append", help="shifts (default: the standard 15)")
    parser.add_argument("--no-frozen", dest="frozen", action="store_false",
                        help=f"leave out the frozen recipe ({FROZEN}) beside it")
    args = parser.parse_args(argv)

    from skinfeat.runs.evaluate import evaluate_images
    from skinfeat.finetune import finetune
    from skinfeat.core.paths import skinfeat_home

    start = time.perf_counter()
    manifest = load_dataset(data=args.data)
    fold = np.asarray(make_folds(manifest, k=5, seed=0))  # = `skinfeat data split --folds 5 --seed 0`
    name = "ham10000"
    if args.limit:
        rows = np.sort(np.random.default_rng(0).permutation(len(manifest))[:args.limit])
        manifest, fold, name = manifest.subset(rows), fold[rows], f"ham10000-limit{args.limit}"
    folds_path = skinfeat_home() / "bench_finetune" / f"{name}-folds.csv"
    write_folds(folds_path, manifest, fold)
    shifts = parse_shifts(args.shift or list(STANDARD))
    result = finetune(manifest, args.module, folds_path, 0, dataset_name=name, epochs=args.epochs,
                      size=tuple(args.size), batch=args.batch, lr=args.lr, loss=args.loss, unfreeze=args.unfreeze,
                      augment=args.augment, bn=args.bn,
                      progress=True, log=log)
    tuned_seconds = time.perf_counter() - start
    test = manifest.subset(np.flatnonzero(fold == 0))
    log(f"scoring {result.name}'s own head on fold 0 ({len(test)} images), clean and under {len(shifts)} shifts")
    scored = evaluate_images(result.model_dir, test, shifts, where="fold 0", write=False)
    total = time.perf_counter() - start
    rows = {"fine-tuned": {"clean": scored["clean"], **scored["shifts"]}}
    if args.frozen:
        log(f"frozen recipe {FROZEN} on the same fold")
        rows[f"frozen {FROZEN}"] = frozen_results(manifest, fold, shifts, log)

    history = result.state["history"]
    settings = result.state["settings"]
    print(f"CPU: {cpu_name()}; settings: " + ", ".join(f"{k} {settings[k]}" for k in DEFAULTS if k in settings))
    print(f"{result.name} from {settings['module']}: {len(history)} epochs "
          f"(best {result.state['best']['epoch']}, validation BMCA {result.state['best']['val_bmca']:.3f})"
          + (" - reused, times are the original run's" if result.reused else ""))
    probe = result.state.get("probe")
    if probe:
        print(f"  epoch 0 (linear probe): validation BMCA {probe['val_bmca']:.3f} / accuracy {probe['val_accuracy']:.3f}")
    for h in history:
        print(f"  epoch {h['epoch']}: {h['seconds']:.0f} s ({h['images_per_second']:.1f} img/s, {h['images']} images), "
              f"loss {h['loss']:.4f}, validation BMCA {h['val_bmca']:.3f} / accuracy {h['val_accuracy']:.3f}")
    print(f"time: {np.mean([h['seconds'] for h in history]):.0f} s per epoch; fine-tuning and export "
          f"{tuned_seconds / 60:.1f} min, evaluation {(total - tuned_seconds) / 60:.1f} min, total {total / 60:.1f} min")
    names = ["clean"] + [s.name for s in shifts]
    print(f"BMCA / accuracy on fold 0 ({len(test)} images; trained on folds 1-4)")
    print(f"{'':<20} " + " ".join(f"{n:>13}" for n in names + ["WORST"]))
    summary = {}
    for label, res in rows.items():
        worst = min((res[n]["bmca"], n) for n in names[1:])
        worst_acc = min(res[n]["accuracy"] for n in names[1:])
        summary[label] = {"clean": res["clean"]["bmca"], "worst": worst[0], "worst_shift": worst[1]}
        cells = [f"{res[n]['bmca']:.3f}/{res[n]['accuracy']:.3f}" for n in names] + [f"{worst[0]:.3f}/{worst_acc:.3f}"]
        print(f"{label:<20} " + " ".join(f"{c:>13}" for c in cells))
    tuned = summary["fine-tuned"]
    print(f"targets: clean BMCA >= {TARGETS['clean']} ({tuned['clean']:.3f}), worst-shift BMCA >= "
          f"{TARGETS['worst']} ({tuned['worst']:.3f}, {tuned['worst_shift']}), training within {TARGETS['minutes']} "
          f"min ({sum(h['seconds'] for h in history) / 60:.1f})")
    if args.json:
        from skinfeat.core.jsonsafe import json_safe

        Path(args.json).write_text(json.dumps(json_safe({"module": result.name, "history": history, "rows": rows,
                                                         "summary": summary, "minutes": total / 60}), indent=1))


if __name__ == "__main__":
    main()
