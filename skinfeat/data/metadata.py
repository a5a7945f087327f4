"""Patient metadata as head inputs: ``fit --metadata age,sex,localization``.

An encoding is learnt from the training images' values and saved with the
model, so prediction encodes new images the same way:

- ``age``: (age - mean) / std of the known training ages, and a missing
  indicator (an empty value, ``unknown``, ``nan``);
- ``sex`` and ``localization``: one-hot over the training categories (lower
  case; ``unknown`` or empty is missing, not a category), and a missing indicator.
  A category the training images never had (another clinic's body site) is
  encoded as missing and counted, never a crash.

Values come from the features file (``skinfeat extract`` stores the dataset's
metadata columns) when fitting, and from ``--metadata CSV`` (the HAM10000
layout: image_id, age, sex, localization; or the ISIC 2019 one: image,
age_approx, sex, anatom_site_general) or a dataset's own metadata when
predicting and evaluating.
"""

import math

import numpy as np

from skinfeat.core.errors import DataError, UsageError
from skinfeat.data.csvfile import read_table

COLUMNS = ("age", "sex", "localization")
CATEGORICAL = ("sex", "localization")
MISSING = ("", "unknown", "nan", "none", "na", "n/a")
# CSV headers of other layouts -> skinfeat's column names
ALIASES = {"image": "image_id", "isic_id": "image_id", "age_approx": "age", "anatom_site_general": "localization",
           "anatom_site_general_challenge": "localization", "site": "localization"}
# ISIC 2019/2020 body sites -> the HAM10000 sites they are (the others stay unknown to a HAM-trained model)
ISIC_SITES = {"posterior torso": "back", "anterior torso": "trunk", "lateral torso": "trunk",
              "torso": "trunk", "upper extremity": "upper extremity", "lower extremity": "lower extremity",
              "palms/soles": "acral", "oral/genital": "genital"}


def parse_columns(text):
    """``age,sex,localization`` -> a tuple of known columns; UsageError otherwise."""
    columns = tuple(c.strip().lower() for c in str(text).split(",") if c.strip())
    unknown = [c for c in columns if c not in COLUMNS]
    if not columns or unknown:
        raise UsageError(f"--metadata {text!r}: {'unknown column ' + ', '.join(map(repr, unknown)) if unknown else 'no column'}; "
                         f"expected a comma-separated subset of {','.join(COLUMNS)}")
    if len(set(columns)) < len(columns):
        raise UsageError(f"--metadata {text!r} names a column twice; expected each of {','.join(COLUMNS)} at most once")
    return columns


def _clean(value):
    text = str(value).strip().lower()
    return "" if text in MISSING else ISIC_SITES.get(text, text)


def _age(value, where):
    text = _clean(value)
    if not text:
        return math.nan
    try:
        age = float(text)
    except ValueError:
        raise DataError(f"{where}: age {value!r} is not a number; expected an age in years, or empty "
                        "when unknown") from None
    if not 0 <= age <= 130:
        raise DataError(f"{where}: age {value!r} is outside 0-130; expected an age in years, or empty when unknown")
    return age


def fit_encoding(metadata, columns, where="the features file"):
    """The encoding (a JSON-able dict) of ``columns`` learnt from ``metadata``
    ({column: values per training image}). DataError when a column is missing or
    has no known value."""
    absent = [c for c in columns if c not in metadata]
    if absent:
        have = ", ".join(sorted(metadata)) or "none"
        raise DataError(f"{where} has no {', '.join(absent)} metadata (it has: {have}); expected the columns "
                        "of HAM10000_metadata.csv: extract from a dataset with metadata, or leave them out "
                        "of --metadata")
    encoding = {"columns": list(columns)}
    for column in columns:
        values = metadata[column]
        if column == "age":
            ages = np.array([_age(v, f"{where}, image {i}") for i, v in enumerate(values)])
            known = ages[np.isfinite(ages)]
            if not len(known):
                raise DataError(f"{where}: no image has a known age; leave age out of --metadata")
            encoding["age"] = {"mean": float(known.mean()), "std": float(known.std() or 1.0)}
        else:
            categories = sorted({_clean(v) for v in values} - {""})
            if not categories:
                raise DataError(f"{where}: no image has a known {column}; leave it out of --metadata")
            encoding[column] = {"categories": categories}
    return encoding


