"""What a model saw: the images it was fitted on, kept inside its directory as
``seen.npz`` (image ids, and the first 16 hex digits of each file's sha256 where
the features file has them: ``skinfeat.features.store.CONTENT_HEX``), so that
``evaluate`` can refuse to score a model on its own training images, matched by
id or by file content (a renamed copy), and say how many it left out.

About 0.2 MB for HAM10000's 10,015 images (compressed)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skinfeat.core.errors import ModelError

SEEN = "seen.npz"


def write_seen(directory, image_ids, content=None):
    """Write ``seen.npz`` into ``directory``; returns the manifest's ``training.seen`` block."""
    ids = np.asarray([str(i) for i in image_ids], dtype=str)
    hashes = np.asarray([str(h) for h in content], dtype=str) if content is not None else np.zeros(0, dtype=str)
    np.savez_compressed(Path(directory) / SEEN, image_id=ids, content=hashes)
    return {"file": SEEN, "n_images": len(ids), "by": "image id and file content" if len(hashes) else "image id"}


@dataclass
class Seen:
    """The training images of a model (or of every member of an ensemble)."""

    image_ids: frozenset
    content: frozenset  # empty when the features file kept no content hashes

    def overlap(self, image_ids, content=None):
        """A bool per image: its id, or its content hash (given and known), is among the seen ones."""
        mask = np.fromiter((str(i) in self.image_ids for i in image_ids), bool, len(image_ids))
        if content is not None and self.content:
            mask |= np.fromiter((str(h)[:len(next(iter(self.content)))] in self.content for h in content), bool,
                                len(image_ids))
        return mask

    def __or__(self, other):
        return Seen(self.image_ids | other.image_ids, self.content | other.content)


def read_seen(directory, manifest):
    """The ``Seen`` of a model directory; None for a model saved before skinfeat recorded
    its training images. ModelError when the file is listed but gone or damaged."""
    block = (manifest.get("training") or {}).get("seen")
    if not block:
        return None
    path = Path(directory) / SEEN
    try:
        with np.load(path, allow_pickle=False) as npz:
            ids, content = npz["image_id"], npz["content"]
        if ids.ndim != 1 or content.ndim != 1 or (len(content) and len(content) != len(ids)):
            raise ValueError(f"image_id has shape {ids.shape} and content {content.shape}")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"model {directory}: its {SEEN} (the images it was fitted on) cannot be read ({exc}); "
                         "re-fit the model with `skinfeat fit --out`") from None
    return Seen(frozenset(ids.tolist()), frozenset(content.tolist()))
