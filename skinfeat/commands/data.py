"""``skinfeat data``: check datasets and write lesion-grouped folds.

Every command reads datasets the same way: ``skinfeat.commands.options``
(``dataset_options``, ``load_manifest``).
"""

import dataclasses
import sys

import click
import numpy as np

from skinfeat.commands.options import dataset_options, load_manifest
from skinfeat.core.classes import CLASSES
from skinfeat.data.check import check_dataset, summarize
from skinfeat.data.duplicates import THRESHOLDS
from skinfeat.data.layouts import load_dataset
from skinfeat.data.manifest import ERROR
from skinfeat.data.split import HOLDOUT, fold_balance, make_folds, merge_lesions, write_folds


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
    for problem in problems:  # problems on stderr, the summary and the count on stdout
        click.echo(str(problem), err=True)
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
@click.option("--duplicates", type=click.Path(dir_okay=False), metavar="CSV",
              help="Pairs file of 'skinfeat data duplicates --pairs-out': the lesions of each pair share a fold.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Folds CSV to write (image_id,lesion_id,label,fold); replaced atomically.")
def split(data, images, labels, k, seed, holdout, duplicates, out):
    """Write reproducible lesion-grouped, class-stratified folds.

    All images of a lesion share one fold, and every fold holds about its share
    of each class. Fold -1 is the held-out part (--holdout). Later commands take
    the file (--folds FILE) so every backbone and head is scored on the same folds.
    With --duplicates, lesions linked by near-duplicate images also share one.
    """
    from skinfeat.core.writable import check_writable, writing
    from skinfeat.data.duplicates import read_pairs

    check_writable(out, "the folds file")
    manifest = load_manifest(data, images, labels)
    grouped = manifest
    if duplicates:
        merged = merge_lesions(manifest.image_ids, manifest.lesion_ids, read_pairs(duplicates), duplicates)
        grouped = dataclasses.replace(manifest, lesion_ids=merged)
        joined = len(set(manifest.lesion_ids)) - len(set(merged))
        click.echo(f"{duplicates}: {joined:,} lesions joined others' groups to share their fold")
    folds = make_folds(grouped, k=k, seed=seed, holdout=holdout)
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


@data.command()
@click.option("--features", type=click.Path(dir_okay=False), required=True, metavar="FILE",
              help="Features file written by 'skinfeat extract' (its clean view is compared).")
@click.option("--against", type=click.Path(dir_okay=False), metavar="FILE",
              help="A second features file of the same backbone (e.g. the test set): only pairs across the two.")
@click.option("--similarity", type=click.Choice(list(THRESHOLDS)), default="raw", show_default=True,
              help="Cosine of the features raw or whitened (PCA learnt from --against, else --features; its "
              "threshold was measured on 10,015 images and depends on their number).")
@click.option("--threshold", type=float, metavar="FLOAT",
              help="Lowest cosine similarity of a pair, in (0, 1]. [default: "
              + ", ".join(f"{v} {k}" for k, v in THRESHOLDS.items()) + "]")
@click.option("--folds", type=click.Path(dir_okay=False), metavar="CSV",
              help="Folds file of 'skinfeat data split', to say which pairs cross folds (else 'fold ?').")
@click.option("--all", "show_all", is_flag=True, help="Also list pairs of images of one lesion.")
@click.option("--pairs-out", type=click.Path(dir_okay=False), metavar="CSV",
              help="Write every pair as CSV, for 'skinfeat data split --duplicates'.")
@click.option("--out", type=click.Path(dir_okay=False), metavar="PNG",
              help="Contact sheet of the most similar listed pairs side by side (needs --data).")
@click.option("--data", "datasets", type=click.Path(), multiple=True, metavar="PATH",
              help="Dataset (folder or labels CSV) holding the images, for --out; repeat for --against's.")
def duplicates(features, against, similarity, threshold, folds, show_all, pairs_out, out, datasets):
    """List near-duplicate images: pairs whose features' cosine similarity is at
    least --threshold, most similar first, one line each (image, lesion and fold
    of both, and whether the pair leaks), then a summary line.

    \b
    Within one file, pairs of different lesions in different folds leak (a
    lesion-grouped split keeps the images of one lesion together, not copies
    under two lesion ids); with --against every pair leaks. The search is exact,
    in blocks of rows: the 10,015 HAM10000 images take seconds.
    """
    from skinfeat.core.errors import UsageError
    from skinfeat.core.writable import check_writable, writing
    from skinfeat.data.duplicates import check_threshold, describe, find_duplicates, format_pair, summary, write_pairs
    from skinfeat.data.split import read_folds
    from skinfeat.features.store import read_features
    from skinfeat.viz.sheets import contact_sheet

    threshold = THRESHOLDS[similarity] if threshold is None else threshold
    check_threshold(threshold, similarity)
    if out and not datasets:
        raise UsageError(f"--out {out} draws the images: name the dataset holding them with --data PATH")
    for path, what in ((pairs_out, "the pairs file"), (out, "the contact sheet")):
        if path:
            check_writable(path, what)
    fs = read_features(features, with_views=False)
    other = read_features(against, with_views=False) if against else None
    rows = describe(find_duplicates(fs, other, threshold, similarity), fs, other, read_folds(folds) if folds else None)
    shown = rows if show_all or other is not None else [r for r in rows if r["verdict"] != "same lesion"]
    for row in shown:
        click.echo(format_pair(row))
    click.echo(summary(rows, threshold, against=other is not None))
    if pairs_out:
        with writing(pairs_out, "the pairs file"):
            write_pairs(pairs_out, rows)
        click.echo(f"wrote {pairs_out}")
    if out:
        paths = {}
        for path in datasets:
            manifest = load_dataset(data=path)
            paths.update(zip(manifest.image_ids, manifest.paths))
        with writing(out, "the contact sheet"):
            contact_sheet(shown, paths, out)
        click.echo(f"wrote {out}")
