"""Which out-of-distribution score tells HAM10000 images from images the model cannot judge?

Fits each candidate score on folds 1-4 of ``make_folds(k=5, seed=0)`` of HAM10000
(the default backbone's features, clean views) and scores fold 0 clean (in
distribution) against (a) photos that are not dermoscopy (``devtools.photos``:
Debian's darknet photos, scikit-image's and scikit-learn's sample images,
matplotlib's Grace Hopper, and seeded square crops of each) and (b) fold 0 under
each standard shift (``skinfeat.imaging.shifts.STANDARD``). Every image goes
through the TFLite backbone as ``skinfeat predict`` sends it (fold-0 features are
``skinfeat.runs.shiftcheck``'s, cached in features/shifted/).

Prints per score: the AUROC against the photos and against each shift, the share
of fold 0 (clean) and of the photos flagged at the threshold set on folds 1-4's
own out-of-fold scores (their 95th percentile), and the seconds it took.
Target (issue 30): AUROC >= 0.95 against the photos, at most 5 % of fold 0 flagged.
skinfeat's score is ``pca-residual-64`` (``skinfeat.core.ood``).

    python benchmarks/bench_ood.py
    python benchmarks/bench_ood.py --score mahalanobis --score knn
"""

import tempfile
import time

import numpy as np
from bench_shift import SOG, train_features
from common import argument_parser, load_average, log, write_json
from sklearn.metrics import roc_auc_score

from devtools.photos import photo_crops, photo_paths
from skinfeat.core.intervals import Resamples, percentile_interval, span
from skinfeat.core.ood import QUANTILE, fit_ood, ood_scores, project
from skinfeat.data.layouts import load_dataset
from skinfeat.data.split import make_folds
from skinfeat.features.store import read_features
from skinfeat.imaging.shifts import STANDARD, parse_shifts
from skinfeat.runs.shiftcheck import shifted_features


def pca_residual(dims):
    """skinfeat's score (``skinfeat.core.ood``): the residual outside the top principal components."""
    def fit(X, y):
        stats = fit_ood(X, dims=dims)
        return lambda F: ood_scores(stats, F)
    return fit


def mahalanobis(dims, shrink=0.1, residual=False):
    """The squared Mahalanobis distance to the nearest class mean in the top principal components
    (within-class covariance shrunk towards its diagonal); with ``residual``, plus the
    residual outside them over its mean variance (a probabilistic-PCA covariance)."""
    def fit(X, y):
        stats = fit_ood(X, dims=dims)
        P = project(stats, X) * stats["sd"]
        classes = np.unique(y)
        means = np.stack([P[y == c].mean(axis=0) for c in classes])
        within = P - means[np.searchsorted(classes, y)]
        cov = within.T @ within / (len(P) - len(classes))
        cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
        inverse = np.linalg.inv(cov)
        variance = (ood_scores(stats, X) ** 2).mean() / (X.shape[1] - dims)

        def score(F):
            D = (project(stats, F) * stats["sd"])[:, None, :] - means[None]
            d = np.einsum("nck,kl,ncl->nc", D, inverse, D).min(axis=1)
            return d + ood_scores(stats, F) ** 2 / variance if residual else d
        return score
    return fit


def knn(k):
    """Cosine distance to the k-th nearest training image (Sun et al., 2022)."""
    def fit(X, y):
        T = X / np.linalg.norm(X, axis=1, keepdims=True)

        def score(F):
            F = F / np.linalg.norm(F, axis=1, keepdims=True)
            out = []
            for start in range(0, len(F), 512):
                sim = F[start:start + 512] @ T.T
                out.append(1 - np.partition(sim, -k, axis=1)[:, -k])
            return np.concatenate(out)
        return score
    return fit


def max_probability(X, y):
    """1 - the head's largest probability (the default logreg head on these features)."""
    from skinfeat.heads import make_head

    head = make_head("logreg").fit(X, y)
    return lambda F: 1 - head.predict_proba(F).max(axis=1)


SCORES = {"pca-residual-64": pca_residual(64), "pca-residual-16": pca_residual(16),
          "pca-residual-256": pca_residual(256), "mahalanobis-64": mahalanobis(64),
          "mahalanobis-256": mahalanobis(256), "ppca-64": mahalanobis(64, residual=True), "knn-10": knn(10),
          "max-probability": max_probability}


def shares_and_auroc(clean, photos, threshold, clean_resamples, photo_resamples):
    """95 % intervals (lesion-grouped for fold 0, by source photo for the photos and their
    crops) of the share of fold 0 flagged, of the photos flagged, and of the AUROC."""
    wc, wp = clean_resamples.row_weights(), photo_resamples.row_weights()
    flagged_c, flagged_p = (wc * (clean > threshold)).sum(1) / wc.sum(1), (wp * (photos > threshold)).sum(1) / wp.sum(1)
    labels, scores = np.r_[np.zeros(len(clean)), np.ones(len(photos))], np.r_[clean, photos]
    auroc = [roc_auc_score(labels, scores, sample_weight=np.r_[a, b]) for a, b in zip(wc, wp)]
    return {"flagged_clean": percentile_interval(flagged_c), "flagged_photos": percentile_interval(flagged_p),
            "auroc_photos": percentile_interval(auroc)}


