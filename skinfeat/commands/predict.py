"""``skinfeat predict`` (images -> classes with a model directory) and ``skinfeat
export`` (put the backbone inside a model directory). Imports stay light: a new
process predicting one image must not pay for TensorFlow."""

import sys
from pathlib import Path

import click

from skinfeat.commands.options import format_option
from skinfeat.model.predict import FORMATS  # light to import (no TensorFlow, scikit-learn, LiteRT)


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Model directory written by `skinfeat fit --out DIR`.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="IMAGE|DIR...")
@click.option("--top-k", type=click.IntRange(1, 7), default=3, show_default=True,
              help="How many classes to show per image (table, json, csv).")
@click.option("--tta", default="none", show_default=True, is_flag=False, flag_value="views", metavar="SET",
              type=click.Choice(["none", "flips", "multiscale", "views"]),
              help="Test-time augmentation, probabilities averaged over the views: none; flips (mirror, "
                   "flip, rotate 90); multiscale (flips plus a 1.3x centre zoom); views, or --tta alone "
                   "after the images (extraction's augmentation with a fixed seed, as many views as the "
                   "model was trained with, else 8; imports TensorFlow).")
@format_option(FORMATS, "table: one line per image; json; csv; isic: the ISIC 2018 submission CSV "
                        "(image,MEL,NV,BCC,AKIEC,BKL,DF,VASC).")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write here (replaced only when all images are done) instead of standard output.")
@click.option("--metadata", "metadata_csv", type=click.Path(dir_okay=False), metavar="CSV",
              help="For a model fitted with --metadata: each image's age, sex and site, by image id "
                   "(HAM10000_metadata.csv, or the ISIC layout: image, age_approx, sex, anatom_site_general).")
@click.option("--fallback", "fallback_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="An image-only model directory that predicts the images the --metadata CSV has no row for "
                   "(default: the image-only model the model holds, as `compare --best` saves one; else such "
                   "images are an error).")
def predict(model_dir, inputs, top_k, tta, fmt, out, metadata_csv, fallback_dir):
    """Predict the lesion class of images (files, or folders searched recursively).

    Prints each image's decision, then the most probable classes with their full
    names and probabilities. Folders of any size are streamed. An image that
    cannot be read is reported on stderr and skipped; the others are predicted.

    Probabilities are calibrated (a temperature fitted on the run's out-of-fold
    predictions). The decision is the class of the model's prior-adjusted rule
    (`fit --adjust`), the one balanced accuracy scores: it may be a rarer class
    than the most probable one. --format json also gives the decision scores and
    the probabilities as trained; --format isic carries the decision scores (the
    challenge scores each row's argmax). Only the model directory is needed.
    """
    from skinfeat.core.atomic import write_atomically
    from skinfeat.core.writable import check_writable, writing
    from skinfeat.model.ensemble_dir import load_any
    from skinfeat.model.predict import predict_paths, write_predictions
    from skinfeat.model.predictor import load_predictor

    if out is not None:
        check_writable(out, "the predictions")
    model = load_any(model_dir)
    fallback = load_predictor(fallback_dir) if fallback_dir else None
    table = None
    if metadata_csv:
        from skinfeat.data.metadata import read_metadata_csv

        table = read_metadata_csv(metadata_csv)
    skips = _Skips()
    predictions = skips.reported(predict_paths(model, inputs, tta=tta, on_skip=skips.add, metadata=table,
                                               fallback=fallback))
    shown = bool(model.metadata)  # each image says whether its metadata or the image alone answered
    point = getattr(model, "operating_point", None)
    if point is not None:
        from skinfeat.core.operating import point_line

        click.echo(point_line(point), err=True)
    ood = _OOD(model)
    predictions = ood.counted(predictions)
    if out is None:
        count = write_predictions(predictions, sys.stdout, fmt, top_k, shown, point is not None, ood.shown)
    else:
        with writing(out, "the predictions"):
            count = write_atomically(out, lambda f: write_predictions(predictions, f, fmt, top_k, shown,
                                                                      point is not None, ood.shown), keep=bool)
    skips.finish(count)
    ood.finish(count)
    if out is not None:
        click.echo(f"wrote {out}: {count} images" + (f", {len(skips.done)} skipped" if skips.done else ""), err=True)


