"""``skinfeat fit``: cross-validate a head on cached features, record it, save it."""

import json

import click

from skinfeat.commands.options import (
    load_manifest,
    parse_shift_check,
    progress_option,
    shift_check_options,
    shift_lines,
)
from skinfeat.heads import HEADS
from skinfeat.heads.imbalance import ADJUSTS, CLASS_WEIGHTS, SAMPLINGS


def _parse_params(values):
    """``KEY=VALUE`` strings to a dict; VALUE is read as JSON when it can be (0.1, 256, null)."""
    params = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"got {item!r}; expected KEY=VALUE, e.g. -p hidden=512",
                                     param_hint="--param")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def _parse_fractions(text):
    """``0.01,0.1,1`` -> [0.01, 0.1, 1.0]; click.BadParameter naming what is accepted."""
    shares = []
    for item in str(text).split(","):
        try:
            share = float(item)
        except ValueError:
            raise click.BadParameter(f"got {item.strip()!r}; expected shares in (0, 1] separated by commas, "
                                     "e.g. 0.01,0.1,0.25,1", param_hint="--train-fraction") from None
        if not 0 < share <= 1:
            raise click.BadParameter(f"got {share:g}; expected shares in (0, 1] (1: every training image)",
                                     param_hint="--train-fraction")
        if share not in shares:
            shares.append(share)
    return sorted(shares)


def curve_lines(records):
    """The label-efficiency curve of runs that differ in their training fraction only."""
    from skinfeat.core.intervals import span

    lines = ["label efficiency (each fold's head trained on a share of its training lesions, scored on the "
             "whole test fold)", f"{'fraction':>8}  {'images':>7}  {'BMCA':>5} {'95% interval':<14}  accuracy"]
    for r in records:
        images = sum(r["train_images"]) / max(1, len(r["train_images"]))
        lines.append(f"{r['train_fraction']:>8g}  {images:>7.0f}  {r['metrics']['bmca']['mean']:.3f} "
                     f"{span(r['intervals']['bmca']):<14}  {r['metrics']['accuracy']['mean']:.3f}")
    return lines


@click.command()
@click.option("--head", required=True, metavar="NAME", help=f"Head to fit: {', '.join(HEADS)}.")
@click.option("--features", "features", required=True, multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="Features file written by `skinfeat extract`. Repeat it to fit one head on "
                                   "several backbones' features of the same images, joined side by side.")
@click.option("--metadata", "metadata", metavar="COLUMNS",
              help="Also give the head the patient metadata stored in the features file: a comma-separated "
                   "subset of age,sex,localization (scaled age, one-hot sex and site, missing indicators).")
@click.option("--folds", "folds_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Folds file from `skinfeat data split` (the same for every backbone and head).")
@click.option("--cv", type=int, metavar="K",
              help="Without --folds: K lesion-grouped folds made with seed 0 (default 5).")
@click.option("--class-weight", type=click.Choice(CLASS_WEIGHTS), default=None,
              help="Class weights in training: none, balanced (n / (K n_c)) or sqrt (square root "
                   "of balanced). Default: none (the prior adjustment corrects the decisions).")
@click.option("--sampling", type=click.Choice(SAMPLINGS), default=None,
              help="balanced: resample training rows so every class is drawn equally often.")
@click.option("--adjust", type=click.Choice(ADJUSTS), default=None,
              help="How decisions correct for class imbalance: none, prior (divide the probabilities "
                   "by the training prior: the Bayes rule for balanced accuracy; default) or bmca (then "
                   "tune per-class offsets for balanced accuracy on the inner validation part).")
@click.option("--param", "-p", "param", multiple=True, metavar="KEY=VALUE",
              help="Any other head parameter, e.g. -p hidden=512 -p loss=focal (repeatable).")
@click.option("--views/--no-views", default=True, show_default=True,
              help="Train on every augmented view in the file (scored on the clean view, as predict runs; the "
                   "mean over views beside it).")
