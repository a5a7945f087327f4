"""Which cosine-similarity threshold finds near-duplicate images, and at what cost?

Planted copies: ``--n`` (200) HAM10000 images drawn at random (``--seed``), each
written again nine ways: JPEG re-encoded at quality 60-75, resized to 0.5-0.8x,
cropped 5-10 % off every side, rotated 90 and 180 degrees, rotated 3-10 degrees
(then cropped to the rotated frame, so no black corners), flipped left-right and
upside-down, and all of resize, crop and JPEG at once. Their features are
extracted with the same backbone and resize as the full set (``--module``,
default ``efficientnet-lite0-stages-sog``, crop; no views) and searched with
``skinfeat data duplicates --against``: a copy is found when it pairs with its
source image at or above the threshold.

Other-lesion pairs: the full set's self-search (``find_duplicates`` of the
HAM10000 features file, exact, in blocks) at each threshold counts pairs of
images of different lesion ids. They are false pairs or leaks: a look at the
most similar (``skinfeat data duplicates --out sheet.png``) finds most of them
to be one lesion photographed twice under two lesion ids. HAM10000's two known
byte-identical pairs (ISIC_0029861/ISIC_0024366, ISIC_0029938/ISIC_0024777,
each within one lesion id) must be found ("known"). Both ways of measuring
similarity are scored: cosine of the raw features and cosine after centring
(subtracting the mean feature of the sets searched).

Prints one table per way (threshold, planted recall overall and per kind of
copy, other-lesion pairs, search seconds, peak memory), lists the false pairs at the
chosen default, and writes everything to ``--json``. The copies and their
features live under ``$SKINFEAT_HOME/bench_duplicates`` (made once, reused).

    SKINFEAT_HOME=/work/exp/dup_home SKINFEAT_FEATURES=/work/exp/dup_features \\
        python benchmarks/bench_duplicates.py --full features/ham10000__efficientnet-lite0-stages-sog__...h5

Targets (issue 13): recall 1.0 on the planted copies at the default threshold;
the full set (10,015 x 2,688) searched in under 60 s in bounded memory.
"""

import time

import numpy as np
from common import argument_parser, log, peak_mib, write_json

KNOWN = (("ISIC_0029861", "ISIC_0024366"), ("ISIC_0029938", "ISIC_0024777"))
KINDS = ("jpeg", "resize", "crop", "rot90", "rot180", "tilt", "hflip", "vflip", "combo")
THRESHOLDS = {"whitened": (0.20, 0.25, 0.28, 0.30, 0.32, 0.35, 0.40, 0.45, 0.50),
              "raw": (0.94, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995)}


def _crop(img, frac):
    w, h = img.size
    dx, dy = round(w * frac), round(h * frac)
    return img.crop((dx, dy, w - dx, h - dy))


def _resize(img, scale):
    from PIL import Image

    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)


def modified(img, kind, rng):
    """``img`` changed one way (``kind``) and the JPEG quality to save it at."""
    from PIL import Image

    quality = 95
    if kind == "jpeg":
        quality = int(rng.integers(60, 76))
    elif kind == "resize":
        img = _resize(img, rng.uniform(0.5, 0.8))
    elif kind == "crop":
        img = _crop(img, rng.uniform(0.05, 0.10))
    elif kind in ("rot90", "rot180"):
        img = img.transpose(Image.ROTATE_90 if kind == "rot90" else Image.ROTATE_180)
    elif kind == "tilt":
        angle = rng.uniform(3, 10) * rng.choice([-1, 1])
        img = _crop(img.rotate(angle, resample=Image.BICUBIC), 0.5 * np.sin(np.radians(abs(angle))) + 0.02)
    elif kind == "hflip":
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    elif kind == "vflip":
        img = img.transpose(Image.FLIP_TOP_BOTTOM)
    elif kind == "combo":
        img = _crop(_resize(img, rng.uniform(0.5, 0.8)), rng.uniform(0.05, 0.10))
        quality = int(rng.integers(60, 76))
    return img, quality


