"""``skinfeat data``: check datasets and write lesion-grouped folds.

Other commands read datasets the same way: decorate them with
:func:`dataset_options` and call :func:`load_manifest` with its three values.
"""

import functools
import sys

import click
import numpy as np

from skinfeat.classes import CLASSES
from skinfeat.data import check_dataset, load_dataset, make_folds, summarize, write_folds
from skinfeat.data.manifest import ERROR
from skinfeat.data.split import HOLDOUT, fold_balance


def dataset_options(command):
    """Add ``--data``, ``--images`` and ``--labels`` (passed on as ``data``, ``images``, ``labels``)."""
    options = [
        click.option("--data", type=click.Path(), metavar="PATH",
                     help="Dataset folder (or labels CSV); the layout is detected: HAM10000 metadata CSV, "
                          "ISIC 2018 one-hot ground truth, one folder per class, or plain images."),
        click.option("--images", type=click.Path(), metavar="DIR",
                     help="Folder of images, searched recursively (instead of --data)."),
        click.option("--labels", type=click.Path(), metavar="CSV",
                     help="Labels for --images: HAM10000 metadata (image_id,dx,...) or ISIC 2018 one-hot "
                          "(image,MEL,NV,...). Without it: class folders or unlabelled images."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def load_manifest(data=None, images=None, labels=None):
    """The Manifest the options name; says on stderr how many images had problems."""
    manifest = load_dataset(data=data, images=images, labels=labels)
    if manifest.problems:
        errors = len(manifest.errors())
        click.echo(f"skinfeat: {len(manifest.problems)} problems in the data ({errors} errors; affected "
                   "images are left out): run 'skinfeat data check' for details", err=True)
    return manifest


@click.group()
def data():
    """Inspect a dataset and split it into lesion-grouped folds.

    \b
    Layouts (--data PATH detects them; --images DIR --labels CSV name them):
      HAM10000       HAM10000_metadata.csv + image folders anywhere below
      ISIC 2018      one-hot ground truth CSV + input folder
                     (+ *LesionGroupings*.csv for lesion ids)
      class folders  MEL/, nv/, ... one folder per class
      unlabelled     a folder of images
    """


@data.command()
@dataset_options
@click.option("--pixels/--no-pixels", default=True, show_default=True,
              help="Decode every image to find truncated or unreadable files (a few seconds per 10,000).")
def check(data, images, labels, pixels):
    """Summarise a dataset and list every problem; exit 1 if any is an error.

    \b
    Errors (exit 1: fix them; the images concerned are left out meanwhile):
      a CSV row whose image file is missing; an image id with two files;
      an image that extract and predict cannot read either: unreadable,
      truncated, zero-byte, too small, too elongated or too large (a
      decompression bomb); an image listed twice with different labels; a
      label outside MEL NV BCC AKIEC BKL DF VASC (any case); a one-hot row
      without exactly one 1; a row with the wrong number of fields;
      byte-identical files under ids of different lesions or labels; a
      folder of class-folders that is not a class.
    Stops at once (one line): a missing, duplicated or ambiguous column
      (image_id and dx, or image and the seven classes); a labels file with
      no rows, not UTF-8, binary, or with a field over 131,072 characters.
    Warnings (usable as is):
      an image without a row; a row repeated with the same label;
      byte-identical files within one lesion; a lesion whose images carry
      different labels (splits use the majority); no lesion ids (no
      lesion_id column or groupings file); a BOM or a ';' or tab delimiter;
      left out: a FIFO or broken link named like an image, an unreadable
      folder, a symbolic link loop, a file or folder name that is not UTF-8.
    """
    manifest = load_dataset(data=data, images=images, labels=labels)
    problems = check_dataset(manifest, pixels=pixels, progress=sys.stderr.isatty())
    click.echo(format_summary(summarize(manifest)))
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.level == ERROR for p in problems)
    warnings = len(problems) - errors
    click.echo(f"{errors} errors, {warnings} warnings" + (": fix the errors above" if errors else ""))
    if errors:
        sys.exit(1)


def format_summary(summary):
    lines = [f"layout: {summary['layout']}"]
    lines += [f"{name}: {path}" for name, path in summary["sources"].items()]
    lines.append(f"{summary['images']:,} images, {summary['lesions']:,} lesions")
    total = summary["images"]
    if summary["unlabelled"] < total:
        lines.append("class   images  share")
        lines += [f"{name:<6} {n:>7,}  {n / total:6.1%}" for name, n in summary["classes"].items()]
    if summary["unlabelled"]:
        lines.append(f"unlabelled: {summary['unlabelled']:,}")
    if summary["metadata_coverage"]:
        shown = ", ".join(f"{k} {v:.1%}" for k, v in summary["metadata_coverage"].items())
        lines.append(f"metadata coverage: {shown}")
    return "\n".join(lines)


@data.command()
@dataset_options
@click.option("--folds", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Number of cross-validation folds (1 only together with --holdout).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and data, same folds.")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Fraction of images set aside as a held-out part (fold -1), e.g. 0.2.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Folds CSV to write (image_id,lesion_id,label,fold); replaced atomically.")
def split(data, images, labels, k, seed, holdout, out):
    """Write reproducible lesion-grouped, class-stratified folds.

    All images of a lesion share one fold, and every fold holds about its share
    of each class. Fold -1 is the held-out part (--holdout). Later commands take
    the file (--folds FILE) so every backbone and head is scored on the same folds.
    """
    from skinfeat.outputs import check_writable, writing

    check_writable(out, "the folds file")
    manifest = load_manifest(data, images, labels)
    folds = make_folds(manifest, k=k, seed=seed, holdout=holdout)
    with writing(out, "the folds file"):
        write_folds(out, manifest, folds)
    click.echo(f"wrote {out}: {len(manifest):,} images, {len(set(manifest.lesion_ids)):,} lesions")
    for part in sorted(set(folds.tolist()), key=lambda p: (p == HOLDOUT, p)):
        name = "held out" if part == HOLDOUT else f"fold {part}"
        in_part = folds == part
        counts = np.bincount(manifest.labels[in_part & (manifest.labels >= 0)], minlength=len(CLASSES))
        shown = " ".join(f"{c}={n}" for c, n in zip(CLASSES, counts))
        click.echo(f"{name:>8}: {int(in_part.sum()):>6,} images  {shown}")
    if (manifest.labels >= 0).any():
        gap = fold_balance(manifest.labels, folds)
        click.echo(f"largest class-share gap to the whole (classes of 100+ images): {gap:.2f} points")
