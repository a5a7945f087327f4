"""``skinfeat modules``: the backbone catalog."""

import click


@click.group()
def modules():
    """List, build and inspect backbones (TF-Hub image feature-vector modules)."""
