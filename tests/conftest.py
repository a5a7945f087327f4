"""Shared fixtures. Every test runs with skinfeat's caches in temporary
directories (set through environment variables, as a user would), so nothing
touches ~/.cache or ./features."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HAM10000 = SHARED / "data" / "ham10000"


@pytest.fixture(scope="session")
def skinfeat_home(tmp_path_factory):
    """One module cache per test session, so real backbones are built once."""
    home = tmp_path_factory.mktemp("skinfeat_home")
    return home


@pytest.fixture(autouse=True)
def _isolated_caches(skinfeat_home, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINFEAT_HOME", str(skinfeat_home))
    monkeypatch.setenv("SKINFEAT_FEATURES", str(tmp_path / "features"))
    monkeypatch.setenv("SKINFEAT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def ham10000():
    """The real HAM10000 set in ../shared (required: the suite reads real data)."""
    if not (HAM10000 / "HAM10000_metadata.csv").exists():
        raise FileNotFoundError(f"expected the HAM10000 set at {HAM10000}; clone the repo beside ../shared")
    return HAM10000
