"""``skinfeat extract``: run a backbone over a dataset once into the feature cache."""

from pathlib import Path

import click

from skinfeat.commands.options import dataset_options, load_manifest, progress_option
from skinfeat.core.devices import DEFAULT_DEVICE, DEVICES
from skinfeat.features.extract import DEFAULT_RESIZE, DEFAULT_VIEWS, DTYPES, ENGINES, ON_ERROR, RESIZE_POLICIES
from skinfeat.features.precision import DEFAULT_PRECISION, PRECISIONS
from skinfeat.imaging.augment import AUGMENTS, DEFAULT_AUGMENT
from skinfeat.imaging.lesion import DEFAULT_LESION, LESION_OPTIONS


@click.command()
@dataset_options
@click.option("--module", "-m", default=None, metavar="NAME|HANDLE|PATH",
              help="Backbone: a built-in name (see `skinfeat modules list`), a TF-Hub handle, "
                   "or a SavedModel directory / .tar.gz. Default: the built-in efficientnet-lite0-stages-sog "
                   "(EfficientNet-Lite0, multi-layer pooling, colour constancy).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Feature file to write. Default: features/<dataset>__<module>__<resize>__<key>.h5")
@click.option("--resize", type=click.Choice(RESIZE_POLICIES), default=DEFAULT_RESIZE, show_default=True,
              help="How images reach the module's input size: squash (stretch), crop (centre crop) "
                   "or pad (letterbox).")
@click.option("--lesion", type=click.Choice(LESION_OPTIONS), default=DEFAULT_LESION, show_default=True,
              help="Before the resize: none, crop (a square box around the lesion, found without labels, "
                   "15% wider on each side; the whole image when none is found) or crop+hair (hairs "
                   "painted over first). A model fitted on these features prepares every image so.")
@click.option("--views", type=click.IntRange(min=0), default=DEFAULT_VIEWS, show_default=True,
              help="Also store N augmented views per image (see --augment) for training heads that "
                   "hold up on images framed, zoomed and coloured otherwise; 0 for the clean image only.")
@click.option("--augment", type=click.Choice(AUGMENTS), default=DEFAULT_AUGMENT, show_default=True,
              help="How the views are made: robust (random crops zoomed 1-3.5x, letterbox and "
                   "dermatoscope-circle framings, any rotation, flips, colour, blur and "
                   "resolution jitter) or mild (rotation, flip, 0.9-1.1x zoom, light colour jitter).")
@click.option("--seed", "augment_seed", type=int, default=0, show_default=True,
              help="Seed of the augmented views.")
@click.option("--size", "image_size", type=(int, int), default=None, metavar="H W",
              help="Input size for modules that accept any size (default 224 224).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Storage type of the features.")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="skip", show_default=True,
              help="An unreadable image: skip it (recorded in the file) or stop.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
              help="Arithmetic of the network: float32, bfloat16 (oneDNN mixed precision, AMX on CPUs "
                   "that have it) or int8 (a TFLite copy calibrated on this dataset's images). Part of "
                   "the file's key; see the README's precision table before leaving float32.")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE, show_default=True,
              help="Where the network runs: auto (a GPU when one is visible), cpu, or gpu (an error "
                   "when none is visible).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this process. ray: Ray Data actors on a Ray cluster (--ray-address), or on "
                   "a local Ray started for the run; the same file either way.")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="With --engine ray: the cluster to join (host:6379, ray://host:10001 or auto).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --engine ray: how many actors (each loads the module once). Default: one per "
                   "node with all its CPUs, or one per GPU.")
@progress_option("Show a progress bar (-q: none).")
def extract(data, images, labels, module, out, resize, lesion, views, augment, augment_seed, image_size, dtype,
            on_error, precision, device, engine, ray_address, workers, progress):
    """Extract bottleneck features of every image ONCE and cache them in HDF5.

    The file is keyed by everything that changes its contents (module and its
    fingerprint, input size, resize policy, lesion crop, views, the images' ids and bytes):
    rerunning with the same inputs does nothing, changing any makes a new file.
    An interrupted run resumes where it stopped. Prints the file's path.
    """
    from skinfeat.features.extract import extract_features

    manifest = load_manifest(data, images, labels)
    name = Path(data or images).resolve().name
    result = extract_features(manifest, module, out=out, resize=resize, lesion=lesion, views=views, augment=augment,
                              augment_seed=augment_seed, image_size=image_size, dtype=dtype,
                              on_error=on_error, dataset_name=name, progress=progress, precision=precision,
                              device=device, engine=engine, ray_address=ray_address, workers=workers)
    if result.reused:
        click.echo(f"up to date: {result.n_images} images already extracted, nothing to do", err=True)
    else:
        click.echo(f"extracted {result.n_images} images in {result.wall_seconds:.1f} s ({result.seconds:.1f} s "
                   f"running the backbone, {result.images_per_second:.1f} images/s; the rest: building or loading "
                   "it and writing the file)", err=True)
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} unreadable images:", err=True)
        for image_id, reason in result.skipped:
            click.echo(f"  {image_id}: {reason}", err=True)
    click.echo(str(result.path))
