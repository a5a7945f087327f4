"""Latency of `skinfeat predict`: a new process on one image, and warm per-image.

    python benchmarks/bench_predict.py [--model DIR] [--data ../shared/data/ham10000]
                                       [--n 100] [--cold 5] [--features FILE]

Without --model it makes the default model first, as a user would (built-in
EfficientNet-Lite0 features of 140 HAM10000 images, logreg head, `fit --out`,
which exports the backbone into the model directory): about a minute.

Prints
- cold: wall time of new processes predicting one image, median of --cold runs,
  with the ratio to the 3 s target: `skinfeat predict` as installed (the whole
  CLI), the predict command alone (what the CLI costs when no other command
  module imports scikit-learn), the library, and a bare `python -c pass`;
- warm: per-image latency in one process (decode, resize, backbone, head),
  median and 90th percentile, ratio to the 100 ms target; and the throughput of
  a streamed folder (batches of 16);
- with --features (a features file of the model's backbone and --data):
  the largest difference between probabilities predicted from the images and
  those of the same images' extracted features.
The machine is shared: the load average is printed next to the timings.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import argument_parser, load_average

COLD_TARGET_S, WARM_TARGET_MS = 3.0, 100.0


def default_model(data, directory):
    from skinfeat.data.layouts import load_dataset
    from skinfeat.runs.fit import run_fit
    from skinfeat.features.extract import extract_features

    import numpy as np

    manifest = load_dataset(data=data)
    labels = np.asarray(manifest.labels)
    rows = sorted(i for c in range(7) for i in np.flatnonzero(labels == c)[:20])
    start = time.perf_counter()
    result = extract_features(manifest.subset(rows), "efficientnet-lite0", out=directory / "features.h5",
                              progress=False)
    run_fit(result.path, "logreg", cv=2, out=directory / "model", runs=directory / "runs")
    print(f"default model: efficientnet-lite0 + logreg on {len(rows)} images, made in "
          f"{time.perf_counter() - start:.0f} s")
    return directory / "model"


def timed_runs(args, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"{' '.join(map(str, args))} failed: {done.stderr.strip()[-500:]}")
    return times, done.stdout


def cold(model, image, n):
    py = sys.executable
    skinfeat = shutil.which("skinfeat", path=str(Path(py).parent)) or shutil.which("skinfeat")
    command = ("from skinfeat.commands.predict import predict; "
               f"predict.main(['--model', {str(model)!r}, {str(image)!r}], prog_name='skinfeat predict')")
    library = ("import sys; from skinfeat.model.predict import load_predictor, predict_paths, write_predictions; "
               f"write_predictions(predict_paths(load_predictor({str(model)!r}), [{str(image)!r}]), sys.stdout)")
    cases = [("python -c pass (interpreter start)", [py, "-c", "pass"]),
             ("predict command alone", [py, "-c", command]),
             ("library (skinfeat.model.predict)", [py, "-c", library])]
    from skinfeat.cli import cli

    if skinfeat and "predict" in cli.commands:
        cases.insert(1, ("`skinfeat predict` (installed CLI)", [skinfeat, "predict", "--model", str(model), str(image)]))
    else:  # as it will be once cli.py registers the command
        whole = ("from skinfeat.cli import cli; from skinfeat.commands.predict import predict; "
                 f"cli.add_command(predict); cli.main(['predict', '--model', {str(model)!r}, {str(image)!r}])")
        cases.insert(1, ("whole CLI (predict added at run time)", [py, "-c", whole]))
    print(f"cold: a new process predicting {image.name}, median of {n} ({load_average()})")
    for name, args in cases:
        times, out = timed_runs(args, n)
        median = statistics.median(times)
        ratio = "" if "pass" in name else f"   {median / COLD_TARGET_S:.2f} x the {COLD_TARGET_S:.0f} s target"
        print(f"  {name:<38} {median:6.2f} s (min {min(times):.2f}){ratio}")
    print(f"  output: {out.strip()}")


def warm(model_dir, paths):
    import numpy as np

    from skinfeat.model.predictor import load_predictor
    from skinfeat.model.predict import predict_paths

    start = time.perf_counter()
    model = load_predictor(model_dir)
    loaded = time.perf_counter() - start
    list(predict_paths(model, paths[:2]))  # first calls allocate
    single = []
    for path in paths:
        start = time.perf_counter()
        next(iter(predict_paths(model, [path])))
        single.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for p in paths:
            os.symlink(p, Path(folder) / p.name)
        count = sum(1 for _ in predict_paths(model, [folder]))
        seconds = time.perf_counter() - start
    median, p90 = float(np.median(single)), float(np.percentile(single, 90))
    print(f"warm: model loaded in {loaded * 1000:.0f} ms; one image at a time over {len(paths)} images "
          f"({load_average()})")
    print(f"  per image: median {median:.1f} ms, p90 {p90:.1f} ms   {median / WARM_TARGET_MS:.2f} x the "
          f"{WARM_TARGET_MS:.0f} ms target")
    print(f"  streamed folder: {count / seconds:.1f} images/s ({seconds / count * 1000:.1f} ms per image)")
    return model


def agreement(model, features, data):
    import numpy as np

    from skinfeat.data.layouts import find_images
    from skinfeat.features.store import read_features
    from skinfeat.model.predict import predict_paths

    fs = read_features(features, with_views=False)
    found = find_images(data)
    rows = np.random.default_rng(0).choice(len(fs), min(300, len(fs)), replace=False)
    paths = [Path(found[fs.image_ids[r]][0]) for r in rows]
    from_images = np.stack([p.proba for p in predict_paths(model, paths)])
    from_features = model.head(fs.features[rows])
    feats = np.concatenate([model.backbone(np.stack([model.load_image(p) for p in paths[i:i + 16]]))
                            for i in range(0, len(paths), 16)])
    print(f"agreement over {len(rows)} images of {Path(features).name}: probabilities max |diff| "
          f"{np.abs(from_images - from_features).max():.1e}, features max |diff| "
          f"{np.abs(feats - fs.features[rows]).max():.1e} (largest feature {np.abs(fs.features).max():.1f}), "
          f"same top class {np.mean(from_images.argmax(1) == from_features.argmax(1)):.3f}")


def main():
    parser = argument_parser(__doc__, json_help=None, data_type=Path,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory (default: make the default model)")
    parser.add_argument("--n", type=int, default=100, help="images for the warm figures")
    parser.add_argument("--cold", type=int, default=5, help="new processes per cold figure")
    parser.add_argument("--features", type=Path, help="features file for the agreement figure")
    args = parser.parse_args()

    from skinfeat.data.layouts import find_images

    paths = [Path(v[0]) for _, v in sorted(find_images(args.data).items())[: args.n]]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(args.data, Path(tmp))
        cold(model, paths[0], args.cold)
        predictor = warm(model, paths)
        if args.features:
            agreement(predictor, args.features, args.data)


if __name__ == "__main__":
    main()
