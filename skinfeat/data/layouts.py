"""Building a :class:`Manifest` from the layouts users arrive with. Only file
names and CSVs are read here, never pixels, so 100,000 images take seconds.

- ``ham10000``: ``HAM10000_metadata.csv`` (lesion_id,image_id,dx,...) plus image
  folders anywhere below (``HAM10000_images_part_1/``, ``_part_2/``, ``images/``).
- ``isic2018``: one-hot ground truth (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC), the
  input folder, and ``*LesionGroupings*.csv`` (image,lesion_id) when present.
- ``class-folders``: one folder per class (``MEL/``, ``nv/`` ...), images below.
- ``unlabelled``: a folder of images.
"""

import os
from pathlib import Path

from skinfeat.core.classes import CLASSES, FULL_NAMES, UNLABELLED, class_index, folder_class
from skinfeat.core.errors import DataError, UsageError
from skinfeat.data.csvfile import close_matches, read_header, read_table, shorten
from skinfeat.data.manifest import METADATA_COLUMNS, Manifest, error, warning
from skinfeat.imaging.images import IMAGE_EXTENSIONS, is_image_name, list_folder, shown, walk_images

CLASS_LIST = ", ".join(CLASSES)
_SHOWN = 5  # ids listed in a message that summarises many images


def find_images(root, problems=None):
    """``{image id: [paths]}`` of the image files under ``root``, recursively, in
    name order, skipping hidden files and ``__MACOSX`` folders; paths are absolute.
    What cannot be used (a FIFO named like an image, an unreadable folder, a link
    loop, a name that is not UTF-8) is left out, a warning in ``problems``."""
    found = {}
    for path in walk_images(os.path.abspath(root), _skipper(problems)):
        found.setdefault(path.stem, []).append(str(path))
    return found


def _skipper(problems):
    """``on_skip`` for skinfeat.imaging.images that records a warning in ``problems`` (None: raise)."""
    if problems is None:
        return None
    return lambda path, exc: problems.append(warning(f"{shown(Path(path).name)} {exc.detail}", shown(path)))


def suggest_class(label):
    """' (did you mean MEL?)' for a label close to a class code or full name, or ''."""
    names = {c.lower(): c for c in CLASSES} | {v.lower(): k for k, v in FULL_NAMES.items()}
    close = close_matches(str(label), list(names))
    return f" (did you mean {names[close[0].lower()]}?)" if close else ""


def image_id_of(value):
    """The id in an image column: ``ISIC_0024306`` also when written ``ISIC_0024306.jpg``."""
    stem, dot, ext = value.rpartition(".")
    return stem if dot and is_image_name(value) else value


def _unique_paths(files, problems, skipped=()):
    """One path per image id; an id found as several files is an error (the first
    is used), unless the id is ``skipped`` anyway."""
    chosen = {}
    for image_id, paths in files.items():
        chosen[image_id] = paths[0]
        if len(paths) > 1 and image_id not in skipped:
            problems.append(error(f"image id {image_id} has {len(paths)} files: {', '.join(paths)}; "
                                  f"using the first: delete or rename the others", paths[1]))
    return chosen


