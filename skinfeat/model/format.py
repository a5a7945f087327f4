"""The model directory's format: file names, format version, the manifest
(``model.json``, read and written atomically), file hashes and the one
fingerprint check. See ``skinfeat.model`` for the layout."""

import hashlib
import json
from pathlib import Path

from skinfeat.atomic import write_atomically
from skinfeat.errors import ModelError

FORMAT = "skinfeat-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
STATE = "state.npz"
TFLITE = "backbone.tflite"
BACKBONE_KEYS = ("module", "module_source", "module_fingerprint", "module_info", "input_size",
                 "resize", "feature_dim", "views", "dtype", "augment")
REFIT = "re-fit with `skinfeat fit --out`"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory):
    """The decoded model.json of ``directory``, with every file it lists present;
    ModelError saying what is wrong otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist; expected a folder written by "
                         "`skinfeat fit --out DIR`")
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelError(f"{directory} holds no {MANIFEST}; expected a model directory written by "
                         "`skinfeat fit --out DIR`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); {REFIT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(f"{path} is not a skinfeat model (format={got!r}, expected {FORMAT!r}); {REFIT}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path} has model format version {manifest.get('format_version')}, this "
                         f"skinfeat reads version {FORMAT_VERSION}; {REFIT}")
    missing = [name for name in manifest.get("files", []) if not (directory / name).is_file()]
    if missing:
        raise ModelError(f"model {directory} is incomplete or damaged: it is missing {', '.join(missing)} "
                         f"(listed in its {MANIFEST}); copy the whole directory, or re-fit with "
                         f"`skinfeat fit --out {directory}`")
    return manifest


def write_manifest(directory, manifest):
    """Write ``manifest`` as ``directory``/model.json, atomically."""
    from skinfeat.records import json_safe

    text = json.dumps(json_safe(manifest), indent=1)
    write_atomically(Path(directory) / MANIFEST, lambda f: f.write(text))


def check_fingerprint(directory, manifest, fingerprint, subject, fix):
    """ModelError unless ``fingerprint`` (of ``subject``: the backbone as it is now,
    or a file made from it) is the one the model's features were extracted with."""
    saved = (manifest.get("backbone") or {}).get("module_fingerprint")
    if fingerprint != saved:
        raise ModelError(f"model {directory}: {subject} has fingerprint {str(fingerprint)[:12]}, but the model "
                         f"was fitted on features of fingerprint {str(saved)[:12]}: the backbone changed since "
                         f"the model was fitted; {fix}")


def resize_policy(directory, block):
    """The resize policy recorded in a backbone or export ``block``; never a default."""
    policy = (block or {}).get("resize")
    if not policy:
        raise ModelError(f"model {directory} does not record the resize policy its features were extracted "
                         "with (backbone.resize in model.json), so images cannot be prepared as they were; "
                         "re-extract with `skinfeat extract`, then re-fit with `skinfeat fit --out`")
    return policy
