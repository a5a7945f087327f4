"""Photos that are not dermoscopy, from what the machine already has: Debian's darknet
photos (``scripts/bootstrap.sh`` unpacks them; ``$SKINFEAT_TEST_PHOTOS``), the sample
images inside the scikit-image wheel (unpacked by the bootstrap too, without
installing scikit-image), scikit-learn's two sample images and matplotlib's
Grace Hopper. The ImageNet checks of converted backbones and the out-of-distribution
benchmark and tests use them.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DARKNET = Path(os.environ.get("SKINFEAT_TEST_PHOTOS", ROOT / ".venv" / "share" / "darknet-photos"))
SKIMAGE = DARKNET.parent / "skimage-photos"
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def _packaged():
    import matplotlib
    import sklearn

    yield from sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        yield hopper


def photo_paths():
    """Every such photo found, in a fixed order: darknet's, scikit-image's, then the packaged ones."""
    found = []
    for folder in (DARKNET, SKIMAGE):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    return found + list(_packaged())


def photo_crops(paths, out, per_photo=4, seed=0):
    """``per_photo`` square crops of each photo (side 30-90 % of its short side, at a
    seeded random place), saved as PNG in ``out``: more, and closer-framed, outside
    images. Returns their paths."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            for i in range(per_photo):
                side = int(min(w, h) * rng.uniform(0.3, 0.9))
                x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                target = out / f"{Path(path).stem}-crop{i}.png"
                image.crop((x, y, x + side, y + side)).resize((224, 224)).save(target)
                made.append(target)
    return made
