"""``skinfeat explain``: where the model looked, in one image or a sheet of many."""

from pathlib import Path

import click

from skinfeat.apps.explain import DEFAULT_SAMPLE, METHODS  # the library is light to import: --help stays instant
from skinfeat.core.classes import CLASSES


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Model directory written by `skinfeat fit --out DIR`.")
@click.argument("image", type=click.Path(dir_okay=False), required=False)
@click.option("--data", type=click.Path(), metavar="PATH",
              help="Instead of IMAGE: a dataset (any layout `extract` reads); draws a contact sheet of "
                   "--sample images with their maps, true and predicted classes.")
@click.option("--sample", "n", type=int, default=DEFAULT_SAMPLE, show_default=True, metavar="N",
              help="With --data: how many images (per class with --per-class), drawn at random.")
@click.option("--per-class", is_flag=True, help="With --data: --sample images of each class, one row per class.")
@click.option("--errors", is_flag=True,
              help="With --data (the dataset the model was fitted on): the error gallery of the model's run, "
                   "per true class its most confident wrong out-of-fold predictions with the map of the class "
                   "wrongly decided; written beside the run's record (where `skinfeat report` shows it) "
                   "unless --out is given.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --data: which images are drawn.")
@click.option("--method", type=click.Choice(METHODS), default="occlusion", show_default=True,
              help="occlusion: how much grey patches lower the class's probability (any head; the "
                   "model's own TFLite backbone); gradient: SmoothGrad input gradients (softmax and "
                   "logreg heads); gradcam: Grad-CAM on the backbone's last convolutional map (any head; "
                   "built-in backbones and modules fine-tuned from them). gradient and gradcam import "
                   "TensorFlow and need the model's backbone SavedModel.")
@click.option("--target", metavar="CLASS",
              help=f"Class to explain: {', '.join(CLASSES)}  [default: the predicted class]")
@click.option("--grid", type=click.IntRange(4, 64), default=None,
              help="Occlusion: positions per side (grid x grid forward passes)  [default: 16; 8 with --data]")
@click.option("--out", type=click.Path(dir_okay=False), metavar="PNG",
              help="Picture to write  [default: <image name>__<method>.png, or <data name>__<method>_sheet.png]")
@click.option("--module", metavar="SPEC",
              help="gradient/gradcam: the model's backbone SavedModel (folder or handle), when it is not "
                   "in the catalog; it runs, so name only one you trust. Its fingerprint must match.")
def explain(model_dir, image, data, n, per_class, errors, seed, method, target, grid, out, module):
    """Show where the model looked: the image, a saliency map over it, and the
    predicted classes with their probabilities, as a PNG. With --data instead of
    an image: a contact sheet of many images, each with its map, its true and
    predicted class and the share of the map on the image's border."""
    from skinfeat.core.classes import FULL_NAMES
    from skinfeat.core.errors import UsageError
    from skinfeat.core.writable import check_writable

    if (image is None) == (data is None):
        raise UsageError("give one IMAGE, or --data PATH for a contact sheet (not both)")
    if errors:
        if data is None or target is not None:
            raise UsageError("--errors draws the run's errors from the dataset it was fitted on: give --data PATH "
                             "and no IMAGE or --target")
        from skinfeat.apps.explain import explain_errors

        if out is not None:
            check_writable(out, "the picture")
        sheet = explain_errors(model_dir, data, method=method, grid=grid or 8, out=out, module=module)
        click.echo(f"wrote {sheet.out}: {method} maps of the {len(sheet.cells)} most confident wrong out-of-fold "
                   f"predictions ({len({c.true for c in sheet.cells})} true classes)")
        return
    if data is not None:
        if target is not None:
            raise UsageError("--target explains one image; a sheet shows each image's predicted class: drop it")
        from skinfeat.apps.explain import explain_sample

        out = out or f"{Path(data).name}__{method}_sheet.png"
        check_writable(out, "the picture")
        sheet = explain_sample(model_dir, data, n, per_class, method, grid or 8, seed, out, module)
        right = sum(c.true == c.predicted for c in sheet.cells)
        labelled = sum(c.true >= 0 for c in sheet.cells)
        click.echo(f"wrote {sheet.out}: {method} maps of {len(sheet.cells)} images"
                   + (f" ({right} of {labelled} predicted right)" if labelled else "")
                   + f"; {sheet.border:.0%} of the maps' mass on the outer band ({sheet.band_area:.0%} of the image)")
        return
    from skinfeat.apps.explain import explain as run

    out = out or f"{Path(image).stem}__{method}.png"
    check_writable(out, "the picture")
    result = run(model_dir, image, method=method, target=target, grid=grid or 16, out=out, module=module)
    best = CLASSES[result.decision]
    click.echo(f"wrote {result.out}: {method} map of {CLASSES[result.target]} for {result.image_id} "
               f"(decision {FULL_NAMES[best]} ({best}), probability {result.proba[result.decision]:.3f})")
