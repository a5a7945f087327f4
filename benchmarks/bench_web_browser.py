"""The page of `skinfeat export --format web` in headless Chromium (this CPU, no
GPU, networking off): warm latency per image and agreement with `predict`.

    python benchmarks/bench_web_browser.py --model DIR [--data ../shared/data/ham10000]
                                           [--n 20] [--repeat 3]

Exports the model's site into a temporary folder, serves it on 127.0.0.1, opens
it once (the load: LiteRT.js Wasm, the backbone compiled) and predicts --n real
HAM10000 JPEGs --repeat times each in the page (fetch excluded: decode, resize,
backbone, head). Prints the load time, the warm per-image latency (median, 90th
percentile, ratio to the 150 ms target) and its split between the steps, and the
largest probability difference to the Predictor with top-1 agreement. The
machine is shared: the load average is printed next to the timings.
`browser_latency` is the function the server benchmark (bench_web.py) can call.
"""

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import argument_parser

WARM_TARGET_MS = 150.0


def browser_latency(model, images, repeat=3):
    """{load_s, ms: [per-image warm latencies], phases: {step: median ms}, worst_diff, top1_agree, n}
    of the web page of ``model`` on ``images`` (paths) in headless Chromium."""
    import numpy as np

    from skinfeat.model.predictor import Predictor
    from devtools.chromium import Browser, Served
    from skinfeat.apps.web.site import export_web

    root = Path(tempfile.mkdtemp(prefix="bench-web."))
    try:
        export_web(model, root / "site")
        (root / "site" / "img").mkdir()
        for path in images:
            shutil.copyfile(path, root / "site" / "img" / path.name)
        served, predictor = Served(root / "site"), Predictor(model)
        try:
            with Browser() as browser:
                start = time.perf_counter()
                browser.goto(served.url + "index.html")
                browser.evaluate("skinfeat.ready.then(() => true)")
                load_s = time.perf_counter() - start
                browser.evaluate(f"skinfeat.predictUrl('img/{images[0].name}')")  # warm-up
                runs, worst, agree = [], 0.0, 0
                for path in images:
                    for _ in range(repeat):
                        runs.append(browser.evaluate(f"skinfeat.predictUrl('img/{path.name}')"))
                    want = predictor.prediction(path, predictor.probabilities([path])[0]).adjusted
                    got = np.array(runs[-1]["adjusted"])
                    worst = max(worst, float(np.abs(got - want).max()))
                    agree += int(np.argmax(got) == np.argmax(want))
        finally:
            served.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    phases = {k: statistics.median(r["phases"][k] for r in runs) for k in runs[0]["phases"]}
    return {"load_s": load_s, "ms": [r["ms"] for r in runs], "phases": phases, "worst_diff": worst,
            "top1_agree": agree, "n": len(images), "decoders": sorted({r["decoder"] for r in runs})}


def main():
    parser = argument_parser(__doc__.splitlines()[0], json_help=None)
    parser.add_argument("--model", required=True, help="a model directory (fit --out, with its backbone.tflite)")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    images = sorted(Path(args.data).glob("*/*.jpg"))[1000:1000 + args.n]
    r = browser_latency(args.model, images, args.repeat)
    ms = sorted(r["ms"])
    median, p90 = statistics.median(ms), ms[int(0.9 * (len(ms) - 1))]
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load: {r['load_s']:.2f} s (LiteRT.js Wasm, backbone compiled)   load average {load}")
    print(f"warm: median {median:.1f} ms, p90 {p90:.1f} ms per image ({len(ms)} runs, {r['n']} images); "
          f"{median / WARM_TARGET_MS:.2f}x the {WARM_TARGET_MS:.0f} ms target")
    print("steps (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items()))
    print(f"vs predict: largest probability difference {r['worst_diff']:.2e}, top-1 agrees on "
          f"{r['top1_agree']}/{r['n']} (decoder: {', '.join(r['decoders'])})")


if __name__ == "__main__":
    main()
