"""Progress on stderr, one rule for every command, unless the user says no
(``--no-progress`` / ``-q``, or tqdm's own ``TQDM_DISABLE``): a tqdm bar when stderr
is a terminal; on a log file or a pipe (where a bar's carriage-return redraws would
be one endless line) a plain line every LOG_INTERVAL seconds of work, so a long run
is never silent, and none for work shorter than that."""

import os
import sys
import time

LOG_INTERVAL = 30.0  # seconds between progress lines on a log or pipe

OFF = ("1", "true", "yes", "on")


def asked(progress=True):
    """Whether the user wants progress at all (see the module's rule)."""
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").strip().lower() not in OFF


def wanted(progress=True):
    """Whether a bar is drawn: progress asked for and stderr a terminal."""
    if not asked(progress):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(iterable=None, progress=True, **kwargs):
    """A tqdm bar on stderr (``kwargs``: tqdm's, e.g. ``total``, ``unit``, ``desc``) when
    :func:`wanted`; periodic lines (``Lines``) when progress is asked for on a log or pipe."""
    if asked(progress) and not wanted(progress):
        return Lines(iterable, **kwargs)
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not wanted(progress), file=sys.stderr, **kwargs)


class Lines:
    """Progress for a log or a pipe, with the parts of tqdm's interface skinfeat uses:
    one line (``desc: done/total unit (p%), rate, elapsed``) every ``interval`` seconds,
    and a last one at the end when any was written."""

    def __init__(self, iterable=None, total=None, initial=0, desc="", unit="it", interval=LOG_INTERVAL,
                 stream=None, **_):
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.interval, self.stream, self.postfix = interval, stream, ""
        self.start = self.last = time.monotonic()
        self.initial, self.written, self.closed = initial, 0, False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, k=1):
        self.n += k
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def set_description(self, desc):
        self.desc = desc

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def refresh(self):
        pass

    def clear(self):
        """Nothing to take back: a log's lines stay (tqdm clears its bar before a log line)."""

    def close(self):
        if not self.closed and self.written:
            self._line(time.monotonic())
        self.closed = True

    def _line(self, now):
        elapsed = now - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.total:
            done = f"{self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done = f"{self.n:,} {self.unit}"
        text = f"{self.desc + ': ' if self.desc else ''}{done}, {rate:.1f} {self.unit}/s, {elapsed:.0f} s elapsed"
        print(text + (f", {self.postfix}" if self.postfix else ""), file=self.stream or sys.stderr, flush=True)
        self.written += 1