@click.option("--operating-point", "operating_point", metavar="TASK:sens=X",
              help="Set a referral threshold on the out-of-fold predictions, carried by the --out model: "
                   "predict, serve and the web page then say per image whether to refer, with the expected "
                   "sensitivity and specificity. TASK:sens=X or TASK:spec=X, TASK melanoma (mel) or "
                   "malignant (MEL+BCC+AKIEC), e.g. mel:sens=0.95.")
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR",
              help="Also fit on all CV images and save the model here.")
@shift_check_options()
@click.option("--test", "test_data", type=click.Path(), metavar="PATH",
              help="With --out: also score the saved model on this labelled dataset (`skinfeat evaluate`).")
@click.option("--train-fraction", "fractions", metavar="F[,F...]", default="1", show_default=True,
              help="Train each fold's head on this share of its training lesions (whole lesions, every class "
                   "kept, seeded), scored on the whole test fold: a label-efficiency curve, e.g. "
                   "0.01,0.1,0.25,1 (one record per value, each with its interval).")
@progress_option("Per-fold progress on stderr (-q: none).")
def fit(head, features, metadata, folds_path, cv, class_weight, sampling, adjust, param, views, operating_point,
        out, shift_data, shifts, tta, test_data, fractions, progress):
    """Fit a head on cached features with lesion-grouped cross-validation.

    Prints BMCA (balanced multiclass accuracy, the ISIC metric), accuracy,
    top-2/3, macro F1, macro AUC, log-loss and calibration error, mean ± std over
    folds, next to the always-NV baseline; per-class recall and the confusion
    matrix. BMCA, accuracy, F1, recall and the confusion matrix score the
    decisions (after --adjust); top-k, AUC, log-loss and ECE score the
    probabilities. Writes one JSON record into runs/ ($SKINFEAT_RUNS) for
    `skinfeat compare`.
    """
    from skinfeat.data.metadata import parse_columns
    from skinfeat.runs.compare import summary_lines
    from skinfeat.runs.fit import run_fit

    shares = _parse_fractions(fractions)
    if len(shares) > 1 and out:
        raise click.UsageError("--out saves one model; expected one --train-fraction with it (1: every image)")
    columns = parse_columns(metadata) if metadata else None
    if operating_point is not None:
        from skinfeat.core.operating import parse_point

        try:
            parse_point(operating_point)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--operating-point") from None
    params = _parse_params(param)
    params.update({k: v for k, v in (("class_weight", class_weight), ("sampling", sampling),
                                      ("adjust", adjust)) if v is not None})
    log = (lambda line: click.echo(line, err=True)) if progress else None
    shift_manifest, parsed = parse_shift_check(shift_data, shifts, tta)
    if test_data and not out:
        raise click.UsageError("--test needs --out DIR: the saved model is what gets scored")
    test = load_manifest(test_data) if test_data else None
    if test is not None:
        from skinfeat.runs.evaluate import labelled

        labelled(test, test_data)  # unlabelled test data fails before any fitting
    curve = []
    for share in shares:
        if len(shares) > 1 and log:
            log(f"train fraction {share:g}")
        record = run_fit(list(features) if len(features) > 1 else features[0], head, params, folds_path=folds_path,
                         cv=cv, use_views=views, out=out, log=log, shift_data=shift_manifest, shifts=parsed, tta=tta,
                         test=test, test_name=test_data, progress=progress, metadata=columns, train_fraction=share,
                         operating_point=operating_point)
        curve.append(record)
    if len(curve) > 1:
        click.echo("\n".join(curve_lines(curve)))
    click.echo("\n".join(summary_lines(record)))
    click.echo(f"record: {record['record_path']}")
    if record.get("shift"):
        click.echo("\n".join(shift_lines(record["shift"])))
    if record.get("test"):
        t = record["test"]
        click.echo(f"test on {t['dataset']} ({t['n']} images): BMCA {t['bmca']:.3f}, accuracy {t['accuracy']:.3f}")
    if record["model_dir"]:
        click.echo(f"model: {record['model_dir']}")