def _assemble(records, files, layout, problems, sources, where_images):
    """A manifest from ``records`` (where, image id, label, lesion id, metadata) and
    the image files found: drops rows without a file, ids listed twice with
    different labels, and notes images that no row mentions."""
    first = {}
    conflicting = set()
    for where, image_id, label, _, _ in records:
        if image_id not in first:
            first[image_id] = (where, label)
        elif first[image_id][1] != label:
            conflicting.add(image_id)
            problems.append(error(f"image {image_id} is listed again with a different label "
                                  f"({_name(first[image_id][1])} at {first[image_id][0]}, {_name(label)} here); "
                                  "both are skipped: keep only the right one", where))
        else:
            problems.append(warning(f"image {image_id} is listed again with the same label "
                                    f"(first at {first[image_id][0]}); the repeat is ignored: delete it", where))
    paths = _unique_paths(files, problems, skipped=conflicting)
    keep, seen = [], set()
    for record in records:
        where, image_id = record[0], record[1]
        if image_id in seen or image_id in conflicting:
            continue
        seen.add(image_id)
        if image_id not in paths:
            problems.append(error(f"image {image_id} has no file under {where_images} "
                                  f"(searched recursively for {image_id}.jpg/.png/...); "
                                  "add the image or delete the row", where))
            continue
        keep.append(record)
    for image_id in sorted(set(paths) - seen):
        problems.append(warning(f"image {image_id} has no row in {sources.get('labels', 'the labels')}; "
                                "it is left out: add a row or move the file elsewhere", paths[image_id]))
    metadata_names = sorted({k for r in keep for k in r[4]}, key=_metadata_order)
    return Manifest(
        image_ids=[r[1] for r in keep],
        paths=[paths[r[1]] for r in keep],
        labels=[r[2] for r in keep],
        lesion_ids=[r[3] or r[1] for r in keep],
        layout=layout,
        metadata={k: [r[4].get(k, "") for r in keep] for k in metadata_names},
        problems=problems,
        sources=sources,
    )


def _labels_table(labels):
    """The labels CSV; a DataError when it has a header but no rows at all."""
    table = read_table(labels)
    if not table.rows and not any(p.level == "error" for p in table.problems):
        raise DataError(f"{labels}: the labels file has a header ({shorten(table.columns)}) but no rows; "
                        "expected one row per image: add the rows, or pass --images DIR alone for unlabelled images")
    return table


def _metadata_order(name):
    return METADATA_COLUMNS.index(name) if name in METADATA_COLUMNS else len(METADATA_COLUMNS)


def _name(label):
    return CLASSES[label] if label >= 0 else "unlabelled"


def read_ham10000(labels, images):
    """The HAM10000 layout: metadata CSV ``labels`` and images anywhere below ``images``."""
    table = _labels_table(labels)
    image_col = table.require("image_id", "the image file name without extension")
    dx_col = table.require("dx", f"the diagnosis, one of {CLASS_LIST}")
    lesion_col = table.column("lesion_id")
    problems = list(table.problems)
    if lesion_col is None:
        close = close_matches("lesion_id", table.columns)
        hint = f"rename '{close[0]}' to 'lesion_id'" if close else "add a lesion_id column"
        problems.append(warning(f"no 'lesion_id' column: each image counts as its own lesion, so folds may put "
                                f"photos of one lesion on both sides; {hint}", f"{labels}:1"))
    meta_cols = {name: table.column(name) for name in METADATA_COLUMNS if table.column(name)}
    records = []
    for line, row in table.rows:
        where = f"{labels}:{line}"
        image_id, dx = image_id_of(row[image_col]), row[dx_col]
        label = class_index(dx)
        if not image_id:
            problems.append(error("empty image_id; row skipped: fill it in or delete the row", where))
        elif label is None:
            problems.append(error(f"label '{dx}' of {image_id} is not one of the seven classes "
                                  f"{CLASS_LIST}{suggest_class(dx)}; row skipped: fix the label", where))
        else:
            lesion = row[lesion_col] if lesion_col else ""
            records.append((where, image_id, label, lesion, {k: row[c] for k, c in meta_cols.items()}))
    sources = {"labels": str(labels), "images": str(images)}
    return _assemble(records, find_images(images, problems), "ham10000", problems, sources, images)