def threshold_on(fit, X, y, fold):
    """The QUANTILE of folds 1-4's out-of-fold scores (each fold by a fit on the other three)."""
    oof = np.concatenate([fit(X[fold != f], y[fold != f])(X[fold == f]) for f in np.unique(fold)])
    return float(np.quantile(oof, QUANTILE))


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0], json_help="also write the results here")
    parser.add_argument("--score", action="append", choices=sorted(SCORES), help="scores to run (default all)")
    parser.add_argument("--shift", action="append", help="shifts (default: the standard set)")
    parser.add_argument("--crops", type=int, default=4, help="square crops per photo (default 4)")
    args = parser.parse_args(argv)
    manifest = load_dataset(data=args.data)
    fold = np.asarray(make_folds(manifest, k=5, seed=0))
    log("features of HAM10000 (the default backbone; cached in features/)")
    fs = read_features(train_features(manifest, SOG), with_views=False)
    index = {i: r for r, i in enumerate(fs.image_ids)}
    train = np.array([index[manifest.image_ids[i]] for i in np.flatnonzero(fold != 0)])
    test = np.flatnonzero(fold == 0)
    X, y, train_fold = fs.features[train], fs.labels[train], fold[fold != 0]
    ids, paths = [manifest.image_ids[i] for i in test], [manifest.paths[i] for i in test]
    start = time.perf_counter()
    sets = {"clean": shifted_features(fs.attrs, ids, paths, None)[:, 0]}
    with tempfile.TemporaryDirectory() as tmp:
        photos = photo_paths()
        photos = photos + photo_crops(photos, tmp, args.crops)
        sets["photos"] = shifted_features(fs.attrs, [f"photo:{p.name}" for p in photos], photos, None)[:, 0]
    shifts = parse_shifts(args.shift or list(STANDARD))
    for shift in shifts:
        sets[shift.name] = shifted_features(fs.attrs, ids, paths, shift)[:, 0]
    log(f"fold-0 and photo features: {time.perf_counter() - start:.0f} s ({len(photos)} photos and crops)")
    clean_resamples = Resamples.draw([manifest.lesion_ids[i] for i in test], grouped_by="lesion")
    photo_resamples = Resamples.draw([p.stem.split("-crop")[0] for p in photos], grouped_by="photo")
    rows = []
    for name in args.score or list(SCORES):
        start = time.perf_counter()
        fit = SCORES[name]
        threshold = threshold_on(fit, X, y, train_fold)
        score = fit(X, y)
        clean = score(sets["clean"])
        row = {"score": name, "threshold": threshold, "flagged_clean": float((clean > threshold).mean()),
               "auroc": {}, "flagged": {}}
        for what, feats in sets.items():
            if what == "clean":
                continue
            s = score(feats)
            row["auroc"][what] = float(roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(s))], np.r_[clean, s]))
            row["flagged"][what] = float((s > threshold).mean())
        row["intervals"] = shares_and_auroc(clean, score(sets["photos"]), threshold, clean_resamples,
                                            photo_resamples)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        log(f"  {name}: photos AUROC {row['auroc']['photos']:.3f}, fold 0 flagged {row['flagged_clean']:.3f} "
            f"({row['seconds']:.0f} s)")
    names = ["photos"] + [s.name for s in shifts]
    print(f"AUROC of fold 0 (clean, {len(test)} images) against photos ({len(photos)}) and each shift of fold 0; "
          f"flagged at the {QUANTILE:.0%} threshold of folds 1-4's out-of-fold scores. {load_average()}")
    print(f"{'score':<24} {'fold0 flagged':>13} {'photos flagged':>14} " + " ".join(f"{n:>10}" for n in names))
    for r in rows:
        print(f"{r['score']:<24} {r['flagged_clean']:>13.3f} {r['flagged']['photos']:>14.3f} "
              + " ".join(f"{r['auroc'][n]:>10.3f}" for n in names))
    print("95 % intervals (1,000 resamples: fold 0 by lesion, the photos by source photo with its crops):")
    for r in rows:
        i = r["intervals"]
        print(f"{r['score']:<24} fold 0 flagged {r['flagged_clean']:.3f} {span(i['flagged_clean'])}, photos flagged "
              f"{r['flagged']['photos']:.3f} {span(i['flagged_photos'])}, AUROC photos {r['auroc']['photos']:.3f} "
              f"{span(i['auroc_photos'])}")
    print("target: photos AUROC >= 0.95, fold 0 flagged <= 0.05")
    for r in rows:
        print(f"{r['score']}: photos AUROC {r['auroc']['photos']:.3f} ({r['auroc']['photos'] / 0.95:.2f} of target), "
              f"fold 0 flagged {r['flagged_clean']:.3f} ({r['flagged_clean'] / 0.05:.2f} of the limit)")
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
