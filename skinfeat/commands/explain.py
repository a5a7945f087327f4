"""``skinfeat explain``: where the model looked in one image."""

from pathlib import Path

import click

from skinfeat.classes import CLASSES
from skinfeat.explain import METHODS  # the library is light to import: --help stays instant


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Model directory written by `skinfeat fit --out DIR`.")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(METHODS), default="occlusion", show_default=True,
              help="occlusion: how much grey patches lower the class's probability (any head); "
                   "gradient: SmoothGrad input gradients (softmax and logreg heads; imports TensorFlow "
                   "and needs the model's backbone).")
@click.option("--target", metavar="CLASS",
              help=f"Class to explain: {', '.join(CLASSES)}  [default: the predicted class]")
@click.option("--grid", type=click.IntRange(4, 64), default=16, show_default=True,
              help="Occlusion: positions per side (grid x grid forward passes).")
@click.option("--out", type=click.Path(dir_okay=False), metavar="PNG",
              help="Picture to write  [default: <image name>__<method>.png]")
@click.option("--module", metavar="SPEC",
              help="Gradient: the model's backbone SavedModel (folder or handle), when it is not in the "
                   "catalog; it runs, so name only one you trust. Its fingerprint must match.")
def explain(model_dir, image, method, target, grid, out, module):
    """Show where the model looked: the image, a saliency map over it, and the
    predicted classes with their probabilities, as a PNG."""
    from skinfeat.classes import FULL_NAMES
    from skinfeat.explain import explain as run
    from skinfeat.outputs import check_writable

    out = out or f"{Path(image).stem}__{method}.png"
    check_writable(out, "the picture")
    result = run(model_dir, image, method=method, target=target, grid=grid, out=out, module=module)
    best = CLASSES[int(result.proba.argmax())]
    click.echo(f"wrote {result.out}: {method} map of {CLASSES[result.target]} for {result.image_id} "
               f"(predicted {FULL_NAMES[best]} ({best}) {result.proba.max():.3f})")