def read_isic2018(labels, images, groupings=None):
    """The ISIC 2018 Task 3 layout: one-hot ``labels``, images below ``images``,
    optional lesion ``groupings`` (image,lesion_id[,diagnosis_confirm_type])."""
    table = _labels_table(labels)
    image_col = table.require("image", "the image file name without extension")
    class_cols = [table.require(name, f"the one-hot column of class {name}") for name in CLASSES]
    problems = list(table.problems)
    lesions, dx_types = _read_groupings(groupings, problems) if groupings else ({}, {})
    if not groupings:
        problems.append(warning("no lesion groupings file (image,lesion_id) next to the ground truth: each image "
                                "counts as its own lesion, so folds may put photos of one lesion on both sides; add "
                                "ISIC2018_Task3_Training_LesionGroupings.csv", labels))
    records = []
    for line, row in table.rows:
        where = f"{labels}:{line}"
        image_id = image_id_of(row[image_col])
        label, complaint = one_hot(row, class_cols)
        if complaint:
            problems.append(error(f"{complaint} for {image_id}; row skipped: mark exactly one class with 1", where))
            continue
        meta = {"dx_type": dx_types[image_id]} if image_id in dx_types else {}
        records.append((where, image_id, label, lesions.get(image_id, ""), meta))
    if groupings:
        ungrouped = [r[1] for r in records if r[1] not in lesions]
        if ungrouped:
            problems.append(warning(f"{len(ungrouped)} images have no row in the groupings file "
                                    f"({', '.join(ungrouped[:_SHOWN])}...); each counts as its own lesion: "
                                    "add their lesion ids", groupings))
    sources = {"labels": str(labels), "images": str(images)} | ({"groupings": str(groupings)} if groupings else {})
    return _assemble(records, find_images(images, problems), "isic2018", problems, sources, images)


_BINARY = {"0": 0.0, "0.0": 0.0, "1": 1.0, "1.0": 1.0}


def one_hot(row, class_cols):
    """``(class index, None)`` for a valid one-hot row, else ``(None, what is wrong)``."""
    try:
        values = [_BINARY[v] if v in _BINARY else float(v or "nan") for v in (row[c] for c in class_cols)]
    except ValueError:
        shown = ",".join(row[c] for c in class_cols)
        return None, f"non-numeric one-hot values ({shown})"
    ones = [i for i, v in enumerate(values) if v == 1.0]
    odd = [CLASSES[i] for i, v in enumerate(values) if v not in (0.0, 1.0)]
    if odd:
        return None, f"one-hot values other than 0 or 1 in {', '.join(odd)}"
    if len(ones) != 1:
        which = ", ".join(CLASSES[i] for i in ones) or "no class"
        return None, f"{len(ones)} ones in the one-hot row ({which})"
    return ones[0], None


def _read_groupings(path, problems):
    table = read_table(path)
    problems.extend(table.problems)
    image_col = table.require("image", "the image id")
    lesion_col = table.require("lesion_id", "the lesion each image shows")
    type_col = table.column("diagnosis_confirm_type") or table.column("dx_type")
    lesions = {image_id_of(row[image_col]): row[lesion_col] for _, row in table.rows}
    dx_types = {image_id_of(row[image_col]): row[type_col] for _, row in table.rows} if type_col else {}
    return lesions, dx_types


NO_GROUPING = ("class folders carry no lesion ids: each image counts as its own lesion, so folds are per image "
               "and may put photos of one lesion on both sides; for grouped folds give a HAM10000 metadata CSV "
               "(lesion_id,image_id,dx) or ISIC ground truth with its lesion groupings")


def read_class_folders(root):
    """One sub-folder per class (``MEL/``, ``nv/``, ``melanoma/`` ...; see
    ``skinfeat.core.classes.folder_class``); images directly under ``root`` are left out. A
    tree of parts with class folders in each (Keras' ``train/``, ``val/``, ``test/``)
    is read as one dataset, with a warning: skinfeat makes its own folds."""
    problems, records, files = [], [], {}
    parts = _split_parts(root)
    for part in parts or [root]:
        _read_classes(part, problems, records, files)
    if parts:
        problems.append(warning(
            f"class folders found in {len(parts)} parts ({', '.join(p.name + '/' for p in parts)}): read as one "
            f"dataset of {len(records)} images, since skinfeat makes its own lesion-grouped folds; pass one part "
            f"as --data ({parts[0]}) to use it alone", root))
    problems.append(warning(NO_GROUPING, root))
    records.sort(key=lambda r: r[1])
    return _assemble(records, files, "class-folders", problems, {"images": str(root)}, root)


