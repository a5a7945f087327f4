"""`skinfeat serve`: the real waitress server on a free port, real HTTP requests
with real HAM10000 images; its answers equal `skinfeat predict`'s, bad uploads
are JSON 4xx errors that leave it healthy, concurrent requests are each answered
right, and bad command lines are one-line errors."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import (
    REPO,  # noqa: E402
    Server,
    error_line,
)
from model_factory import ham_subset, lite0_model, pool_model

from skinfeat.cli import cli
from skinfeat.core.classes import CLASSES

META = ("age", "sex", "localization")


@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return pool_model(skinfeat_home, ham10000)["model"]


@pytest.fixture(scope="module")
def images(ham10000):
    return [str(p) for p in ham_subset(ham10000, per_class=1, skip=4).paths]


@pytest.fixture(scope="module")
def server(pool):
    s = Server(pool, max_upload_mb=1)
    try:
        yield s
    finally:
        s.close()


def proba(answer, key="probabilities_as_trained"):
    return np.array([answer[key][c] for c in CLASSES])


def same_answer(answer, item):
    """``answer`` is ``item`` of `predict --format json` without its file: the same
    keys and top classes, probabilities within 1e-6 (they are rounded to 6 decimals)."""
    assert set(answer) == set(item) - {"image", "path"}
    assert [t["class"] for t in answer["top"]] == [t["class"] for t in item["top"]]
    assert [t["name"] for t in answer["top"]] == [t["name"] for t in item["top"]]
    assert answer["decision"] == item["decision"]
    for key in ("probabilities", "decision_scores", "probabilities_as_trained"):
        np.testing.assert_allclose(proba(answer, key), proba(item, key), atol=1.5e-6)


def predict_json(*args):
    out = CliRunner().invoke(cli, ["predict", "--format", "json", *map(str, args)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------- predictions

def test_predictions_equal_the_predictor_and_skinfeat_predict(server, pool, images):
    from skinfeat.imaging.images import decode
    from skinfeat.model.predictor import Predictor

    model = Predictor(pool)
    want = model.probabilities([decode(p) for p in images])
    cli_items = predict_json("--model", pool, *images)
    for path, expected, item in zip(images, want, cli_items):
        data = Path(path).read_bytes()
        status, form, _ = server.predict(data)
        assert status == 200, form
        status, raw, _ = server.call("/predict", data, "image/jpeg")
        assert status == 200, raw
        assert form == raw
        np.testing.assert_allclose(proba(form), expected, atol=1e-6)
        same_answer(form, item)  # the JSON of `skinfeat predict --format json`, top 3 and all seven
    assert len(form["top"]) == 3 and set(form["probabilities"]) == set(CLASSES)
    status, answer, _ = server.predict(Path(images[0]).read_bytes(), query="?top_k=7")
    assert status == 200 and len(answer["top"]) == 7


def test_tta_is_applied_as_predict_does(pool, images):
    s = Server(pool, tta="multiscale", workers=1)
    try:
        status, answer, _ = s.predict(Path(images[0]).read_bytes())
    finally:
        s.close()
    assert status == 200, answer
    want = predict_json("--model", pool, "--tta", "multiscale", images[0])[0]
    np.testing.assert_allclose(proba(answer), proba(want), atol=1e-6)
    plain = proba(predict_json("--model", pool, images[0])[0])
    assert np.abs(proba(answer) - plain).max() > 1e-4  # the views did change it


def test_health_model_and_page(server, pool):
    assert server.call("/health")[:2] == (200, {"status": "ok"})
    status, model, _ = server.call("/model")
    assert status == 200
    assert model["head"] == "logreg" and model["kind"] == "model" and model["metadata"] == []
    assert [c["class"] for c in model["classes"]] == list(CLASSES) and model["classes"][0]["name"] == "melanoma"
    assert model["backbone"]["feature_dim"] == 9 and model["training"]["n_images"] == 28
    training = model["training"]  # the CV figure rounded, with its lesion-grouped interval
    assert training["cv_bmca"] == round(training["cv_bmca"], 4)
    low, high = training["cv_bmca_interval"]
    assert low <= training["cv_bmca"] <= high
    status, page, headers = server.call("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "not a diagnosis" in page.lower() and 'name="image"' in page and "predict" in page


def test_a_model_fitted_with_metadata_takes_the_form_fields_or_refuses(pool, images, ham10000, tmp_path):
    from skinfeat.model.predictor import Predictor
    from skinfeat.runs.fit import run_fit

    features = Path(pool).parent / "features.h5"
    model_dir = run_fit(str(features), "logreg", cv=2, out=tmp_path / "meta", runs=tmp_path / "runs",
                        metadata=META)["model_dir"]
    s = Server(model_dir, workers=1)
    try:
        data = Path(images[0]).read_bytes()
        status, answer, _ = s.predict(data)
        assert status == 400 and "fitted with metadata (age, sex, localization)" in answer["error"]
        assert "form fields" in answer["error"]
        status, answer, _ = s.predict(data, {"age": "abc", "sex": "male", "localization": "back"})
        assert status == 400 and "abc" in answer["error"], answer
        fields = {"age": "55", "sex": "male", "localization": "back"}
        status, answer, _ = s.predict(data, fields)
        status2, raw, _ = s.call("/predict?age=55&sex=male&localization=back", data, "image/jpeg")
        assert s.call("/model")[1]["metadata"] == list(META)
        status3, odd, _ = s.predict(data, dict(fields, localization="moon"))
        assert status3 == 200 and odd["warnings"] == ["localization 'moon' is a category the model never saw in "
                                                      "training; predicted as unknown"]
        assert "warnings" not in answer
    finally:
        s.close()
    assert status == 200 and status2 == 200 and answer == raw
    model = Predictor(model_dir)
    from skinfeat.imaging.images import decode

    want = model.probabilities([decode(images[0])], metadata={k: [v] for k, v in fields.items()})[0]
    np.testing.assert_allclose(proba(answer), want, atol=1e-6)
    csv = tmp_path / "meta.csv"
    csv.write_text(f"image_id,age,sex,localization\n{Path(images[0]).stem},55,male,back\n")
    np.testing.assert_allclose(proba(answer), proba(predict_json("--model", model_dir, "--metadata", csv,
                                                                 images[0])[0]), atol=1e-6)


@pytest.mark.slow
def test_a_real_backbone_model_answers_as_predict(skinfeat_home, ham10000, images):
    model = lite0_model(skinfeat_home, ham10000)["model"]
    s = Server(model, workers=2)
    try:
        answers = [s.predict(Path(p).read_bytes())[1] for p in images[:3]]
    finally:
        s.close()
    for answer, want in zip(answers, predict_json("--model", model, *images[:3])):
        same_answer(answer, want)


def test_concurrent_requests_are_each_answered_right(server, pool, images):
    want = {Path(p).name: proba(item) for p, item in zip(images, predict_json("--model", pool, *images))}
    jobs = [images[i % len(images)] for i in range(96)]
    with ThreadPoolExecutor(8) as workers:
        answers = list(workers.map(lambda p: (p, server.predict(Path(p).read_bytes(), name=Path(p).name)), jobs))
    for path, (status, answer, _) in answers:
        assert status == 200, answer
        np.testing.assert_allclose(proba(answer), want[Path(path).name], atol=1e-6)


def test_multipart_bodies_keep_every_byte(images):
    """Line ends, lone CRs and boundary-like lines inside a file survive the parser."""
    from skinfeat.apps.serve import _multipart

    rng = np.random.default_rng(0)
    files = [Path(images[0]).read_bytes(), rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
             b"\r\n\r\n", b"\r", b"\n--x\r\n--", b"a\r\n"]
    for data in files:
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="age"\r\n\r\n55\r\n--{boundary}\r\n'
                f'Content-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n').encode() + data \
            + f"\r\n--{boundary}--\r\n".encode()
        form = _multipart(f"multipart/form-data; boundary={boundary}", body)
        assert form == {"age": (None, b"55"), "image": ("x.jpg", data)}


# ----------------------------------------------------------------------------- bad requests

def _bomb():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buf, "PNG")  # 90 M pixels in a few kB
    return buf.getvalue()


# skinfeat.imaging.images silences PIL's warning once per process; pytest restores the filters after each test
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case, status, message", [
    ("not an image", 400, "upload 'lesion.jpg' is not an image (not JPEG"),
    ("truncated JPEG", 400, "upload 'lesion.jpg' is a damaged image"),
    ("decompression bomb", 400, "decompression bomb"),
    ("empty file", 400, "zero-byte"),
    ("no image field", 400, "no field 'image'"),
    ("empty raw body", 400, "request body is empty"),
    ("too large", 413, "more than the 1,048,576 bytes"),
    ("bad top_k", 400, "top_k '9'"),
    ("wrong path", 404, "no such page '/predictions'"),
    ("wrong method", 405, "GET /predict is not served"),
    ("post to the page", 405, "POST /health is not served"),
])
def test_bad_requests_are_json_errors_and_the_server_stays_healthy(server, images, case, status, message):
    jpeg = Path(images[0]).read_bytes()
    send = {
        "not an image": lambda: server.predict(b"hello, this is text"),
        "truncated JPEG": lambda: server.predict(jpeg[:len(jpeg) // 2]),
        "decompression bomb": lambda: server.predict(_bomb()),
        "empty file": lambda: server.predict(b""),
        "no image field": lambda: server.predict(jpeg, field="file"),
        "empty raw body": lambda: server.call("/predict", b"", "image/jpeg"),
        "too large": lambda: server.call("/predict", jpeg * (2**21 // len(jpeg)), "image/jpeg"),
        "bad top_k": lambda: server.predict(jpeg, query="?top_k=9"),
        "wrong path": lambda: server.call("/predictions", jpeg, "image/jpeg"),
        "wrong method": lambda: server.call("/predict"),
        "post to the page": lambda: server.call("/health", b"x", "text/plain"),
    }[case]
    got, answer, headers = send()
    assert got == status and message in answer["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert "remove it or pass images only" not in answer["error"]  # the CLI's advice, not an upload's
    assert server.call("/health")[:2] == (200, {"status": "ok"})
    ok, good, _ = server.predict(jpeg)
    assert ok == 200 and len(good["top"]) == 3


# ----------------------------------------------------------------------------- the command

def test_command_line_errors_are_one_line(pool, tmp_path):
    run = lambda *a: CliRunner().invoke(cli, ["serve", *map(str, a)], catch_exceptions=False)  # noqa: E731
    assert "does not exist" in error_line(run("--model", tmp_path / "missing"), 1, alone=True)
    assert "'sideways' is unknown" in error_line(run("--model", pool, "--tta", "sideways"), 2, alone=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        line = error_line(run("--model", pool, "--port", taken.getsockname()[1]), 1)
    assert "cannot listen on 127.0.0.1:" in line and "--port" in line


def test_skinfeat_serve_runs_until_ctrl_c(pool, images):
    """The real command in its own process: it says where it listens, answers, and
    stops on SIGINT (Ctrl-C) with exit 0 and no traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # started as a non-interactive shell starts a background job: SIGINT ignored at startup
    proc = subprocess.Popen([sys.executable, "-m", "skinfeat", "serve", "--model", pool, "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stderr.readline()
        assert line.startswith(f"serving {pool} on http://127.0.0.1:"), line
        url = line.split(" on ")[1].split()[0]
        with urllib.request.urlopen(url + "health", timeout=30) as answer:
            assert json.loads(answer.read()) == {"status": "ok"}
        req = urllib.request.Request(url + "predict", Path(images[0]).read_bytes(), {"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=30) as answer:
            assert len(json.loads(answer.read())["top"]) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        log = proc.stderr.read()
        assert "Traceback" not in log
        lines = [line for line in log.splitlines() if line.startswith("127.0.0.1 ")]  # one line per request
        assert [line.split()[1:4] for line in lines] == [["GET", "/health", "200"], ["POST", "/predict", "200"]]
        assert all(line.endswith(" ms") for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_uploads_cut_off_midway_and_slow_uploads_leave_the_server_answering(server, images):
    """What bench_serve.py does for minutes, on a short budget: clients that hang up
    mid-upload, and one that sends its image in slow pieces."""
    from devtools.raw_http import raw_post

    port = int(server.url.rsplit(":", 1)[1])
    jpeg = Path(images[0]).read_bytes()
    status, want, _ = server.call("/predict", jpeg, "image/jpeg")
    assert status == 200
    for _ in range(5):
        assert raw_post(port, jpeg[:len(jpeg) // 2], len(jpeg)) is None
    got = raw_post(port, jpeg, len(jpeg), pause=0.1, chunks=10)  # about a second to upload
    assert got == (200, want)
    assert server.call("/health")[:2] == (200, {"status": "ok"})
    with ThreadPoolExecutor(4) as pool:  # and the next clients are answered as before
        answers = list(pool.map(lambda _: server.call("/predict", jpeg, "image/jpeg")[1], range(4)))
    assert answers == [want] * 4
