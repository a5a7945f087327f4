"""``skinfeat report``: one self-contained HTML page of the results."""

import click

from skinfeat.apps.report import MAP_METHODS as MAPS  # the library is light to import: --help stays instant
from skinfeat.commands.options import existing_runs, runs_option


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              metavar="HTML", help="Where to write the report.")
@click.option("--map", "map_method", type=click.Choice(MAPS), default="umap", show_default=True,
              help="2-D map of the shown run's features (cached after the first time), or none.")
@click.option("--run", "run_id", metavar="ID",
              help="The run to show in detail (its id, from the run column of `skinfeat compare`, or a "
                   "start of it that only one run has); default: the leaderboard's first.")
@runs_option
def report(out, map_method, run_id, runs):
    """Write one HTML file with the leaderboard of every run in runs/ ($SKINFEAT_RUNS),
    the best run's (or --run's) confusion matrix, ROC / precision-recall and
    reliability plots, a map of its features and a summary of its dataset.

    The file holds everything (pictures embedded), so it opens offline and can be
    mailed as is. Nothing is refitted: it reads the records `skinfeat fit` wrote.
    """
    from skinfeat.apps.report import write_report

    result = write_report(out, runs=existing_runs(runs), map_method=map_method, run=run_id)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    best = result.best
    which = "run" if run_id else "best"
    click.echo(f"wrote {result.path}: {result.n_runs} run{'' if result.n_runs == 1 else 's'}, {which} {best['backbone'].get('module')} + "
               f"{best['head']} (run {best['run_id']}, BMCA {best['metrics']['bmca']['mean']:.3f}), "
               f"{len(result.figures)} figures")
