"""TensorFlow is imported without the start-up lines its C++ runtime writes before
TF_CPP_MIN_LOG_LEVEL is read, and nothing else written meanwhile is lost."""

import os
import subprocess
import sys

from skinfeat.core.tf_runtime import _is_startup_noise, stderr_without

SCRIPT = """
import sys
from skinfeat.core.tf_runtime import tensorflow
tf = tensorflow()
print("after import", file=sys.stderr)
print(tf.constant(2) * 3)
"""


def _run(level):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level}
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)


def test_tensorflow_import_is_quiet_unless_info_logs_are_asked_for():
    quiet = _run("3")
    assert "tf.Tensor(6" in quiet.stdout
    assert quiet.stderr.splitlines() == ["after import"], quiet.stderr
    # The same import with info logs on shows what is being dropped (and that it exists).
    loud = _run("0")
    assert any(_is_startup_noise(line) for line in loud.stderr.splitlines()), loud.stderr


def test_only_startup_noise_is_dropped_from_captured_stderr(capfd):
    with stderr_without(_is_startup_noise):
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"E0000 something real went wrong\n")
        os.write(2, b"UserWarning: a Python warning\n")
    assert capfd.readouterr().err.splitlines() == ["E0000 something real went wrong", "UserWarning: a Python warning"]
