"""The options several commands share, declared once: the dataset (``--data`` /
``--images`` / ``--labels``), the shift check (``--data`` / ``--shift`` /
``--tta``), progress (``--progress/--no-progress``, ``-q`` for short) and the
output format; and the reading of their values (``load_manifest``,
``parse_shift_check``)."""

import functools

import click

TTA_SETS_HELP = "none, flips (mirror, flip, rotate 90) or multiscale (flips plus a 1.3x centre zoom)"
SHIFTS_HELP = ("crop, pad, vignette[:R], zoom:Z, rotate:DEG, brightness:F, contrast:F, temperature:T, "
               "blur:SIGMA, jpeg:Q, downscale:F; 'standard' for the documented set of 15")


def _stack(command, options):
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def dataset_options(command):
    """Add ``--data``, ``--images`` and ``--labels`` (passed on as ``data``, ``images``, ``labels``)."""
    return _stack(command, [
        click.option("--data", type=click.Path(), metavar="PATH",
                     help="Dataset folder (or labels CSV); the layout is detected: HAM10000 metadata CSV, "
                          "ISIC 2018 one-hot ground truth, one folder per class, or plain images."),
        click.option("--images", type=click.Path(), metavar="DIR",
                     help="Folder of images, searched recursively (instead of --data)."),
        click.option("--labels", type=click.Path(), metavar="CSV",
                     help="Labels for --images: HAM10000 metadata (image_id,dx,...) or ISIC 2018 one-hot "
                          "(image,MEL,NV,...). Without it: class folders or unlabelled images."),
    ])


def load_manifest(data=None, images=None, labels=None):
    """The Manifest the options name; says on stderr how many images had problems."""
    from skinfeat.data.layouts import load_dataset

    manifest = load_dataset(data=data, images=images, labels=labels)
    if manifest.problems:
        errors = len(manifest.errors())
        click.echo(f"skinfeat: {len(manifest.problems)} problems in the data ({errors} errors; affected "
                   "images are left out): run 'skinfeat data check' for details", err=True)
        for problem in manifest.problems[:SHOWN_PROBLEMS]:  # named here too, the first few
            click.echo(f"  {problem}", err=True)
        if len(manifest.problems) > SHOWN_PROBLEMS:
            click.echo(f"  ... and {len(manifest.problems) - SHOWN_PROBLEMS} more", err=True)
    return manifest


SHOWN_PROBLEMS = 5  # the data problems a command names before its work


def shift_option(help):
    return click.option("--shift", "shifts", multiple=True, metavar="NAME[:LEVEL]", help=help)


def tta_option(help):
    return click.option("--tta", default="none", show_default=True, metavar="SET", help=help)


def shift_check_options(when="", data_help=None, shift_help=None):
    """Add the shift check's ``--data`` (as ``shift_data``), ``--shift`` (``shifts``) and
    ``--tta``; ``when``: what the options need first (for example "With --fit: ")."""
    data_help = data_help or "With --shift: the dataset the features were extracted from (its images are shifted)."
    shift_help = shift_help or ("Shift check: score the first fold's head on that fold's images under this shift "
                                "(repeatable; 'standard' for the documented set); the leaderboard shows the worst.")
    return lambda command: _stack(command, [
        click.option("--data", "shift_data", type=click.Path(), metavar="PATH", help=when + data_help),
        shift_option(when + shift_help),
        tta_option(f"{when or 'With --shift: '}test-time augmentation of the shift check (none, flips, multiscale)."),
    ])


def parse_shift_check(data, shifts, tta):
    """(Manifest, parsed shifts) of --data/--shift/--tta; usage errors before any work."""
    if not shifts:
        return None, []
    from skinfeat.imaging.shifts import parse_shifts
    from skinfeat.imaging.tta import tta_views

    parsed = parse_shifts(shifts)
    tta_views(tta)
    if data is None:
        raise click.UsageError("--shift needs --data PATH, the dataset the features were extracted from")
    return load_manifest(data), parsed


def shift_lines(check):
    """The shift check as text: BMCA / accuracy per shift, and the worst."""
    lines = [f"shift check (fold {check['fold']}, {check['n']} images): {'BMCA':>6} {'accuracy':>8}",
             f"  {'clean':<16} {check['clean']['bmca']:>6.3f} {check['clean']['accuracy']:>8.3f}"]
    lines += [f"  {name:<16} {m['bmca']:>6.3f} {m['accuracy']:>8.3f}" for name, m in check["shifts"].items()]
    w = check["worst"]
    lines.append(f"  {'worst':<16} {w['bmca']:>6.3f} {w['accuracy']:>8.3f}  "
                 f"(BMCA: {w['bmca_shift']}, accuracy: {w['accuracy_shift']})")
    return lines


def progress_option(help="Show progress on stderr (-q: none)."):
    """``--progress/--no-progress`` (``-q`` and ``--quiet`` are ``--no-progress``), passed on as ``progress``."""
    return click.option("--progress/--no-progress", " /-q", " /--quiet", "progress", default=True, show_default=True,
                        help=help)


def format_option(formats, help="Output format."):
    return click.option("--format", "fmt", type=click.Choice(formats), default=formats[0], show_default=True,
                        help=help)


def runs_option(command):
    """``--runs DIR``: the folder of run records to read (default $SKINFEAT_RUNS or ./runs)."""
    return click.option("--runs", "runs", type=click.Path(file_okay=False), metavar="DIR",
                        help="The folder of run records to read (default: $SKINFEAT_RUNS, else ./runs).")(command)


def existing_runs(runs):
    """``runs`` (a --runs value) when it is a folder; click.BadParameter saying what to pass otherwise."""
    from pathlib import Path

    if runs is not None and not Path(runs).is_dir():
        raise click.BadParameter(f"{runs} is not a folder; expected the runs folder `skinfeat fit` writes "
                                 "records into (./runs, or $SKINFEAT_RUNS)", param_hint="--runs")
    return runs
