"""The seven lesion classes in the fixed ISIC 2018 Task 3 order."""

import re

CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

FULL_NAMES = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis / intraepithelial carcinoma",
    "BKL": "benign keratosis-like lesion",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}

UNLABELLED = -1

# Other spellings users' class folders have (normalised by ``_normal``: lower case,
# punctuation and underscores as spaces); the codes and FULL_NAMES are added below.
SPELLINGS = {
    "MEL": ("melanoma", "melanomas", "malignant melanoma"),
    "NV": ("nevus", "nevi", "naevus", "naevi", "melanocytic nevus", "melanocytic nevi", "melanocytic naevus",
           "melanocytic naevi", "nevus melanocytic"),
    "BCC": ("basal cell carcinoma", "basal cell carcinomas", "basal cell"),
    "AKIEC": ("ak", "actinic keratosis", "actinic keratoses", "solar keratosis", "solar keratoses",
              "intraepithelial carcinoma", "actinic keratoses and intraepithelial carcinoma",
              "actinic keratosis intraepithelial carcinoma", "bowen", "bowens disease", "bowen s disease"),
    "BKL": ("benign keratosis", "benign keratoses", "benign keratosis like lesion", "benign keratosis like lesions",
            "seborrheic keratosis", "seborrheic keratoses", "seborrhoeic keratosis", "seborrhoeic keratoses"),
    "DF": ("dermatofibroma", "dermatofibromas"),
    "VASC": ("vascular", "vascular lesion", "vascular lesions"),
}


def _normal(label):
    """``label`` in lower case, a leading number (``0_``, ``3. ``) dropped, every run of
    other characters than letters and digits one space."""
    return re.sub(r"^\d+(?=[^a-z0-9])|[^a-z0-9]+", " ", str(label).strip().lower()).strip()


_INDEX = {name.lower(): i for i, name in enumerate(CLASSES)}
_SPELLED = {_normal(name): CLASSES.index(code)
            for code in CLASSES for name in (code, FULL_NAMES[code], *SPELLINGS[code])}


def class_index(label):
    """Index of ``label`` (``mel``, ``MEL``, ``Mel`` ...) in CLASSES, or None: a labels
    CSV holds the codes, and anything else there is more likely a wrong column."""
    return _INDEX.get(str(label).strip().lower())


def folder_class(name):
    """Index in CLASSES of a class folder's ``name``: a code in any case (``mel``), a full
    name or a common spelling (``melanoma``, ``Melanocytic_nevi``, ``2-basal-cell-carcinoma``);
    None otherwise."""
    return _SPELLED.get(_normal(name))
