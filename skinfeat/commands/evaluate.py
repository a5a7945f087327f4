"""``skinfeat evaluate``: score a fitted model on labelled data it never saw, clean
and under distribution shifts; or score an ISIC-format prediction file."""

import json
import sys

import click

from skinfeat.commands.options import (
    SHIFTS_HELP,
    TTA_SETS_HELP,
    dataset_options,
    format_option,
    load_manifest,
    progress_option,
    shift_option,
    tta_option,
)


@click.command()
@click.option("--model", "model_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Model directory written by `skinfeat fit --out DIR` (with its exported backbone).")
@dataset_options
@shift_option(f"Also score on transformed copies of the images (repeatable): {SHIFTS_HELP}.")
@tta_option(f"Test-time augmentation: {TTA_SETS_HELP}; probabilities are averaged over the views.")
@click.option("--predictions", type=click.Path(dir_okay=False), metavar="CSV",
              help="Instead of a model: score this ISIC-format file (image,MEL,NV,...,VASC) "
                   "against --labels.")
@format_option(("table", "json"))
@click.option("--record/--no-record", default=True, show_default=True,
              help="Write a JSON record into runs/ ($SKINFEAT_RUNS) for `skinfeat compare` and `report`.")
@click.option("--metadata", "metadata_csv", type=click.Path(dir_okay=False), metavar="CSV",
              help="For a model fitted with --metadata: age, sex and site by image id (HAM10000 or ISIC "
                   "layout); default: the dataset's own metadata columns.")
@click.option("--unseen-only", is_flag=True,
              help="Score only the images the model was not fitted on, and say how many were left out "
                   "(default: data that holds some of them is an error).")
@progress_option("Show a progress bar (-q: none).")
def evaluate(model_dir, data, images, labels, shifts, tta, predictions, fmt, record, metadata_csv, unseen_only,
             progress):
    """Score a model on labelled images it was not trained on (another clinic's,
    ISIC's validation or test set), as `predict` runs it.

    Prints every metric `fit` prints (BMCA, accuracy, top-2/3, macro F1, macro
    AUC, log-loss, ECE, per-class recall, confusion matrix) next to the
    always-NV baseline and, with --shift, BMCA and accuracy under each shift and
    the worst case: a model that only holds on images framed like its training
    set shows it here. Each image the model's out-of-distribution score flags
    is counted ("unusual"). A model records the images it was fitted on (by id
    and file content): data that holds any of them is refused, or with
    --unseen-only scored without them.

    Images without labels get a drift summary instead: the class mix the model
    predicts against its training mix, how many it flags as unusual, and which
    of the shift check's conditions (clean, zoomed, rotated, recoloured, ...)
    the images resemble most, from their features (needs a model fitted with
    --shift ... --out; at least 20 images).

    \b
    skinfeat evaluate --model models/best --data ../isic2018_val --shift standard
    skinfeat evaluate --model models/best --images clinic_photos/
    skinfeat evaluate --predictions preds.csv --labels ISIC2018_Task3_Test_GroundTruth.csv
    """
    from skinfeat.runs.evaluate import evaluate_images, evaluate_predictions, format_evaluation
    from skinfeat.runs.records import check_runs_writable

    if record:
        check_runs_writable()  # before any image is scored
    if predictions is not None:
        if model_dir or data or images or shifts or unseen_only:
            raise click.UsageError("--predictions takes only --labels CSV; drop --model, --data, --images, --shift, "
                                   "--unseen-only")
        if labels is None:
            raise click.UsageError("--predictions needs --labels CSV (HAM10000 metadata or ISIC one-hot ground truth)")
        result = evaluate_predictions(predictions, labels, write=record)
    else:
        if model_dir is None:
            raise click.UsageError("no model given; pass --model DIR (from `skinfeat fit --out DIR`), "
                                   "or --predictions CSV --labels CSV")
        from skinfeat.imaging.shifts import parse_shifts
        from skinfeat.imaging.tta import tta_views

        parsed = parse_shifts(shifts)  # bad names fail before any image is read
        tta_views(tta)
        manifest = load_manifest(data, images, labels)
        errors = manifest.errors()
        if errors:
            from skinfeat.core.errors import DataError

            raise DataError(f"{data or images}: {len(errors)} problems in the data, the first: {errors[0]}; "
                            "evaluate scores every image, so fix them first (`skinfeat data check` lists them)")
        if not (manifest.labels >= 0).any():  # unlabelled outside images: what they look like to the model
            from skinfeat.runs.drift import drift_summary, format_drift

            if parsed or tta != "none" or metadata_csv or unseen_only:
                raise click.UsageError(f"{data or images} has no labels: evaluate gives its drift summary, which "
                                       "takes no --shift, --tta, --metadata or --unseen-only; drop them, or give "
                                       "labels")
            result = drift_summary(model_dir, manifest, where=data or images, progress=progress, write=record)
            click.echo(json.dumps(result, indent=1) if fmt == "json" else "\n".join(format_drift(result)))
            if result.get("record_path"):
                click.echo(f"record: {result['record_path']}", err=True)
            return
        table = None
        if metadata_csv:
            from skinfeat.data.metadata import read_metadata_csv

            table = read_metadata_csv(metadata_csv)
        result = evaluate_images(model_dir, manifest, parsed, tta, where=data or images,
                                 write=record, progress=progress, metadata=table, unseen_only=unseen_only)
    if fmt == "json":
        click.echo(json.dumps({k: v for k, v in result.items() if k != "image_ids"}, indent=1))
    else:
        click.echo("\n".join(format_evaluation(result)))
    if result.get("record_path"):
        click.echo(f"record: {result['record_path']}", err=True)
    sys.stdout.flush()
