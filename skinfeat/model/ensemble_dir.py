"""An ensemble model directory (``skinfeat ensemble --out DIR``) loaded for
prediction, as light as ``Predictor`` (no TensorFlow, no scikit-learn).

Layout::

    model.json    format "skinfeat-ensemble", format_version 1, method and head ("stack"
                  or "mean"), members [{dir: "members/<i>", run_id, head, module,
                  settings_label}], backbone {module: the members' joined by " + "},
                  training (run_id, class_counts, n_images, folds, cv_bmca, shift),
                  files; for "stack" meta {head: "logreg", params, classes}, the
                  meta-learner; for "mean" offsets (the prior adjustment, CLASSES order)
    state.npz     "stack" only: the meta-learner's arrays (as a model's state.npz)
    members/<i>/  a complete model directory each (``skinfeat.model``)

Each member gives probabilities [n, 7] as trained; "mean" averages them, "stack"
feeds log(max(p, 1e-6)) of every member, concatenated ([n, 7 M], member 0 first),
to the meta-learner. Decisions add the ensemble's own offsets (``head.adjust``).
As with a model directory, nothing in it is trusted: every field is checked and
damage is one ModelError naming the directory.
"""

import json
from pathlib import Path

import numpy as np

from skinfeat.core.calibration import temperature_of
from skinfeat.core.classes import CLASSES
from skinfeat.core.errors import ModelError
from skinfeat.heads.inference import adjusted
from skinfeat.heads.params import problem
from skinfeat.model.format import ENSEMBLE_FORMAT, MANIFEST, STATE, EnsembleDirectory, read_manifest, refuse_links_out
from skinfeat.model.predictor import HeadFunction, Predictor, load_fallback, prediction_of

FORMAT_VERSION = 1
METHODS = ("stack", "mean")
CLIP = 1e-6  # the smallest member probability the meta-learner sees (log 1e-6 = -13.8)
META_HEAD = "logreg"


def stack_features(member_proba):
    """The meta-learner's inputs [n, 7 M] from members' probabilities [M, n, 7]."""
    P = np.log(np.clip(np.asarray(member_proba, np.float64), CLIP, None))
    return P.transpose(1, 0, 2).reshape(P.shape[1], -1)


def combine(method, member_proba, meta):
    """The ensemble's probabilities [n, 7] as trained from members' [M, n, 7]:
    their mean, or ``meta`` (features -> [n, 7]) of their stacked log-probabilities."""
    return np.mean(member_proba, axis=0) if method == "mean" else meta(stack_features(member_proba))


def read_any_manifest(directory):
    """The checked model.json of a model or an ensemble directory."""
    try:
        return read_manifest(directory)
    except EnsembleDirectory as exc:
        return check_ensemble_manifest(directory, exc.manifest)


def load_any(directory, verify_hash=True):
    """A ``Predictor`` for a model directory, an ``EnsemblePredictor`` for an ensemble one."""

    try:
        return Predictor(directory, verify_hash)
    except EnsembleDirectory:
        return EnsemblePredictor(directory, verify_hash)


def damaged(directory, what):
    """The error for an ensemble directory that is damaged in ``what`` way."""
    return ModelError(f"ensemble {directory} is incomplete or damaged: {what}; write it again with "
                      f"`skinfeat ensemble RUN_ID... --out {directory}`")


def _loaded(directory, what, load):
    """``load()``, its ModelError (a damaged member or meta-learner) as the ensemble's."""
    try:
        return load()
    except ModelError as exc:
        raise damaged(directory, f"its {what} cannot be loaded ({exc})") from None


