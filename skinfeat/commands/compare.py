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
def compare(sort, fmt, show_all, fit_first, heads, folds_path, cv):
    """Print the leaderboard of every backbone x head run recorded in runs/.

    Reads the JSON records written by `skinfeat fit`; it never recomputes a
    metric. Columns: backbone, head, settings, feature dimension, BMCA mean±std,
    accuracy, top-3, macro AUC, CV fit time, extraction images/s, folds hash.
    """
    from skinfeat.evaluate import fit_missing
    from skinfeat.paths import features_dir, runs_dir
    from skinfeat.records import baseline_note, format_leaderboard, leaderboard_rows, read_records

    if fit_first:
        files = sorted(features_dir().glob("*.h5"))
        if not files:
            click.echo(f"no features files in {features_dir()}; run `skinfeat extract` first", err=True)
        fit_missing(files, [h for h in heads.split(",") if h.strip()], folds_path, cv,
                    log=lambda line: click.echo(line, err=True))
    records = read_records()
    rows = leaderboard_rows(records, sort=sort, latest=not show_all)
    if not rows:
        click.echo(f"no runs recorded in {runs_dir()}; run `skinfeat fit` or `skinfeat compare --fit`",
                   err=True)
        return
    click.echo(format_leaderboard(rows, fmt))
    if fmt in ("table", "markdown"):
        click.echo(baseline_note(records))
    if len({row["folds"] for row in rows}) > 1:
        click.echo("note: rows were scored on different folds; compare rows with the same folds hash",
                   err=True)
