"""The backbone catalog: ``skinfeat/configs/backbones.toml`` read into ``Entry`` records."""

import difflib
import functools
import importlib.util
import tomllib
from dataclasses import dataclass
from pathlib import Path

from skinfeat.core import paths
from skinfeat.core.errors import ModuleError

CATALOG_FILE = "backbones.toml"
_FIELDS = {"builder", "weights", "handle", "source", "input_size", "value_range",
           "preprocessing", "feature_dim", "pretraining", "license", "pooling", "colour"}


@dataclass(frozen=True)
class Entry:
    name: str
    source: str
    input_size: tuple | None
    feature_dim: int
    value_range: tuple = (0.0, 1.0)
    preprocessing: str = "inside the module"
    pretraining: str = "unknown"
    license: str = "unknown"
    builder: str | None = None   # built-in: converted offline by skinfeat.backbones.<builder>
    weights: str | None = None   # built-in: "<package>:<file inside it>"
    handle: str | None = None    # or a TF-Hub / Kaggle handle
    pooling: str | None = None   # built-in: which layers the feature vector pools (builder's choice)
    colour: str | None = None    # built-in: colour normalisation inside the module (builder's choice)

    def builder_options(self):
        """Keyword arguments of the builder beyond the weights (only those set)."""
        return {k: v for k, v in (("pooling", self.pooling), ("colour", self.colour)) if v}

    @property
    def builtin(self):
        return self.builder is not None

    def weights_path(self):
        """The local weights file of a built-in entry (raises if its package is missing)."""
        package, _, relative = self.weights.partition(":")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleError(
                f"backbone {self.name!r} needs the Python package {package!r} ({self.source}); "
                "install it (scripts/bootstrap.sh does) and retry")
        path = Path(list(spec.submodule_search_locations)[0]) / relative
        if not path.is_file():
            raise ModuleError(f"backbone {self.name!r}: weights file {path} is missing; reinstall {package!r}")
        return path

    def describe(self):
        return {"name": self.name, "source": self.source, "handle": self.handle,
                "input_size": list(self.input_size) if self.input_size else None,
                "value_range": list(self.value_range), "feature_dim": self.feature_dim,
                "preprocessing": self.preprocessing, "pretraining": self.pretraining,
                "license": self.license, **self.builder_options()}


@dataclass(frozen=True)
class Catalog:
    entries: dict

    def get(self, name):
        """The entry called ``name``; a ModuleError listing close matches otherwise."""
        if name in self.entries:
            return self.entries[name]
        raise self.unknown(name)

    def unknown(self, name):
        """The error for a name that is none of the things ``--module`` accepts."""
        close = difflib.get_close_matches(name, list(self.entries), n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return ModuleError(
            f"unknown backbone {name!r}: not a catalog name, a TF-Hub/Kaggle handle (https://...), "
            f"a SavedModel directory or a .tar.gz.{hint} `skinfeat modules list` shows the catalog.")

    def builtins(self):
        return [e for e in self.entries.values() if e.builtin]


def _entry(name, table, where):
    unknown = set(table) - _FIELDS
    if unknown:
        raise ModuleError(f"{where}: backbone {name!r} has unknown fields {sorted(unknown)}")
    if bool(table.get("builder")) == bool(table.get("handle")):
        raise ModuleError(f"{where}: backbone {name!r} needs exactly one of 'builder' or 'handle'")
    if table.get("builder") and not table.get("weights"):
        raise ModuleError(f"{where}: built-in backbone {name!r} needs 'weights'")
    try:
        fields = dict(table)
        fields["input_size"] = tuple(fields["input_size"]) if fields.get("input_size") else None
        fields["value_range"] = tuple(fields.get("value_range", (0.0, 1.0)))
        return Entry(name=name, **fields)
    except TypeError as exc:
        raise ModuleError(f"{where}: backbone {name!r}: {exc}") from None


@functools.lru_cache(maxsize=4)
def _load(path):
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ModuleError(f"backbone catalog {path} not found (set SKINFEAT_CONFIGS?)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModuleError(f"backbone catalog {path} is not valid TOML: {exc}") from None
    return Catalog({name: _entry(name, table, path) for name, table in data.get("backbones", {}).items()})


def load_catalog():
    """The catalog in ``$SKINFEAT_CONFIGS/backbones.toml`` (default: ``skinfeat/configs/``, installed with the package)."""
    return _load(str(paths.CONFIGS_DIR / CATALOG_FILE))
