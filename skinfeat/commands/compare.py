"""``skinfeat compare``: the leaderboard of every backbone x head run recorded."""

import click

from skinfeat.heads import HEADS
from skinfeat.records import FORMATS, SORTS


@click.command()
@click.option("--sort", type=click.Choice(list(SORTS)), default="bmca", show_default=True,
              help="Column to sort by (metrics and images/s: best first; fit time: fastest first).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format.")
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
@click.option("--data", "shift_data", type=click.Path(), metavar="PATH",
              help="With --fit --shift: the dataset the features were extracted from.")
@click.option("--shift", "shifts", multiple=True, metavar="NAME[:LEVEL]",
              help="With --fit: shift-check every fit (see `skinfeat fit --shift`); 'standard' for the set.")
@click.option("--tta", default="none", show_default=True, metavar="SET",
              help="With --shift: test-time augmentation of the shift check.")
@click.option("--best", "best_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Then fit the best run (worst-shift BMCA first, CV BMCA second) on all CV images "
                   "and save it here as a model directory, with its backbone.")
@click.option("--ensemble", "ensemble_k", type=click.IntRange(2), metavar="K",
              help="Then (after --fit's fits) record the stacked ensemble of the top K runs (`skinfeat "
                   "ensemble --top K`), unless an ensemble of exactly those runs is recorded already.")
def compare(sort, fmt, show_all, fit_first, heads, folds_path, cv, shift_data, shifts, tta, best_dir, ensemble_k):
    """Print the leaderboard of every backbone x head run recorded in runs/.

    Reads the JSON records written by `skinfeat fit`; it never recomputes a
    metric. Columns: dataset, backbone, head, settings, feature dimension, BMCA
    mean±std over folds, worst shift, test BMCA, accuracy, top-3, macro AUC, CV fit
    time, extraction images/s, folds hash, run id (for `skinfeat report --run`).
    Runs of one dataset stay together, each dataset with its always-NV baseline.
    """
    from skinfeat.commands.fit import shift_options
    from skinfeat.evaluate import fit_missing
    from skinfeat.outputs import check_writable
    from skinfeat.paths import features_dir, runs_dir
    from skinfeat.records import format_leaderboard, leaderboard_rows, read_evaluations, read_records
    from skinfeat.refit import save_best

    manifest, parsed = shift_options(shift_data, shifts, tta)
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
        failures += _ensemble_top(ensemble_k, manifest, parsed, tta)
    records = read_records()
    rows = leaderboard_rows(records, sort=sort, latest=not show_all, evaluations=read_evaluations())
    if not rows:
        click.echo(f"no runs recorded in {runs_dir()}; run `skinfeat fit` or `skinfeat compare --fit`",
                   err=True)
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


def _ensemble_top(k, manifest, shifts, tta):
    """Record the stacked ensemble of the top ``k`` runs unless it is there; [(what, message)] if it fails."""
    from skinfeat.ensemble import run_ensemble, select_runs
    from skinfeat.errors import SkinfeatError, UsageError
    from skinfeat.records import read_records

    log = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        records = read_records()
        members = {r["run_id"] for r in select_runs(records, top=k)}
        wanted = {s.name for s in shifts}
        if not any(r["head"] == "stack" and {m["run_id"] for m in r["members"]} == members
                   and wanted <= set((r.get("shift") or {}).get("shifts", {})) for r in records if r.get("members")):
            log(f"fitting the stacked ensemble of the top {k} runs")
            run_ensemble(top=k, shift_data=manifest, shifts=shifts, tta=tta, log=log, progress=True)
    except UsageError:
        raise
    except SkinfeatError as exc:
        log(f"failed: ensemble of the top {k}: {exc}")
        return [(f"ensemble of the top {k}", str(exc))]
    return []


def _fail_if(failures):
    if failures:
        from skinfeat.errors import SkinfeatError

        raise SkinfeatError(f"{len(failures)} of the fits failed ({'; '.join(what for what, _ in failures)}): "
                            "see the lines starting with 'failed:' above; fix or remove those features files")
