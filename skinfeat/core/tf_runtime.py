"""Import TensorFlow and TF-Hub quietly: ``tf = tensorflow()``, ``hub = tensorflow_hub()``;
run a step in a fresh Python process: ``run_fresh(module, args, error)``.

TensorFlow's C++ runtime writes start-up lines to stderr ("oneDNN custom
operations are on", "Could not find cuda drivers", "All log messages before
absl::InitializeLog() ...") before it reads TF_CPP_MIN_LOG_LEVEL, so that
variable cannot stop them. While TensorFlow is first imported, stderr is
captured and written back without those pre-logging lines when
TF_CPP_MIN_LOG_LEVEL asks for no info logs (skinfeat's default, level 3);
everything else (Python warnings, errors) passes through unchanged.
"""

import json
import os
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager

# Lines absl writes before logging is set up: its notice, then info-level records.
_PRE_LOG_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _is_startup_noise(line):
    return line.startswith(_PRE_LOG_NOTICE) or line.startswith("I0000 ")


@contextmanager
def stderr_without(drop):
    """Capture file descriptor 2 (C++ writes too) and replay the lines ``drop`` rejects."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not drop(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _info_logs_off():
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")) >= 1
    except ValueError:
        return False


def tensorflow():
    """The ``tensorflow`` module, imported without its start-up noise."""
    if "tensorflow" in sys.modules or not _info_logs_off():
        import tensorflow as tf

        return tf
    with stderr_without(_is_startup_noise):
        import tensorflow as tf
    return tf


def tensorflow_hub():
    """The ``tensorflow_hub`` module, without TensorFlow's start-up noise or its
    pkg_resources deprecation warning."""
    tensorflow()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub

    return tensorflow_hub


def run_fresh(module, args, error, prefix=""):
    """Run ``python -m module *args`` in a fresh process and return its last stdout
    line, decoded from JSON. A fresh process keeps TensorFlow's import, logs,
    tracing memory and process-wide name counters out of the caller (so a build
    writes the same bytes whatever the caller did before). skinfeat stays
    importable there; TensorFlow's info logs are off unless TF_CPP_MIN_LOG_LEVEL
    says otherwise. On failure raises ``error(prefix + the last stderr line)``."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the folder holding skinfeat/
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise error(prefix + (lines[-1] if lines else f"python -m {module} exited with status {done.returncode}"))
    return json.loads(done.stdout.strip().splitlines()[-1])
