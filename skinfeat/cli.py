"""The ``skinfeat`` command line. Commands only parse options, call the library
and format its answer; each concern's commands live in ``skinfeat.commands``.
"""

import os
import sys

import click

from skinfeat import __version__
from skinfeat.core.errors import SkinfeatError, UsageError


class SkinfeatGroup(click.Group):
    """A click group that shows skinfeat's expected errors as one line, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx=ctx) from None
        except SkinfeatError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `skinfeat predict ... | head -1`: the reader has what it wanted
            _silence_stdout()
            ctx.exit(0)


def _silence_stdout():
    """Point stdout at /dev/null, so that the flush at exit does not fail on a closed pipe
    (Python's advice for SIGPIPE: https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.group(cls=SkinfeatGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skinfeat")
def cli():
    """Find the pretrained backbone and light head that classify dermoscopic
    skin-lesion images (HAM10000 / ISIC 2018: MEL, NV, BCC, AKIEC, BKL, DF, VASC) best.

    \b
    Typical session:
      skinfeat data check --data ../shared/data/ham10000
      skinfeat data split --data ../shared/data/ham10000 --folds 5 --out folds.csv
      skinfeat extract --data ../shared/data/ham10000          # built-in backbone, offline
      skinfeat fit --head logreg --features features/<file>.h5 --folds folds.csv
      skinfeat compare
    """


def _register():
    from skinfeat.commands import (
        compare,
        data,
        ensemble,
        evaluate,
        explain,
        extract,
        finetune,
        fit,
        modules,
        predict,
        report,
        serve,
        viz,
    )

    cli.add_command(data.data)
    cli.add_command(modules.modules)
    cli.add_command(extract.extract)
    cli.add_command(fit.fit)
    cli.add_command(finetune.finetune)
    cli.add_command(compare.compare)
    cli.add_command(ensemble.ensemble)
    cli.add_command(evaluate.evaluate)
    cli.add_command(viz.viz)
    cli.add_command(predict.predict)
    cli.add_command(predict.export)
    cli.add_command(explain.explain)
    cli.add_command(report.report)
    cli.add_command(serve.serve)


_register()


def main():
    try:
        cli(prog_name="skinfeat")
    finally:  # output still buffered when the reader closed the pipe: exit quietly, as when it was written
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