def plant(manifest, folder, n, seed):
    """Write the copies (once) as ``<source id>__<kind>.jpg``; return the folder."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in sorted(rng.choice(len(manifest), n, replace=False).tolist()):
        source = manifest.image_ids[i]
        with Image.open(manifest.paths[i]) as im:
            img = im.convert("RGB")
        for kind in KINDS:
            out = folder / f"{source}__{kind}.jpg"
            if not out.is_file():
                copy, quality = modified(img, kind, rng)
                copy.save(out, quality=quality)
    return folder


def compared(sets, way):
    """The unit rows the search compares, of each of ``sets`` (FeatureSets searched together)."""
    from skinfeat.data.duplicates import _unit, whiten

    features = [s.features for s in sets]
    rows = [f.copy() for f in features] if way == "raw" else whiten(features, [s.path for s in sets])
    return [_unit(r) for r in rows]


def count_false(full, threshold, way, block=1024):
    """Pairs of images of different lesions at or above ``threshold``, counted (not kept: at a
    threshold that low there are millions)."""
    x = compared([full], way)[0]
    lesions = np.unique(full.lesion_ids, return_inverse=True)[1]
    n = 0
    for start in range(0, len(x), block):
        rows, cols = np.nonzero(x[start:start + block] @ x.T >= threshold)
        keep = (cols > rows + start) & (lesions[rows + start] != lesions[cols])
        n += int(keep.sum())
    return n


def sources(copies, full):
    """The full set's row of each copy's source image."""
    source_row = {s: j for j, s in enumerate(full.image_ids)}
    return np.array([source_row[c.split("__")[0]] for c in copies.image_ids])


def found_sources(pairs, source):
    """The similarity of each copy to its source where the --against search paired them, else -1."""
    found = np.full(len(source), -1.0)
    hit = source[pairs.a] == pairs.b
    found[pairs.a[hit]] = pairs.similarity[hit]
    return found


def source_similarity(copies, full, source, way):
    """Each copy's cosine similarity to its source, computed directly (as --against compares them)."""
    c, f = compared([copies, full], way)
    return np.einsum("ij,ij->i", c, f[source])


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--full", required=True, help="features file of the whole dataset (read in place)")
    parser.add_argument("--module", default="efficientnet-lite0-stages-sog")
    parser.add_argument("--n", type=int, default=200, help="source images of planted copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default", type=float, help="threshold whose false pairs are listed")
    args = parser.parse_args(argv)

    from skinfeat.data.layouts import load_dataset
    from skinfeat.data.duplicates import THRESHOLDS as DEFAULTS, find_duplicates
    from skinfeat.features.extract import extract_features
    from skinfeat.features.store import read_features
    from skinfeat.core.paths import skinfeat_home

    home = skinfeat_home() / "bench_duplicates"
    manifest = load_dataset(data=args.data)
    log(f"planting {args.n} x {len(KINDS)} copies under {home / 'planted'}")
    folder = plant(manifest, home / "planted", args.n, args.seed)
    copies_path = extract_features(load_dataset(images=str(folder)), args.module, resize="crop", views=0,
                                   dataset_name="planted", progress=True).path
    full, copies = read_features(args.full, with_views=False), read_features(copies_path, with_views=False)
    kind_of = np.array([c.split("__")[1] for c in copies.image_ids])
    lesion = dict(zip(full.image_ids, full.lesion_ids))
    results = {}
    for way in THRESHOLDS:
        default = args.default or DEFAULTS[way]
        low = min(THRESHOLDS[way])
        start = time.perf_counter()
        found = find_duplicates(full, threshold=low, similarity=way)
        seconds = time.perf_counter() - start
        against = find_duplicates(copies, full, threshold=low, similarity=way)
        source = sources(copies, full)
        sims = found_sources(against, source)
        direct = source_similarity(copies, full, source, way)
        assert np.allclose(sims[sims >= low], direct[sims >= low], atol=1e-5) and (direct[sims < 0] < low).all()
        ids_a, ids_b = full.image_ids[found.a], full.image_ids[found.b]
        different = full.lesion_ids[found.a] != full.lesion_ids[found.b]
        known = np.array([{a, b} in [set(k) for k in KNOWN] for a, b in zip(ids_a, ids_b)], dtype=bool)
        rows = []
        for t in THRESHOLDS[way]:
            over = found.similarity >= t
            rows.append({"threshold": t, "recall": float((sims >= t).mean()),
                         "recall_by_kind": {k: float((sims[kind_of == k] >= t).mean()) for k in KINDS},
                         "false_pairs": int((over & different & ~known).sum()),
                         "same_lesion_pairs": int((over & ~different).sum()),
                         "known_found": int((over & known).sum())})
        false_at_default = [(str(a), lesion[a], str(b), lesion[b], float(s)) for a, b, s, d, k
                            in zip(ids_a, ids_b, found.similarity, different, known)
                            if d and not k and s >= default]
        results[way] = {"rows": rows, "search_seconds": seconds, "peak_mib": peak_mib(),
                        "min_copy_similarity": {k: float(direct[kind_of == k].min()) for k in KINDS},
                        "false_pairs_at_recall_1": count_false(full, float(direct.min()), way),
                        "false_pairs_at_default": sorted(false_at_default, key=lambda r: -r[4])}
        print(f"\n{way} cosine: full self-search {seconds:.1f} s, peak memory {peak_mib():.0f} MiB")
        print("threshold  recall  " + " ".join(f"{k:>6}" for k in KINDS) + "  other-lesion  same-lesion  known")
        for r in rows:
            print(f"{r['threshold']:9.3f}  {r['recall']:6.3f}  "
                  + " ".join(f"{r['recall_by_kind'][k]:6.3f}" for k in KINDS)
                  + f"  {r['false_pairs']:12d}  {r['same_lesion_pairs']:11d}  {r['known_found']:5d}")
        print("lowest similarity of a copy to its source: "
              + ", ".join(f"{k} {v:.3f}" for k, v in results[way]["min_copy_similarity"].items())
              + f"; at {direct.min():.3f} (recall 1.0): {results[way]['false_pairs_at_recall_1']:,} other-lesion pairs")
    default = args.default or DEFAULTS["whitened"]
    print(f"\nother-lesion pairs of the whitened full set at {default} (the default):")
    for a, la, b, lb, s in results["whitened"]["false_pairs_at_default"]:
        print(f"  {s:.4f}  {a} ({la})  {b} ({lb})")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
