"""``skinfeat viz``: a 2-D map of a feature file."""

import click

METHODS = ("umap", "tsne", "pca")  # skinfeat.viz.embed.METHODS; listed here so --help stays instant


@click.command()
@click.option("--features", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Features file written by 'skinfeat extract'.")
@click.option("--method", type=click.Choice(METHODS), default="umap", show_default=True,
              help="umap or tsne (both on the first 50 principal components), or plain pca.")
@click.option("--color", default="class", show_default=True, metavar="NAME",
              help="class, fold (needs --folds), or a metadata column: dx_type, localization, sex, age.")
@click.option("--folds", type=click.Path(dir_okay=False), metavar="CSV",
              help="Folds file from 'skinfeat data split', for --color fold.")
@click.option("--subsample", type=click.IntRange(min=3), metavar="N",
              help="Map N images drawn at random, each class in proportion (faster; default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subsample and the map.")
@click.option("--out", type=click.Path(dir_okay=False), metavar="PNG",
              help="Picture to write  [default: <features name>__<method>-<color>.png]")
def viz(features, method, color, folds, subsample, seed, out):
    """Draw a 2-D map (UMAP, t-SNE or PCA) of a feature file, coloured by class,
    metadata or fold.

    The coordinates are cached (under $SKINFEAT_HOME/viz, keyed by the feature
    file, method, subsample and seed), so another --color or --out redraws at once.
    """
    from skinfeat.core.writable import check_writable
    from skinfeat.viz.maps import default_out, feature_map

    out = out or default_out(features, method, color)
    check_writable(out, "the picture")
    result = feature_map(features, method=method, color=color, folds=folds, subsample=subsample, seed=seed, out=out)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    emb = result.embedding
    how = f"computed in {emb.seconds:.1f} s" if emb.computed else "coordinates from the cache"
    click.echo(f"wrote {result.out}: {method} of {len(emb.indices):,} images, {how}")