def names(encoding):
    """The name of every encoded column, in order."""
    out = []
    for column in encoding["columns"]:
        if column == "age":
            out.append("age")
        else:
            out += [f"{column}={c}" for c in encoding[column]["categories"]]
        out.append(f"{column} missing")
    return out


def width(encoding):
    return len(names(encoding))


def encode(encoding, metadata, n, where="the metadata"):
    """[n, width] float32 of ``metadata`` ({column: n values}; a column absent is
    missing for every image) and ``{column: number of unknown categories}``."""
    parts, unknown = [], {}
    for column in encoding["columns"]:
        values = metadata.get(column, [""] * n)
        if column == "age":
            spec = encoding["age"]
            ages = np.array([_age(v, f"{where}, image {i}") for i, v in enumerate(values)])
            missing = ~np.isfinite(ages)
            parts.append(np.where(missing, 0.0, (ages - spec["mean"]) / spec["std"])[:, None])
        else:
            categories = encoding[column]["categories"]
            index = {c: i for i, c in enumerate(categories)}
            cleaned = [_clean(v) for v in values]
            hot = np.zeros((n, len(categories)))
            for row, value in enumerate(cleaned):
                if value in index:
                    hot[row, index[value]] = 1.0
            missing = ~hot.any(axis=1)
            unknown[column] = sum(1 for v in cleaned if v and v not in index)
            parts.append(hot)
        parts.append(missing[:, None].astype(float))
    return np.concatenate(parts, axis=1).astype(np.float32), unknown


def beside_views(feats, encoded):
    """Features [n, V, D] with the encoded metadata [n, m] after each view's: [n, V, D + m]
    (the image's metadata is the same in every view and under every shift)."""
    return np.concatenate([feats, np.repeat(np.asarray(encoded, feats.dtype)[:, None], feats.shape[1], axis=1)], axis=2)


def check_encoding(encoding):
    """Why a saved encoding is not one ``fit_encoding`` writes, or None."""
    if not isinstance(encoding, dict) or not isinstance(encoding.get("columns"), list):
        return "it has no list of columns"
    for column in encoding["columns"]:
        spec = encoding.get(column)
        if column not in COLUMNS or not isinstance(spec, dict):
            return f"column {column!r} is not one of {', '.join(COLUMNS)} with its encoding"
        if column == "age" and not all(isinstance(spec.get(k), (int, float)) and math.isfinite(spec[k])
                                       for k in ("mean", "std")):
            return "age has no finite mean and std"
        if column != "age" and not (isinstance(spec.get("categories"), list)
                                    and all(isinstance(c, str) for c in spec["categories"])):
            return f"{column} has no list of categories"
    return None


# ----------------------------------------------------------------------------- a metadata CSV

def read_metadata_csv(path):
    """``{image id: {column: value}}`` of a metadata CSV in the HAM10000 or ISIC layout."""

    table = read_table(path)
    canonical = {ALIASES.get(c.lower(), c.lower()): c for c in table.columns}
    if "image_id" not in canonical:
        raise DataError(f"metadata file {path} has no image column (header: {', '.join(table.columns)}); "
                        "expected HAM10000_metadata.csv's image_id or the ISIC metadata's image")
    present = [c for c in COLUMNS if c in canonical]
    if not present:
        raise DataError(f"metadata file {path} has none of the columns {', '.join(COLUMNS)} (header: "
                        f"{', '.join(table.columns)}); expected HAM10000_metadata.csv or an ISIC metadata CSV")
    out = {}
    for _, row in table.rows:
        image_id = row[canonical["image_id"]]
        if image_id.lower().endswith((".jpg", ".jpeg", ".png")):
            image_id = image_id.rsplit(".", 1)[0]
        if image_id:
            out[image_id] = {c: row[canonical[c]] for c in present}
    return out


def lookup(table, image_ids):
    """({column: values} for ``image_ids`` from a ``read_metadata_csv`` table, the
    ids with no row in it)."""
    columns = sorted({c for values in table.values() for c in values})
    found = {c: [(table.get(i) or {}).get(c, "") for i in image_ids] for c in columns}
    return found, [i for i in image_ids if i not in table]
