"""The dataset layer: manifests of the layouts users have, checks, and folds.

    from skinfeat.data import load_dataset, make_folds, write_folds, read_folds
    m = load_dataset(data="../shared/data/ham10000")
    write_folds("folds.csv", m, make_folds(m, k=5, seed=0))
"""

from skinfeat.data.check import check_dataset, check_images, summarize
from skinfeat.data.layouts import IMAGE_EXTENSIONS, find_images, load_dataset
from skinfeat.data.manifest import LAYOUTS, Manifest, Problem
from skinfeat.data.split import fold_balance, leaking_lesions, make_folds, read_folds, write_folds

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "Manifest",
    "Problem",
    "check_dataset",
    "check_images",
    "find_images",
    "fold_balance",
    "leaking_lesions",
    "load_dataset",
    "make_folds",
    "read_folds",
    "summarize",
    "write_folds",
]
