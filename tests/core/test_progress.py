"""Progress bars: drawn on a terminal, never into a log or a pipe, off with TQDM_DISABLE."""

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