def _read_classes(root, problems, records, files):
    for path, is_dir in list_folder(root, _skipper(problems)):
        if not is_dir:
            if is_image_name(path.name):
                problems.append(warning("image outside the class folders is left out: move it into one", path))
            continue
        found = find_images(path, problems)
        label = folder_class(path.name)
        if label is None:
            if found:
                problems.append(error(f"folder '{path.name}' ({len(found)} images) is not one of the seven "
                                      f"classes {CLASS_LIST}{suggest_class(path.name)}; its images are left out: "
                                      "rename the folder", path))
            continue
        for image_id, paths in found.items():
            records.append((paths[0], image_id, label, "", {}))
            files.setdefault(image_id, []).extend(paths)


def read_unlabelled(root):
    """Every image below ``root``, without labels (a warning when they lie in sub-folders
    whose names are no class: misspelt class folders would otherwise pass silently)."""
    problems = []
    found = find_images(root, problems)
    base = Path(os.path.abspath(root))  # find_images's paths are below it, however ``root`` was spelt
    folders = sorted({Path(p).relative_to(base).parts[0] for paths in found.values() for p in paths
                      if len(Path(p).relative_to(base).parts) > 1})
    if len(folders) > 1:
        shown_names = ", ".join(f"{f}/" for f in folders[:6]) + (f" and {len(folders) - 6} more" if len(folders) > 6 else "")
        problems.append(warning(
            f"the images lie in sub-folders ({shown_names}) whose names are none of the seven classes {CLASS_LIST} "
            "or their names (melanoma/, nevus/, ...), and no labels CSV was found: read as unlabelled; rename the "
            "folders to label the images by folder", root))
    paths = _unique_paths(found, problems)
    ids = sorted(paths)
    return Manifest(ids, [paths[i] for i in ids], [UNLABELLED] * len(ids), list(ids), "unlabelled",
                    problems=problems, sources={"images": str(root)})


def csv_kind(path):
    """What a CSV holds, from its header and name: 'ham10000', 'isic2018', 'groupings', or None."""
    columns = set(read_header(path))
    name = Path(path).name.lower()
    if "fold" in columns:
        return None  # a skinfeat folds file
    if sum(c.lower() in columns for c in CLASSES) >= 4:
        return "isic2018"
    if "groupings" in name or ({"image", "lesion_id"} <= columns and "dx" not in columns):
        return "groupings"
    if name == "ham10000_metadata.csv" or columns & {"dx", "image_id"}:
        return "ham10000"
    return None


def _csvs(root, depth=2):
    """CSV files (regular files only: a FIFO is never opened) in ``root`` and its
    sub-folders down to ``depth`` levels, sorted; unreadable folders are passed over."""
    found = []
    for path, is_dir in list_folder(root, lambda *_: None):
        if is_dir and depth > 1:
            found += _csvs(path, depth - 1)
        elif not is_dir and path.suffix.lower() == ".csv" and path.is_file():
            found.append(str(path))
    return sorted(found)


def _has_class_folders(root):
    return any(is_dir and folder_class(path.name) is not None for path, is_dir in list_folder(root, lambda *_: None))


def _split_parts(root):
    """Sub-folders of ``root`` that hold class folders themselves (``train/``, ``val/``),
    when ``root`` has no class folders of its own."""
    if _has_class_folders(root):
        return []
    return [path for path, is_dir in list_folder(root, lambda *_: None) if is_dir and _has_class_folders(path)]


