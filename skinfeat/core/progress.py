"""Progress bars on stderr, one rule for every command: a tqdm bar when the user wants
one (no ``--no-progress``), tqdm's own ``TQDM_DISABLE`` is not set, and stderr is a
terminal. A log file or a pipe gets no bar (its carriage-return redraws would be one
endless line); the commands' summary lines say what was done."""

import os
import sys

OFF = ("1", "true", "yes", "on")


def wanted(progress=True):
    """Whether a bar is drawn (see the module's rule)."""
    if not progress or os.environ.get("TQDM_DISABLE", "").strip().lower() in OFF:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(iterable=None, progress=True, **kwargs):
    """A tqdm bar on stderr (``kwargs``: tqdm's, e.g. ``total``, ``unit``, ``desc``), disabled
    unless :func:`wanted`."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not wanted(progress), file=sys.stderr, **kwargs)