class _OOD:
    """The model's out-of-distribution flag: what it means, said once on stderr with the
    first prediction, and how many images it flagged after them; a model saved before
    the score existed is said to lack it, with how to refit."""

    def __init__(self, model):
        from skinfeat.core.ood import ood_line, refit_line

        score = getattr(model, "ood", None)
        self.shown, self.unusual = score is not None, 0
        self.line = ood_line(score.about) if self.shown else refit_line(model.directory)

    def counted(self, predictions):
        for p in predictions:
            if self.line:  # said once some image is predicted (not before an error)
                click.echo(self.line, err=True)
                self.line = None
            self.unusual += bool(p.unusual)
            yield p

    def finish(self, count):
        if self.shown and count:
            click.echo(f"{self.unusual} of {count} images are unusual" + (
                ": their classes are guesses outside what the model knows" if self.unusual else ""), err=True)


class _Skips:
    """Unreadable images: each reported on stderr once some image was predicted; when
    none could be, one error (the image's own message when it was the only one)."""

    def __init__(self):
        self.pending, self.done, self.started = [], [], False

    def add(self, path, exc):
        self.pending.append((path, exc))
        if self.started:
            self._flush()

    def _flush(self):
        for path, exc in self.pending:
            click.echo(f"skipped {path}: {exc}", err=True)
        self.done += self.pending
        self.pending = []

    def reported(self, predictions):
        for prediction in predictions:
            self.started = True
            self._flush()
            yield prediction

    def finish(self, count):
        from skinfeat.core.errors import DataError

        if count:
            self._flush()
        elif len(self.pending) == 1:
            raise self.pending[0][1]
        else:
            raise DataError(f"none of the {len(self.pending)} images could be read (e.g. {self.pending[0][1]}); "
                            "expected JPEG, PNG, BMP, GIF, TIFF or WebP images")


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Model directory written by `skinfeat fit --out DIR`.")
@click.option("--module", "modules", multiple=True, metavar="SPEC",
              help="Where the model's backbone is now (catalog name, SavedModel folder, handle); "
                   "default: the one recorded in the model, if it is in the catalog (a SavedModel "
                   "folder or handle runs, so it is used only when named here). Its fingerprint must match. "
                   "A model on several backbones takes one --module per backbone, in their order.")
@format_option(("tflite", "web"), "tflite: the backbones into the model directory; web: a static site (--out) "
                                   "whose page runs the model in the browser, offline.")
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR",
              help="With --format web: the folder to write the site into (new, empty, or an earlier site).")
def export(model_dir, modules, fmt, out):
    """Put the model's backbones inside its directory as TFLite files, or
    (--format web) write a static site that runs the model in a browser.

    `skinfeat fit --out` does this already when the backbone is available;
    use this for a model saved without it. The TFLite copy is checked against
    the backbone on probe images. Prediction then needs only the directory.

    The site (index.html, its script, the backbone, the head's weights and the
    LiteRT.js runtime) needs no network: serve the folder with any static web
    server (`python -m http.server -d DIR`) and open it. It predicts as
    `skinfeat predict` does without --tta.
    """
    from skinfeat.core.errors import UsageError

    if fmt == "web" or out is not None:
        if fmt != "web" or not out or modules:
            raise UsageError("--format web takes --out DIR (the site's folder) and no --module; "
                             "--out is only for --format web: export the backbone first with "
                             f"`skinfeat export --model {model_dir}` if the model has none")
        from skinfeat.apps.web.site import export_web

        done = export_web(model_dir, out)
        if done["model"] != str(Path(model_dir)):
            click.echo(f"the page classifies images alone: it runs {done['model']}, the image-only model that "
                       f"{model_dir} holds for images without metadata", err=True)
        click.echo(f"wrote {out}: {done['files']} files, {done['bytes'] / 1e6:.1f} MB; serve it with "
                   f"`python -m http.server -d {out}` and open http://localhost:8000/")
        return
    from skinfeat.model.export import export_model

    for info in export_model(model_dir, modules):
        click.echo(f"exported {info['module']} into {Path(model_dir) / info['file']} "
                   f"({info['input_size'][0]}x{info['input_size'][1]}, {info['feature_dim']}-D, "
                   f"max difference to the SavedModel {info['max_abs_diff']:.1e})")
