"""``skinfeat ensemble``: a stacked (or averaged) ensemble of recorded runs."""

import click

from skinfeat.commands.options import (
    load_manifest,
    parse_shift_check,
    progress_option,
    shift_check_options,
    shift_lines,
)
from skinfeat.model.ensemble_dir import METHODS  # light: no scikit-learn


@click.command()
@click.argument("run_ids", nargs=-1, metavar="RUN_ID...")
@click.option("--top", type=click.IntRange(2), metavar="K",
              help="Instead of RUN_IDs: the K best runs of the leaderboard (as `compare --best` ranks them) "
                   "on the folds of the best one.")
@click.option("--method", type=click.Choice(METHODS), default="stack", show_default=True,
              help="stack: a logreg meta-learner on the members' log-probabilities, cross-validated on "
                   "their folds; mean: their average.")
@shift_check_options(
    data_help="The dataset the members' features were extracted from: for --shift, or for repeating the "
              "members' own shift checks where their shifted features are not cached.",
    shift_help="Shift check of the ensemble on its first fold (repeatable; 'standard' for the set). Without "
               "it, the members' own shift checks are repeated when they all have the same one.")
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR",
              help="Also save the ensemble here: every member fitted on all CV images, with its backbone, "
                   "and the meta-learner; `skinfeat predict` and `evaluate` take it.")
@progress_option("Per-fold progress on stderr (-q: none).")
def ensemble(run_ids, top, method, shift_data, shifts, tta, out, progress):
    """Ensemble recorded runs from their out-of-fold probabilities.

    RUN_ID is a run id of `skinfeat fit` (or its unique start; `skinfeat
    compare --format csv` lists them). The members must be scored on the same
    folds of the same images; only rows every member scored take part. The
    ensemble is scored on those folds (the meta-learner of a fold is fitted on
    the other folds only) and recorded as a run: `skinfeat compare` shows it.
    """
    from skinfeat.runs.compare import summary_lines
    from skinfeat.runs.ensemble import run_ensemble

    manifest, parsed = parse_shift_check(shift_data, shifts, tta)
    if shift_data and not shifts:
        manifest = load_manifest(shift_data)
    record = run_ensemble(run_ids, top, method, shift_data=manifest, shifts=parsed, tta=tta, out=out,
                          log=(lambda line: click.echo(line, err=True)) if progress else None, progress=progress)
    click.echo("\n".join(summary_lines(record)))
    click.echo(f"record: {record['record_path']}")
    if record.get("shift"):
        click.echo("\n".join(shift_lines(record["shift"])))
    if record["model_dir"]:
        click.echo(f"model: {record['model_dir']}")
