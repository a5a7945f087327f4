"""skinfeat.core.atomic: the one way files are written, and how a package install finds its data."""

import os
import stat

import numpy as np
import pytest

from helpers import REPO
from skinfeat.core.atomic import atomic_dir, atomic_path, leftovers, replace_dir, sweep, write_atomically


def test_a_finished_write_replaces_the_file_with_the_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    assert write_atomically(path, lambda f: f.write("hello\n")) == 6
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "hello\n" and stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(path.parent) == ["a.txt"]


def test_a_failed_or_discarded_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "a.npz"
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, x=np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, x=np.arange(5))
            raise RuntimeError("disk full")
    assert write_atomically(path, lambda f: 0, keep=bool, binary=True) == 0
    assert os.listdir(tmp_path) == ["a.npz"]
    with np.load(path) as npz:
        assert list(npz["x"]) == [0, 1, 2]


def _killed_writer(tmp_path, target, make_dir=False):
    """Start a real process that begins writing ``target`` atomically, SIGKILL it
    mid-write, and return what it left behind."""
    import signal
    import subprocess
    import sys
    import time

    ready = tmp_path / "ready"
    opener = "atomic_dir(sys.argv[1])" if make_dir else "atomic_path(sys.argv[1])"
    code = (f"import sys, time\nfrom skinfeat.core.atomic import atomic_dir, atomic_path\n"
            f"with {opener} as tmp:\n"
            "    (tmp / 'part' if tmp.is_dir() else tmp).write_bytes(b'x' * 1000)\n"
            "    open(sys.argv[2], 'w').close()\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(ready)])
    for _ in range(600):
        if ready.exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ready.unlink()
    return [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]


def test_a_killed_writer_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "features.h5"
    target.write_text("old")
    left = _killed_writer(tmp_path, target)
    assert len(left) == 1 and target.read_text() == "old"
    assert leftovers(target) == left
    write_atomically(target, lambda f: f.write("new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5"] and target.read_text() == "new"


def test_a_killed_directory_writer_is_swept_and_a_live_writers_files_are_kept(tmp_path):
    target = tmp_path / "model"
    left = _killed_writer(tmp_path, target, make_dir=True)
    assert len(left) == 1 and left[0].is_dir() and not target.exists()
    live = tmp_path / f".model.{os.getppid()}.abcdefgh.tmp"  # a running process's (our parent's) temp dir
    live.mkdir()
    other = tmp_path / f".model.5.{2**22 + 2}.abcdefgh.tmp"  # a dead writer of "model.5", not of "model"
    other.write_text("x")
    sweep(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    dead = tmp_path / f".record-2.json.{2**22 + 1}.abcdefgh.tmp"  # beyond pid_max: no such process
    dead.write_text("{")
    sweep(tmp_path, everything=True)  # every dead writer's leftovers, "model.5"'s too
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_replacing_a_directory_keeps_the_old_one_until_the_new_one_is_in(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("killed")
    assert (target / "a").read_text() == "1" and os.listdir(tmp_path) == ["model"]
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert os.listdir(target) == ["b"] and os.listdir(tmp_path) == ["model"]
    new = tmp_path / "new"
    new.mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(IsADirectoryError):
        replace_dir(new, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x" and new.is_dir()


def test_the_catalog_and_the_default_weights_come_with_the_package():
    import configparser
    from pathlib import Path

    from skinfeat.core import paths
    from skinfeat.backbones.catalog import load_catalog

    import skinfeat

    package = Path(skinfeat.__file__).resolve().parent
    assert paths.PACKAGE_CONFIGS.parent == package
    assert (paths.PACKAGE_CONFIGS / "backbones.toml").is_file()
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    patterns = setup["options.package_data"]["skinfeat"].split()
    assert "configs/*.toml" in patterns
    for pattern in patterns:  # the web page's assets too: each pattern ships real files
        assert [p for p in package.glob(pattern) if p.is_file()], f"package_data {pattern} matches no file"
    default = load_catalog().get("efficientnet-lite0").weights.partition(":")[0]
    requires = setup["options"]["install_requires"].replace("-", "_")
    assert default in requires, f"the default backbone's weights ({default}) must be a dependency"
