"""The seven lesion classes in the fixed ISIC 2018 Task 3 order."""

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

_INDEX = {name.lower(): i for i, name in enumerate(CLASSES)}


def class_index(label):
    """Index of ``label`` (``mel``, ``MEL``, ``Mel`` ...) in CLASSES, or None."""
    return _INDEX.get(str(label).strip().lower())
