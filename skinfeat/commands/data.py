"""``skinfeat data``: check datasets and write lesion-grouped folds."""

import click


@click.group()
def data():
    """Inspect a dataset and split it into lesion-grouped folds."""
