"""``skinfeat compare``: the leaderboard of every backbone x head run recorded."""

import click

from skinfeat.commands.options import existing_runs, format_option, parse_shift_check, runs_option, shift_check_options
from skinfeat.heads import HEADS
from skinfeat.runs.compare import FORMATS, SORTS


@click.command()
@click.option("--sort", type=click.Choice(list(SORTS)), default="bmca", show_default=True,
              help="Column to sort by (metrics and images/s: best first; fit time: fastest first).")
@format_option(FORMATS)
@click.option("--all", "show_all", is_flag=True,
              help="Every record, not only the latest per (features, head, settings).")
@click.option("--fit/--no-fit", "fit_first", default=False, show_default=True,
              help="First fit the heads on every features file in features/ ($SKINFEAT_FEATURES) "
                   "that has no record yet, with default settings.")
@click.option("--heads", default=",".join(HEADS), show_default=True, metavar="NAMES",
              help="With --fit: comma-separated heads to fit.")
@click.option("--folds", "folds_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --fit: folds file from `skinfeat data split` (default: 5 folds, seed 0).")
@click.option("--cv", type=int, metavar="K", help="With --fit and no --folds: K default folds.")
@shift_check_options("With --fit: ", data_help="the dataset the features were extracted from (for --shift).",
                     shift_help="shift-check every fit (see `skinfeat fit --shift`); 'standard' for the set.")
@click.option("--best", "best_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Then fit the best run (worst-shift BMCA first, CV BMCA second) on all CV images "
                   "and save it here as a model directory, with its backbone.")
@click.option("--ensemble", "ensemble_k", type=click.IntRange(2), metavar="K",
              help="Then (after --fit's fits) record the stacked ensemble of the top K runs (`skinfeat "
                   "ensemble --top K`), unless an ensemble of exactly those runs is recorded already.")
@runs_option
@click.option("--vs", "versus", metavar="RUN",
              help="Compare every run of RUN's dataset with RUN (a run id, or a part only it contains): "
                   "paired BMCA difference with its 95% interval, verdict, corrected t-test over folds.")
def compare(sort, fmt, show_all, fit_first, heads, folds_path, cv, shift_data, shifts, tta, best_dir, ensemble_k,
            runs, versus):
    """Print the leaderboard of every backbone x head run recorded in runs/.

    Reads the JSON records written by `skinfeat fit` and their out-of-fold
    predictions; it never refits a head. Columns: dataset, backbone, head,
    settings, feature dimension, BMCA (mean over folds) with its lesion-grouped
    bootstrap 95% interval, the paired difference to the best BMCA of the dataset
    ("tied with the best" when its interval holds 0; runs of other folds are not
    paired), worst shift (BMCA/accuracy, the shift, the BMCA's 95% interval), test BMCA, accuracy, top-3, macro AUC, CV fit time,
    extraction images/s, folds hash, run id (for `skinfeat report --run` and --vs).
    Runs of one dataset stay together, each dataset with its always-NV baseline.

    A head shown as "HEAD +N views" (logreg +2 views) was trained on each
    image's clean view and its N augmented views (extract --views N); every row
    is scored on each test image's clean view alone, the mode `predict`,
    `evaluate`, `serve` and the web page run by default (the mean over the views,
    --tta views, is in `fit`'s output beside it). HEAD+ttaN marks a record made
    before that, which scored the mean of the N+1 views' probabilities.
    """
    from skinfeat.core.errors import UsageError
    from skinfeat.core.paths import features_dir, runs_dir
    from skinfeat.core.writable import check_writable
    from skinfeat.runs.compare import format_leaderboard, leaderboard_rows, read_evaluations
    from skinfeat.runs.ensemble import top_ensemble
    from skinfeat.runs.fit import fit_missing
    from skinfeat.runs.records import read_records
    from skinfeat.runs.save import save_best

    runs = existing_runs(runs)
    if runs is not None and (fit_first or best_dir or ensemble_k):
        raise UsageError("--runs reads the records of another folder; expected it without --fit, --best and "
                         "--ensemble, which write: for those, set SKINFEAT_RUNS=DIR")
    if versus is not None:
        from skinfeat.runs.compare import versus_lines

        if fit_first or best_dir or ensemble_k:
            raise UsageError("--vs prints one comparison of recorded runs; expected it without --fit, --best and "
                             "--ensemble: run those first, then `skinfeat compare --vs RUN`")
        from skinfeat.runs.paired import find_run

        records = read_records(runs)
        click.echo("\n".join(versus_lines(records, find_run(records, versus), runs=runs, latest=not show_all)))
        return None
    manifest, parsed = parse_shift_check(shift_data, shifts, tta)
    if best_dir:
        check_writable(best_dir, "the best model", folder=True)
    failures = []
    if fit_first:
        files = sorted(features_dir().glob("*.h5"))
        if not files:
            click.echo(f"no features files in {features_dir()}; run `skinfeat extract` first", err=True)
        _, failures = fit_missing(files, [h for h in heads.split(",") if h.strip()], folds_path, cv,
                                  log=lambda line: click.echo(line, err=True), shift_data=manifest,
                                  shifts=parsed, tta=tta, progress=True)
    if ensemble_k:
        failures += top_ensemble(ensemble_k, manifest, parsed, tta, log=lambda line: click.echo(line, err=True))
    records = read_records(runs)
    rows = leaderboard_rows(records, sort=sort, latest=not show_all, evaluations=read_evaluations(runs), runs=runs)
    if not rows:
        click.echo(f"no runs recorded in {runs or runs_dir()}; run `skinfeat fit` or `skinfeat compare --fit`"
                   + ("" if runs else ", or point --runs at the runs folder"), err=True)
        return _fail_if(failures)
    click.echo(format_leaderboard(rows, fmt, records))
    if best_dir:
        directory, best = save_best(records, best_dir, log=lambda line: click.echo(line, err=True))
        worst = (best.get("shift") or {}).get("worst")
        figures = f"CV BMCA {best['metrics']['bmca']['mean']:.3f}" + (
            f", worst shift BMCA {worst['bmca']:.3f} ({worst['bmca_shift']}), accuracy {worst['accuracy']:.3f} "
            f"({worst['accuracy_shift']})" if worst else "")
        click.echo(f"best model: {directory} ({best['head']} on {best['backbone']['module']}; {figures})")
    if len({row["folds"] for row in rows}) > 1:
        click.echo("note: rows were scored on different folds; compare rows with the same folds hash",
                   err=True)
    _fail_if(failures)


def _fail_if(failures):
    if failures:
        from skinfeat.core.errors import SkinfeatError

        raise SkinfeatError(f"{len(failures)} of the fits failed ({'; '.join(what for what, _ in failures)}): "
                            "see the lines starting with 'failed:' above; fix or remove those features files")