def check_ensemble_manifest(directory, manifest):
    """``manifest`` (the decoded model.json of ``directory``) when every field is what
    ``skinfeat ensemble --out`` writes; ModelError (``damaged``) otherwise."""

    def bad(where, expected):
        value = manifest.get(where)
        raise damaged(directory, f"its {MANIFEST} has {where} = {json.dumps(value, default=str)[:60]}, "
                                 f"expected {expected}")

    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{Path(directory) / MANIFEST} has ensemble format version "
                         f"{manifest.get('format_version')}, this skinfeat reads version {FORMAT_VERSION}; "
                         "write it again with `skinfeat ensemble --out`")
    method, members = manifest.get("method"), manifest.get("members")
    if method not in METHODS:
        bad("method", " or ".join(METHODS))
    if manifest.get("head") != method:
        bad("head", f"{method!r}, its method")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
        bad("members", "a list of two or more {dir, run_id, ...}")
    for i, member in enumerate(members):
        if member.get("dir") != f"members/{i}" or not all(
                isinstance(member.get(k), (str, type(None))) for k in ("run_id", "head", "module", "settings_label")):
            raise damaged(directory, f"its {MANIFEST} has members[{i}] = {json.dumps(member)[:60]}, expected "
                                     f"{{\"dir\": \"members/{i}\", \"run_id\": ..., ...}}")
    for key in ("backbone", "training"):
        if not isinstance(manifest.get(key), dict):
            bad(key, "an object")
    counts = manifest["training"].get("class_counts")
    if not (isinstance(counts, list) and len(counts) == len(CLASSES)
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
        raise damaged(directory, f"its {MANIFEST} has training.class_counts = {json.dumps(counts)[:60]}, "
                                 f"expected {len(CLASSES)} image counts")
    if method == "stack":
        meta = manifest.get("meta")
        if not isinstance(meta, dict) or meta.get("head") != META_HEAD or not isinstance(meta.get("params"), dict):
            bad("meta", f"{{\"head\": {META_HEAD!r}, \"params\": {{...}}, \"classes\": [...]}}")
        classes = meta.get("classes")
        if not isinstance(classes, list) or len(classes) < 2 or not set(map(str, classes)) <= set(CLASSES):
            bad("meta", f"classes: two or more of {', '.join(CLASSES)}")
        why = problem(META_HEAD, meta["params"])
        if why:
            raise damaged(directory, f"its {MANIFEST} params: {why}")
        if manifest.get("files") != [STATE] or not (Path(directory) / STATE).is_file():
            raise damaged(directory, f"it has no {STATE} (the meta-learner) listed in its {MANIFEST}")
    else:
        offsets = manifest.get("offsets")
        if not (isinstance(offsets, list) and len(offsets) == len(CLASSES) and all(
                isinstance(o, (int, float)) and not isinstance(o, bool) and np.isfinite(o) for o in offsets)):
            bad("offsets", f"{len(CLASSES)} finite numbers")
    for sub in (Path(directory), Path(directory) / "members"):
        if sub.is_dir():
            refuse_links_out(sub)
    return manifest


class _Offsets:
    """The mean ensemble's decisions: ``adjust(proba)`` adds ``offsets`` as heads do."""

    def __init__(self, offsets):
        self.offsets = np.asarray(offsets, np.float64)

    def adjust(self, proba):
        return adjusted(proba, self.offsets)


class EnsemblePredictor:
    """An ensemble directory loaded for prediction: each member a ``Predictor``; the
    interface ``evaluate`` and ``predict`` use: ``probabilities``, ``predict_tta``,
    ``head.adjust``, ``head.offsets``, ``manifest``, ``metadata``, ``prediction``."""

    def __init__(self, directory, verify_hash=True):
        self.directory = Path(directory)
        self.manifest = read_any_manifest(directory)
        if self.manifest.get("format") != ENSEMBLE_FORMAT:
            raise ModelError(f"model {directory} is one model, not an ensemble; load it with `Predictor`")
        self.method = self.manifest["method"]
        self.temperature = temperature_of(self.manifest)
        self.fallback = load_fallback(directory, self.manifest)
        self.members = []
        for i, entry in enumerate(self.manifest["members"]):
            member = _loaded(directory, entry["dir"], lambda: Predictor(self.directory / entry["dir"], verify_hash))
            if (member.manifest.get("training") or {}).get("run_id") != entry["run_id"]:
                raise damaged(directory, f"its {entry['dir']} is not the model of run {entry['run_id']} its "
                                         f"{MANIFEST} lists (it holds run "
                                         f"{(member.manifest.get('training') or {}).get('run_id')})")
            self.members.append(member)
        columns = sorted({c for m in self.members if m.metadata for c in m.metadata["columns"]})
        self.metadata = {"columns": columns} if columns else None  # what predict and evaluate ask for
        if self.method == "mean":
            self.head = _Offsets(self.manifest["offsets"])
        else:
            self.head = _loaded(directory, f"meta-learner ({STATE})",
                                lambda: HeadFunction(directory, self.manifest["meta"]))
            if self.head.n_features != len(CLASSES) * len(self.members):
                raise damaged(directory, f"its meta-learner takes {self.head.n_features} inputs, expected "
                                         f"{len(CLASSES)} per member ({len(CLASSES) * len(self.members)})")

    def probabilities(self, sources, shift=None, tta=(), progress=None, metadata=None):
        """Probabilities [n, 7] as trained of ``sources`` (paths or decoded images; under
        ``shift``), each member averaging over the TTA views ``tta``."""
        return self.assess(sources, shift, tta, progress, metadata)[0]

    def assess(self, sources, shift=None, tta=(), progress=None, metadata=None):
        """(``probabilities``, the first member's out-of-distribution scores or None)."""
        step = (lambda n: progress(n / len(self.members))) if progress else None
        done = [m.assess(sources, shift, tta, step, metadata if m.metadata else None) for m in self.members]
        return combine(self.method, np.stack([proba for proba, _ in done]), self.head), done[0][1]

    def predict_tta(self, image, views=None, metadata=None):
        """Probabilities [7] of a decoded image, each member averaging over the views of
        extraction's augmentation it was trained with (``Predictor.predict_tta``)."""
        return self.assess_tta(image, views, metadata)[0]

    def assess_tta(self, image, views=None, metadata=None):
        """(``predict_tta``, the first member's out-of-distribution score or None)."""
        done = [m.assess_tta(image, views, metadata if m.metadata else None) for m in self.members]
        return combine(self.method, np.stack([proba[None] for proba, _ in done]), self.head)[0], done[0][1]

    @property
    def ood(self):
        """The first member's out-of-distribution score (the members saw the same images)."""
        return self.members[0].ood

    @property
    def seen(self):
        """The images any member was fitted on; None when a member does not record them."""
        members = [m.seen for m in self.members]
        if any(m is None for m in members):
            return None
        union = members[0]
        for m in members[1:]:
            union = union | m
        return union

    def unknown_metadata(self, values, n, where="the metadata"):
        """The members' counts of categories they never saw (``Predictor.unknown_metadata``), the largest."""
        counts = [m.unknown_metadata(values, n, where) for m in self.members]
        return {c: max(k.get(c, 0) for k in counts) for k in counts for c in k}

    def prediction(self, path, proba, ood=None):
        return prediction_of(path, proba, self, ood)
