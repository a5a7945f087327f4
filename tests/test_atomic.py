"""skinfeat.atomic: the one way files are written, and how a package install finds its data."""

import os
import stat

import numpy as np
import pytest

from skinfeat.atomic import atomic_path, write_atomically


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


def test_the_catalog_and_the_default_weights_come_with_the_package():
    import configparser
    from pathlib import Path

    from skinfeat import paths
    from skinfeat.backbones.catalog import load_catalog

    assert paths.PACKAGE_CONFIGS.parent == Path(paths.__file__).resolve().parent
    assert (paths.PACKAGE_CONFIGS / "backbones.toml").is_file()
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert setup["options.package_data"]["skinfeat"].strip() == "configs/*.toml"
    default = load_catalog().get("efficientnet-lite0").weights.partition(":")[0]
    requires = setup["options"]["install_requires"].replace("-", "_")
    assert default in requires, f"the default backbone's weights ({default}) must be a dependency"
