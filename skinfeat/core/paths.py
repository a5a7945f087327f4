"""Where skinfeat keeps things: its configs (shipped inside the package), caches."""

import os
from pathlib import Path

PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # installed with the package
CONFIGS_DIR = Path(os.environ.get("SKINFEAT_CONFIGS", PACKAGE_CONFIGS))


def skinfeat_home():
    """Root of skinfeat's caches (built modules): $SKINFEAT_HOME or ~/.cache/skinfeat."""
    env = os.environ.get("SKINFEAT_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skinfeat"


def features_dir():
    """Default feature cache: $SKINFEAT_FEATURES or ./features."""
    return Path(os.environ.get("SKINFEAT_FEATURES", "features"))


def runs_dir():
    """Where fit records (one JSON per run) go: $SKINFEAT_RUNS or ./runs."""
    return Path(os.environ.get("SKINFEAT_RUNS", "runs"))
