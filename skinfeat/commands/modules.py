"""``skinfeat modules``: the backbone catalog."""

import json

import click

from skinfeat.backbones.build import is_built
from skinfeat.backbones.catalog import load_catalog
from skinfeat.backbones.resolve import DEFAULT_MODULE, availability, build_module, finetuned_modules, resolve_module


@click.group()
def modules():
    """List, build and inspect backbones (TF-Hub image feature-vector modules)."""


def _announce_build(name, force=False):
    """Tell the user (on stderr) when a built-in is about to be converted: it takes a while."""
    entry = load_catalog().entries.get(name)
    if entry is not None and entry.builtin and (force or not is_built(entry)):
        click.echo(f"{name}: converting {entry.source} into a SavedModel (once; ~10-30 s)", err=True)


@modules.command("list")
def list_():
    """Catalog backbones: feature dimension, input size, license, source, and
    status (built / offline = built-in, built on first use / cached / network =
    TF-Hub handle that needs network once); then the modules `skinfeat finetune`
    made (status fine-tuned; use them as --module finetuned/NAME)."""
    rows = [("NAME", "DIM", "INPUT", "STATUS", "LICENSE", "SOURCE")]
    for entry in load_catalog().entries.values():
        size = "x".join(map(str, entry.input_size)) if entry.input_size else "any"
        marker = " (default)" if entry.name == DEFAULT_MODULE else ""
        rows.append((entry.name + marker, str(entry.feature_dim), size, availability(entry),
                     entry.license, entry.handle or entry.source))
    for name, d in finetuned_modules().items():
        rows.append((name, str(d.get("feature_dim")), "x".join(map(str, d.get("input_size") or ["any"])),
                     "fine-tuned", str(d.get("license", "unknown")), str(d.get("source", ""))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@modules.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_builtins", is_flag=True, help="Build every built-in (offline) backbone.")
@click.option("--force", is_flag=True, help="Rebuild even if a complete build is cached.")
def build(names, all_builtins, force):
    """Convert built-in backbones NAMES into SavedModels in the module cache
    (or fetch TF-Hub handles into the TF-Hub cache)."""
    if all_builtins:
        names = names + tuple(e.name for e in load_catalog().builtins())
    if not names:
        raise click.UsageError("give backbone NAMES or --all")
    for name in dict.fromkeys(names):
        _announce_build(name, force)
        click.echo(f"{name}: {build_module(name, force=force)}")


@modules.command()
@click.argument("module")
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(module, as_json):
    """Metadata of MODULE (catalog name, TF-Hub handle or SavedModel path),
    as recorded with the features it computes. Builds or fetches it if needed."""
    _announce_build(module)
    description = resolve_module(module).describe()
    if as_json:
        click.echo(json.dumps(description, indent=2))
        return
    for key, value in description.items():
        click.echo(f"{key}: {value}")


@modules.command()
@click.argument("module")
def path(module):
    """Print the SavedModel directory of MODULE (building or fetching it if needed)."""
    _announce_build(module)
    click.echo(resolve_module(module).path)
