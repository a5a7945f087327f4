"""How long building a manifest takes for N images (default 100,000), per layout,
and how long make_folds takes on it. Building never opens pixels, so the image
files here are empty; prints one line of seconds per step.

    .venv/bin/python benchmarks/bench_manifest.py [--rows 100000]
"""

import argparse
import csv
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 (puts the repository on sys.path: skinfeat)

from skinfeat.core.classes import CLASSES
from skinfeat.data.layouts import load_dataset
from skinfeat.data.split import make_folds


def write_dataset(root, n):
    """``root/ham``: HAM10000 labels and ``n`` images over two part folders (3 images per
    lesion at most); ``root/isic``: the same labels as ISIC 2018 one-hot and groupings."""
    parts = [root / "ham" / "HAM10000_images_part_1", root / "ham" / "HAM10000_images_part_2"]
    for part in parts:
        part.mkdir(parents=True)
    rows = [(f"HAM_{i // 3:07d}", f"ISIC_{i:07d}", CLASSES[(i // 3) % len(CLASSES)].lower()) for i in range(n)]
    for i, (_, image, _) in enumerate(rows):
        (parts[i % 2] / f"{image}.jpg").touch()
    with open(root / "ham" / "HAM10000_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
        writer.writerows((lesion, image, dx, "histo", "45.0", "male", "back") for lesion, image, dx in rows)
    truth = root / "isic"
    truth.mkdir()
    with open(truth / "GroundTruth.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *CLASSES])
        writer.writerows([image, *("1.0" if c.lower() == dx else "0.0" for c in CLASSES)] for _, image, dx in rows)
    with open(truth / "LesionGroupings.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "lesion_id"), *((image, lesion) for lesion, image, _ in rows)])


def timed(label, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label}: {time.perf_counter() - start:.2f} s")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    n = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed(f"write {n:,} empty images and labels (setup)", lambda: write_dataset(root, n))
        ham = timed(f"load_dataset ham10000, {n:,} rows", lambda: load_dataset(data=root / "ham"))
        isic = timed(f"load_dataset isic2018, {n:,} rows",
                     lambda: load_dataset(images=root / "ham", labels=root / "isic" / "GroundTruth.csv"))
        assert len(ham) == len(isic) == n and not ham.problems and not isic.problems
        timed(f"make_folds k=5, {len(set(ham.lesion_ids)):,} lesions", lambda: make_folds(ham, k=5))


if __name__ == "__main__":
    main()
