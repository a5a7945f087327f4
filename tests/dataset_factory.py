"""Tiny datasets written at test time with PIL: every image gets its own colour,
so no two files are byte-identical unless a test makes them so."""

import csv
import itertools
from pathlib import Path

from PIL import Image

_colours = itertools.count(1)


def write_image(path, colour=None, size=(10, 8)):
    """A small solid-colour image (skinfeat.imaging.images.MIN_SIDE is 8); the format follows the suffix (.jpg, .png ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = next(_colours) if colour is None else colour
    rgb = colour if isinstance(colour, tuple) else ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)
    Image.new("RGB", size, rgb).save(path)
    return path


def write_csv(path, header, rows, delimiter=",", bom=False):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


HAM_HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


def make_ham(root, rows, folders=("images",), header=HAM_HEADER, images=True, **csv_options):
    """A HAM10000 layout: ``rows`` of (lesion_id, image_id, dx) with made-up metadata;
    images spread over ``folders`` in turn (set ``images=False`` to write none)."""
    root = Path(root)
    full = [(lesion, image, dx, "histo", "50.0", "female", "back") for lesion, image, dx in rows]
    write_csv(root / "HAM10000_metadata.csv", header, full, **csv_options)
    if images:
        for i, (_, image, _) in enumerate(rows):
            write_image(root / folders[i % len(folders)] / f"{image}.jpg")
    return root


def one_hot(label):
    from skinfeat.core.classes import CLASSES

    return ["1.0" if c == label else "0.0" for c in CLASSES]


def make_isic(root, rows, groupings=None):
    """An ISIC 2018 Task 3 layout: ``rows`` of (image, class name), images in the
    input folder; ``groupings`` ({image: lesion}) written next to the ground truth."""
    from skinfeat.core.classes import CLASSES

    root = Path(root)
    write_csv(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
              ["image", *CLASSES], [[image, *one_hot(label)] for image, label in rows])
    for image, _ in rows:
        write_image(root / "ISIC2018_Task3_Training_Input" / f"{image}.jpg")
    if groupings is not None:
        write_csv(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_LesionGroupings.csv",
                  ["image", "lesion_id", "diagnosis_confirm_type"],
                  [[image, lesion, "histopathology"] for image, lesion in groupings.items()])
    return root


def make_class_folders(root, counts, suffix=".png"):
    """``counts`` {folder name: number of images}; ids are ``<folder>_<i>``."""
    root = Path(root)
    for folder, n in counts.items():
        for i in range(n):
            write_image(root / folder / f"{folder}_{i}{suffix}")
    return root


def four_classes_rows(n_lesions=40):
    """(lesion, image, dx) rows: lesions with 1-3 images each over four classes."""
    rows, image = [], 0
    for lesion in range(n_lesions):
        dx = ("nv", "mel", "bkl", "bcc")[lesion % 4]
        for _ in range(1 + lesion % 3):
            rows.append((f"HAM_{lesion:07d}", f"ISIC_{image:07d}", dx))
            image += 1
    return rows