def _read_isic2018_with_groupings(labels, images):
    """The ISIC 2018 layout, with the groupings CSV found beside ``labels`` or in ``images``."""
    places = [Path(labels).parent, Path(images)]
    groupings = next((p for d in places for p in _csvs(d, 1) if csv_kind(p) == "groupings"), None)
    return read_isic2018(labels, images, groupings)


LABEL_READERS = {"ham10000": read_ham10000, "isic2018": _read_isic2018_with_groupings}


_EXPECTED_CSV = (f"expected HAM10000 metadata (lesion_id,image_id,dx,...) or ISIC 2018 one-hot ground truth "
                 f"(image,{','.join(CLASSES)})")


def _from_labels(labels, images):
    reader = LABEL_READERS.get(csv_kind(labels))
    if reader is not None:
        return reader(labels, images)
    if is_image_name(labels):
        raise DataError(f"{labels} is an image, not a labels CSV; {_EXPECTED_CSV}, or a dataset folder: "
                        "pass the folder holding the images (and the CSV) instead")
    columns = read_table(labels).columns  # a clear error when it is not a CSV at all (binary, UTF-16, empty)
    if "fold" in {c.lower() for c in columns}:
        raise DataError(f"{labels} is a folds file (written by 'skinfeat data split'), not labels; "
                        f"{_EXPECTED_CSV}: pass the folds file as --folds to fit")
    raise DataError(f"{labels}: columns {shorten(columns)}; {_EXPECTED_CSV}: fix the header")


def _from_folder(root):
    return read_class_folders(root) if _has_class_folders(root) or _split_parts(root) else read_unlabelled(root)


def load_dataset(data=None, images=None, labels=None):
    """A :class:`Manifest` of the dataset at ``data`` (layout auto-detected), or of
    the ``images`` folder with the ``labels`` CSV (HAM10000 or ISIC 2018 one-hot;
    without ``labels``: class folders or unlabelled images).

    Rows and files that cannot be used are left out and recorded in
    ``manifest.problems``; a DataError is raised only when nothing usable remains
    or a labels file lacks a required column."""
    if data is not None and (images is not None or labels is not None):
        raise UsageError("give either --data PATH or --images DIR [--labels CSV], not both")
    if labels is not None and images is None:
        raise UsageError("--labels needs --images DIR, the folder holding the image files")
    if data is None and images is None:
        raise UsageError("no dataset given; use --data PATH (layout auto-detected) or --images DIR [--labels CSV]")
    if images is not None and not Path(images).is_dir():
        raise DataError(f"--images {images}: not a folder; expected the folder holding the image files")
    if labels is not None and not Path(labels).is_file():
        raise DataError(f"--labels {labels}: {_missing(labels, 'file')}; expected a CSV of labels")
    manifest = _load(data, images, labels)
    if not len(manifest):
        raise DataError(_empty_message(manifest, data or images))
    return manifest


def _load(data, images, labels):
    if images is not None:
        return _from_labels(labels, images) if labels is not None else _from_folder(images)
    path = Path(data)
    if path.is_file():
        return _from_labels(data, path.parent)
    if not path.is_dir():
        raise DataError(f"--data {data}: {_missing(data, 'file or folder')}; expected a dataset folder "
                        "or a labels CSV")
    candidates = [p for p in _csvs(path) if csv_kind(p) in LABEL_READERS]
    if len(candidates) > 1:
        raise DataError(f"--data {data}: found {len(candidates)} label files ({', '.join(candidates)}); "
                        "choose one with --images DIR --labels CSV")
    return _from_labels(candidates[0], data) if candidates else _from_folder(data)


def _missing(path, what):
    if not os.path.exists(path):
        return f"no such {what}"
    return "a folder, not a file" if os.path.isdir(path) else f"not a regular {what} (a FIFO or a device?)"


def _empty_message(manifest, where):
    problems = manifest.errors() or manifest.problems
    if problems:
        return f"no usable images in {where}: {len(problems)} problems, the first: {problems[0]}"
    return (f"no images found in {where} (looked recursively for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "point --data at the folder holding the dataset")
