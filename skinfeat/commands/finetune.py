"""``skinfeat finetune``: train a backbone end to end into a new one."""

from pathlib import Path

import click

from skinfeat.commands.options import dataset_options, load_manifest, progress_option
from skinfeat.core.devices import DEFAULT_DEVICE, DEVICES
from skinfeat.finetune import DEFAULTS
from skinfeat.finetune.data import AUGMENTS
from skinfeat.finetune.train import BN_POLICIES, LOSSES, PRECISIONS


@click.command()
@dataset_options
@click.option("--module", "-m", default=None, metavar="NAME|PATH",
              help="Backbone to fine-tune: a built-in name, a TF-Hub handle or a SavedModel with trainable "
                   "variables. Default: the built-in efficientnet-lite0-stages-sog.")
@click.option("--folds", "folds_path", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Folds file from `skinfeat data split`; the network trains on its training folds.")
@click.option("--fold", type=click.IntRange(min=0), default=None, metavar="K",
              help="The fold to leave out (never seen, so `fit` can score it).")
@click.option("--all", "all_folds", is_flag=True, help="Train on every fold (no fold left out to score).")
@click.option("--epochs", type=int, default=None,
              help=f"Most epochs; training stops earlier after 3 without a better validation BMCA. "
                   f"Default: {DEFAULTS['epochs']}; with --all, the epochs the fold runs of the same "
                   "settings chose (their median).")
@click.option("--size", type=(int, int), default=DEFAULTS["size"], show_default=True, metavar="H W",
              help="Training input size (150 200: HAM10000's own resolution, 0.6x the cost of 224 224).")
@click.option("--unfreeze", default=DEFAULTS["unfreeze"], show_default=True, metavar="all|N",
              help="Train every variable, or only the last N trainable variables in the order the network "
                   "reads them (3 per convolution of a built-in), plus the head.")
@click.option("--batch", type=int, default=DEFAULTS["batch"], show_default=True, help="Images per step.")
@click.option("--lr", type=float, default=DEFAULTS["lr"], show_default=True,
              help="Peak learning rate (Adam; linear warm-up, then cosine decay).")
@click.option("--loss", type=click.Choice(LOSSES), default=DEFAULTS["loss"], show_default=True,
              help="balanced: cross-entropy weighted by inverse class frequency; focal: focal loss "
                   "(gamma 2) with the same weights.")
@click.option("--bn", type=click.Choice(BN_POLICIES), default=DEFAULTS["bn"], show_default=True,
              help="BatchNorm: frozen moving statistics (for small batches), or train on batch statistics.")
@click.option("--augment", type=click.Choice(AUGMENTS), default=DEFAULTS["augment"], show_default=True,
              help="Training views. frames: framed as the network will see images (the whole frame or a "
                   "square crop of it, zoomed 1-1.6x), rotated, flipped, colour-jittered; robust: square "
                   "crops zoomed 1-3.5x and stronger jitter (extraction's preset); mild.")
@click.option("--seed", type=int, default=DEFAULTS["seed"], show_default=True,
              help="Seed of the validation part, the image order and the augmented views.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True,
              help="bfloat16: oneDNN mixed precision for the training steps, only on a CPU with bfloat16 "
                   "instructions (AVX-512 BF16 or AMX); float32 elsewhere (a GPU uses mixed float16).")
@click.option("--out", type=click.Path(file_okay=False), metavar="DIR",
              help="Where to save the network's own head as a model directory (default: in the run's folder).")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE, show_default=True,
              help="Where to train: auto (a GPU when one is visible, with mixed float16 precision), cpu, "
                   "or gpu (an error when none is visible).")
@progress_option("Show a progress bar (-q: none).")
def finetune(data, images, labels, module, folds_path, fold, all_folds, epochs, size, unfreeze, batch, lr,
             loss, bn, augment, seed, precision, out, device, progress):
    """Fine-tune a backbone end to end on the training folds, on augmented views
    (--augment), class-balanced (or focal) loss, warm-up and cosine decay, and
    early stopping on the validation BMCA of a lesion-grouped tenth of them.

    The result is a new backbone in the module cache, finetuned/<base>-<data>-fold<K>
    (printed as the last line): `extract`, `fit`, `predict` ... take it as
    --module, and `fit` scores only the folds it never saw. A run checkpoints
    every epoch under $SKINFEAT_HOME/finetune/<key>/: the same command resumes
    an interrupted one; other settings make a new run.
    """
    from skinfeat.finetune import finetune as run

    if all_folds == (fold is not None):
        raise click.UsageError("give --fold K (the fold to leave out) or --all, one of them")
    manifest = load_manifest(data, images, labels)
    name = Path(data or images or ".").resolve().name
    result = run(manifest, module, folds_path, fold, dataset_name=name, out=out, progress=progress,
                 log=lambda line: click.echo(line, err=True), epochs=epochs, size=size, unfreeze=unfreeze,
                 batch=batch, lr=lr, loss=loss, bn=bn, augment=augment, seed=seed, device=device,
                 precision=precision)
    if result.reused:
        click.echo(f"up to date: {result.name} was fine-tuned with these settings already "
                   f"(model {result.model_dir})", err=True)
    click.echo(result.name)
