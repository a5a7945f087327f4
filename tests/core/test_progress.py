"""Progress: bars on a terminal, plain periodic lines on a log or a pipe (none for short work), off with TQDM_DISABLE."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from model_factory import ham_subset, write_ham_folder


@pytest.fixture(scope="module")
def data(ham10000, tmp_path_factory):
    return write_ham_folder(tmp_path_factory.mktemp("progress") / "data", ham10000,
                            ham_subset(ham10000, per_class=2).image_ids)


def _check(data, env, terminal):
    """stderr of `skinfeat data check` on a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "skinfeat", "data", "check", "--data", str(data)]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        return done.returncode, done.stderr
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a window 100 columns wide
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    return process.wait(), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("terminal, disable, drawn", [(True, None, True), (True, "1", False), (False, None, False)])
def test_bars_only_on_a_terminal_and_tqdm_disable_is_honoured(data, terminal, disable, drawn):
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    if disable:
        env["TQDM_DISABLE"] = disable
    code, stderr = _check(data, env, terminal)
    assert code == 0, stderr
    assert ("checking images" in stderr) == drawn, stderr
    assert "\r" not in stderr or drawn


def test_a_log_or_pipe_gets_a_plain_line_now_and_then_and_none_for_short_work():
    """On a non-terminal: nothing for work shorter than the interval, else a line per
    interval (desc, counts, percentage, rate; the postfix) and one at the end."""
    import io
    import time

    from skinfeat.core.progress import Lines

    quick = io.StringIO()
    with Lines(total=10, desc="extract", unit="img", stream=quick, interval=60) as shown:
        shown.update(10)
    assert quick.getvalue() == ""
    slow = io.StringIO()
    shown = Lines(range(6), total=6, desc="evaluate", unit="img", stream=slow, interval=0.05)
    for i in shown:
        shown.set_postfix(loss="0.5")
        time.sleep(0.03)
    lines = slow.getvalue().splitlines()
    assert 2 <= len(lines) <= 5, lines
    assert lines[-1].startswith("evaluate: 6/6 img (100%), ") and lines[-1].endswith(" s elapsed, loss 0.5")
    assert "\r" not in slow.getvalue()
