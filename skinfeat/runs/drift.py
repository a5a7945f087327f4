"""What a folder of unlabelled outside images looks like to a model, before any of
its figures is trusted there (``skinfeat evaluate --model M --images DIR`` without
labels):

- the class mix it predicts against the mix it was trained on;
- how many images its out-of-distribution score flags (``skinfeat.core.ood``),
  against the share of its own training images flagged out of fold;
- which of the shift check's conditions the images resemble most: the mean of
  their features, in the score's whitened space, against the mean of the shift
  check's fold clean and under each standard shift (kept in the model by
  ``fit --shift ... --out``). With the standard error of the images' mean along
  one direction (``noise``), two distances closer than ``TIE`` times it (the
  difference of two such errors, at about 2 standard deviations) are called a tie;
  the fold's own means are taken as exact.
"""

import hashlib
from pathlib import Path

import numpy as np

from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import DataError, ModelError
from skinfeat.core.ood import refit_line
from skinfeat.core.progress import bar
from skinfeat.heads.inference import decide
from skinfeat.model.ensemble_dir import load_any
from skinfeat.runs.records import DRIFT_SCHEMA, check_runs_writable, new_run_id, write_record

MIN_IMAGES = 20  # fewer, and the class mix and the images' mean say nothing
TIE = 2 * np.sqrt(2)


def drift_summary(directory, manifest, where="the images", progress=True, write=True, runs=None):
    """The drift summary of the images of ``manifest`` (labels not needed) under the
    model in ``directory``: {n, class_mix, unusual, resembles, noise, nearest, ...};
    recorded in runs/ (``write``) for ``skinfeat report``."""
    from datetime import datetime, timezone

    model = load_any(directory)
    if model.metadata:  # the images alone: the image-only model the best model holds
        if model.fallback is None:
            raise DataError(f"model {directory} was fitted with metadata and holds no image-only model; the drift "
                            "summary looks at the images alone: give an image-only model (or `compare --best`'s)")
        model = model.fallback
    single = model.members[0] if hasattr(model, "members") else model
    if single.ood is None:
        raise ModelError(refit_line(directory).removeprefix("note: ") + " to have a drift summary")
    n = len(manifest)
    if n < MIN_IMAGES:
        raise DataError(f"{where} has {n} image{'s' * (n != 1)}; the drift summary needs at least {MIN_IMAGES} "
                        "to say anything of their class mix and look: give more images")
    if write:
        check_runs_writable(runs)
    with bar(None, progress, total=n, unit="img", desc="drift") as shown:
        feats = single.features(manifest.paths, progress=shown.update)[:, 0]
    proba = single.head(feats) if model is single else model.probabilities(manifest.paths)
    scores = single.ood(feats[:, :single.image_dims])
    W = single.ood.project(feats[:, :single.image_dims]).astype(np.float64)
    mean = W.mean(axis=0)
    noise = float(np.sqrt(((W - mean) ** 2).mean() / n))  # the standard error of the mean along one direction
    counts = np.asarray((single.manifest.get("training") or {}).get("class_counts") or [0] * len(CLASSES), float)
    predicted = np.bincount(decide(proba, model.head.offsets), minlength=len(CLASSES)) / n
    resembles = sorted(({"shift": name, "distance": float(np.linalg.norm(mean - m))}
                        for name, m in single.ood.shifts.items()), key=lambda r: r["distance"])
    flagged = int((scores > single.ood.threshold).sum())
    result = {
        "n": n, "model_dir": str(directory), "answered_by": str(model.directory), "data": str(where),
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "class_mix": [{"class": c, "predicted": float(predicted[i]),
                       "training": float(counts[i] / counts.sum()) if counts.sum() else None}
                      for i, c in enumerate(CLASSES)],
        "unusual": {"flagged": flagged, "share": flagged / n, "threshold": single.ood.threshold,
                    "expected_share": single.ood.about.get("flagged_out_of_fold")},
        "resembles": resembles, "noise": noise, "tie": TIE * noise,
        "nearest": resembles[0]["shift"] if resembles else None,
    }
    if write:
        result["run_id"] = new_run_id("drift", hashlib.sha256(str(Path(where).resolve()).encode()).hexdigest())
        result["record_path"] = str(write_record(result, runs, schema=DRIFT_SCHEMA))
    return result


def format_drift(result):
    """Text lines of a drift summary."""
    lines = [f"drift summary of {result['n']} unlabelled images ({result['data']}) under model {result['model_dir']}"
             + (f", answered by the image-only model it holds ({result['answered_by']})"
                if result["answered_by"] != result["model_dir"] else ""),
             f"{'class':<7} {'predicted':>9} {'training':>9}  name"]
    for row in result["class_mix"]:
        training = "-" if row["training"] is None else f"{row['training']:.1%}"
        lines.append(f"{row['class']:<7} {row['predicted']:>9.1%} {training:>9}  {FULL_NAMES[row['class']]}")
    u = result["unusual"]
    expected = u.get("expected_share")
    lines.append(f"unusual: {u['flagged']} of {result['n']} ({u['share']:.1%}) are unlike the model's training images"
                 + (f" (its own training images out of fold: {expected:.1%})" if expected is not None else ""))
    if not result["resembles"]:
        lines.append("look: - (the model keeps no shift-check features: fit it with --shift standard --out to have "
                     "them)")
        return lines
    first = result["resembles"][0]
    close = [r["shift"] for r in result["resembles"][1:] if r["distance"] - first["distance"] < result["tie"]]
    lines.append(f"look: most like the shift check's fold under {first['shift']} (distance {first['distance']:.2f}"
                 + (f"; tied with {', '.join(close[:4])}{' ...' if len(close) > 4 else ''}" if close else "")
                 + f"; distances closer than {result['tie']:.2f} are ties)")
    lines.append("distance of the images' mean features to the shift check's fold under each condition "
                 "(nearest first):")
    lines.append("  " + ", ".join(f"{r['shift']} {r['distance']:.2f}" for r in result["resembles"]))
    return lines
