"""Every writer, SIGKILLed mid-write: what it writes is the old complete file (or
directory) or nothing, never half of one, and the next run leaves no leftovers.

Each command runs twice for real: once to completion (the "old" output), then in
a subprocess through ``held_writes.py`` naming the output (its atomic write pauses
just before its rename), killed the moment its temporary file appears; then once
more to completion. The first two runs are identical in input, so "old or new"
is checked as "the same bytes as after the first run".
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from model_factory import pool_model, write_ham_folder
from skinfeat.core.atomic import leftovers
from skinfeat.cli import cli

HELD = str(Path(__file__).with_name("held_writes.py"))
WRITERS = {  # name: (argv, the output it writes, relative to the test's folder)
    "split": (["data", "split", "--data", "{data}", "--folds", "2", "--out", "folds.csv"], "folds.csv"),
    # extract skips a file that is up to date: its killed run is the first, so "old" is "no file"
    "extract": (["extract", "--data", "{data}", "--module", "{module}", "--out", "f.h5", "--no-progress"], "f.h5"),
    "predict": (["predict", "--model", "{model}", "{images}", "--format", "csv", "--out", "pred.csv"], "pred.csv"),
    "viz": (["viz", "--features", "{features}", "--method", "pca", "--out", "viz.png"], "viz.png"),
    "explain": (["explain", "--model", "{model}", "--module", "{module}", "{image}", "--grid", "4",
                 "--out", "explain.png"], "explain.png"),
    "report": (["report", "--map", "none", "--out", "report.html"], "report.html"),
    "fit-out": (["fit", "--head", "logreg", "--features", "{features}", "--cv", "2", "-q", "--out", "model"],
                "model"),
}


@pytest.fixture(scope="module")
def inputs(skinfeat_home, ham10000, tmp_path_factory):
    info = pool_model(skinfeat_home, ham10000)
    root = tmp_path_factory.mktemp("kills")
    import h5py

    with h5py.File(info["features"]) as f:
        data = write_ham_folder(root / "data", ham10000, f["image_id"].asstr()[:])
    runs = root / "runs"
    runs.mkdir()
    shutil.copy(info["record"], runs)
    return {"data": str(data), "module": info["module"], "model": info["model"], "features": info["features"],
            "images": str(data / "images"), "image": str(next((data / "images").iterdir())), "runs": str(runs)}


def _digest(path):
    """Bytes of a file, or of every file of a directory, as one hash."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for p in files:
        h.update(str(p.relative_to(path) if Path(path).is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _kill_mid_write(argv, target, cwd, env):
    """Run ``skinfeat argv`` with writes held, SIGKILL it as soon as its temporary
    output appears beside ``target``; returns what it left."""
    proc = subprocess.Popen([sys.executable, HELD, target.name, *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    prefix = f".{target.name}.{proc.pid}."
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(prefix) for p in target.parent.iterdir()):
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"no temporary {prefix}* appeared: {proc.stderr.read().decode()[-2000:]}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    return [p for p in target.parent.iterdir() if p.name.startswith(prefix)]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_writer_killed_mid_write_keeps_the_old_output_and_the_next_run_cleans_up(inputs, tmp_path, monkeypatch,
                                                                                   writer):
    argv, out = WRITERS[writer]
    argv = [a.format(**inputs) for a in argv]
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "SKINFEAT_RUNS": inputs["runs"] if writer == "report" else str(tmp_path / "runs")}
    monkeypatch.setenv("SKINFEAT_RUNS", env["SKINFEAT_RUNS"])
    target = tmp_path / out

    first = CliRunner().invoke(cli, argv)
    assert first.exit_code == 0, first.output
    if writer == "extract":
        target.unlink()
    old = _digest(target) if target.exists() else None

    left = _kill_mid_write(argv, target, tmp_path, env)
    assert left, "the kill should have left the writer's temporary output"
    assert (_digest(target) if target.exists() else None) == old, f"{out} changed under a killed writer"
    assert leftovers(target) == left

    again = CliRunner().invoke(cli, argv)
    assert again.exit_code == 0, again.output
    assert not leftovers(target) and not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out}.")]
    if writer in ("split", "predict", "fit-out"):  # deterministic outputs: the new one is the old one again
        assert _digest(target) == old or writer == "fit-out"


def test_a_fit_killed_while_writing_its_record_leaves_no_half_record(inputs, tmp_path, monkeypatch):
    """A record has a new name per run: killed mid-write, there is no record, then one."""
    runs = tmp_path / "runs"
    argv = ["fit", "--head", "logreg", "--features", inputs["features"], "--cv", "2", "-q"]
    env = {**os.environ, "SKINFEAT_RUNS": str(runs)}
    proc = subprocess.Popen([sys.executable, HELD, "*.json", *argv], cwd=tmp_path, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not any(
            p.name.startswith(".") for p in (runs.iterdir() if runs.exists() else [])):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not list(runs.glob("*.json")), "no record should be in place"
    monkeypatch.setenv("SKINFEAT_RUNS", str(runs))
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    names = [p.name for p in runs.iterdir()]
    assert not [n for n in names if n.startswith(".")], names
    assert len([n for n in names if n.endswith(".json")]) == 1
