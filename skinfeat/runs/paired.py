"""Paired comparisons of recorded runs: is one run better than another beyond the noise?

Two runs scored on the same images with the same folds are compared on the same
lesion-grouped resamples of their out-of-fold decisions (``<run_id>.oof.npz``):
the difference in fold-mean BMCA with its 95 % interval (``skinfeat.core.intervals``),
and Nadeau and Bengio's corrected resampled t-test of the per-fold BMCA
differences. A difference whose interval holds 0 is a tie. Runs of other data,
other folds or other scored folds cannot be paired: ``compare`` says why.
"""

import numpy as np

from skinfeat.core.errors import DataError, UsageError
from skinfeat.core.intervals import Resamples, bootstrap_scores, corrected_t_test, observed_bmca, paired_difference
from skinfeat.runs.combine import read_oof


def pairing_problem(a, b):
    """Why runs ``a`` and ``b`` (records) cannot be paired, or None."""
    if (a["backbone"].get("dataset") or "?") != (b["backbone"].get("dataset") or "?"):
        return "another dataset"
    fa, fb = a.get("folds") or {}, b.get("folds") or {}
    if not fa.get("sha256") or fa.get("sha256") != fb.get("sha256"):
        return "other folds"
    if fa.get("scored") != fb.get("scored"):
        return "other scored folds"
    return None


class Pairing:
    """Paired figures of runs against one reference run, reading each oof file once."""

    def __init__(self, reference, runs):
        self.reference, self.runs = reference, runs
        self._base = None

    def _reference(self):
        if self._base is None:
            oof = read_oof(self.reference, self.runs)
            rows = np.flatnonzero(oof["pred"] >= 0)
            fold = oof["fold"][rows]
            y, pred = oof["label"][rows].astype(int), oof["pred"][rows]
            resamples = Resamples.draw(oof["lesion_id"][rows].astype(str), fold, grouped_by="lesion")
            self._base = {"ids": oof["image_id"][rows], "y": y, "pred": pred, "resamples": resamples,
                          "scores": (observed_bmca(y, pred, resamples),
                                     bootstrap_scores(y, None, pred, resamples, ("bmca",))["bmca"]),
                          "n_used": int((oof["fold"] >= 0).sum()), "k": len(np.unique(fold))}
        return self._base

    def against(self, other):
        """{difference, low, high, t_test} of ``other`` minus the reference, or
        {unpaired: why}."""
        if other.get("run_id") == self.reference.get("run_id"):
            return {"difference": 0.0, "low": 0.0, "high": 0.0, "t_test": None, "self": True}
        why = pairing_problem(self.reference, other)
        if why:
            return {"unpaired": why}
        try:
            base = self._reference()
            oof = read_oof(other, self.runs)
        except DataError:
            return {"unpaired": "out-of-fold predictions missing"}
        at = self._aligned(oof["image_id"], base["ids"])
        if (at < 0).any() or int((oof["pred"] >= 0).sum()) != len(at) or np.any(oof["pred"][at] < 0):
            return {"unpaired": "other images"}
        result = paired_difference(base["y"], oof["pred"][at], base["pred"], base["resamples"],
                                   b_scores=base["scores"])
        result["t_test"] = self._t_test(other)
        return result

    @staticmethod
    def _aligned(ids, wanted):
        """Indices into ``ids`` of each of ``wanted`` (-1 where absent)."""
        ids, wanted = np.asarray(ids, dtype=str), np.asarray(wanted, dtype=str)
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(ids[order], wanted)
        at = np.minimum(at, len(ids) - 1)
        found = ids[order][at] == wanted if len(ids) else np.zeros(len(wanted), bool)
        return np.where(found, order[at] if len(ids) else -1, -1)

    def _t_test(self, other):
        a = (other["metrics"].get("bmca") or {}).get("folds") or []
        b = (self.reference["metrics"].get("bmca") or {}).get("folds") or []
        base = self._reference()
        if len(a) != len(b) or len(a) < 2 or None in a or None in b:
            return None
        n_test = len(base["y"]) / base["k"]
        return corrected_t_test(np.subtract(a, b), base["n_used"] - n_test, n_test)


def verdict(paired):
    """'better', 'worse' or 'tied' (the interval holds 0), or None when not paired."""
    if "unpaired" in paired or paired.get("low") is None:
        return None
    if paired["low"] > 0:
        return "better"
    return "worse" if paired["high"] < 0 else "tied"


def find_run(records, wanted):
    """The record whose run id is ``wanted``, or ends with or contains it when only one
    does; UsageError (unknown or ambiguous) otherwise."""
    wanted = str(wanted).strip()
    exact = [r for r in records if r.get("run_id") == wanted]
    if exact:
        return exact[0]
    found = [r for r in records if wanted and wanted in str(r.get("run_id"))]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"--vs {wanted!r}: no recorded run has that id; expected a run id from the run column "
                         "of `skinfeat compare` (or a part of one that only it contains)")
    raise UsageError(f"--vs {wanted!r} is ambiguous: {len(found)} runs contain it "
                     f"({', '.join(str(r['run_id']) for r in found[:3])}{', ...' if len(found) > 3 else ''}); "
                     "give more of the run id")
