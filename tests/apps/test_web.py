"""``skinfeat export --format web``: the static site, loaded in real headless
Chromium (networking off, served by a local http.server: browsers run no Wasm
from file://), against the Predictor on real HAM10000 images."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from model_factory import lite0_model, pool_model

from devtools.chromium import Browser, Served, chromium
from skinfeat.cli import cli
from skinfeat.imaging.images import decode
from skinfeat.model.predictor import Predictor

N_IMAGES = 12
MODELS = {"lite0-logreg": lambda home, ham: lite0_model(home, ham),
          "pool-softmax": lambda home, ham: pool_model(home, ham, "softmax", operating_point="mel:sens=0.9")}


def export_web(model, out):
    return CliRunner().invoke(cli, ["export", "--model", str(model), "--format", "web", "--out", str(out)])


def ham_images(ham10000, n=N_IMAGES):
    """``n`` real HAM10000 JPEGs, none of them among the models' training images (the first few per class)."""
    return sorted(ham10000.glob("*/*.jpg"))[500:500 + n]


@pytest.fixture(scope="module", params=sorted(MODELS))
def served(request, skinfeat_home, ham10000, tmp_path_factory):
    """(model dir, http root, Served, Browser on the page): the site of a real model,
    with the test images under img/ beside it (JPEGs, and PNGs of their pixels as
    `predict` decodes them)."""
    assert chromium(), "the web test needs Chromium: apt-get install -y chromium"
    model = Path(MODELS[request.param](skinfeat_home, ham10000)["model"])
    root = tmp_path_factory.mktemp("web")
    result = export_web(model, root / "site")
    assert result.exit_code == 0, result.output
    images = root / "site" / "img"  # served from the page's own origin
    images.mkdir()
    from PIL import Image

    for path in ham_images(ham10000):
        shutil.copyfile(path, images / path.name)
        pixels = np.round(decode(path) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{path.stem}.png")
    served = Served(root / "site")
    browser = Browser()
    try:
        browser.goto(served.url + "index.html")
        browser.evaluate("skinfeat.ready.then(() => true)")
        yield model, root / "site", served, browser
    finally:
        browser.close()
        served.close()


def page_and_predictor(served, suffix):
    model, site, _, browser = served
    predictor = Predictor(model)
    pairs = []
    for path in sorted((site / "img").glob(f"*{suffix}")):
        page = browser.evaluate(f"skinfeat.predictUrl('img/{path.name}')")
        proba, ood = predictor.assess([path])
        want = predictor.prediction(path, proba[0], ood[0])
        assert np.abs(np.array(page["calibrated"]) - want.probability).max() < 1e-4  # what the page shows
        assert abs(page["ood"] - want.ood) <= 1e-3 * max(1.0, want.ood)  # the out-of-distribution score
        pairs.append((np.array(page["adjusted"]), want.adjusted, np.array(page["trained"]), want.proba))
    assert len(pairs) == N_IMAGES
    return pairs


def test_page_predicts_as_predict_on_png_images(served):
    """PNGs decode to the same pixels everywhere: resizing, backbone and head match predict's."""
    for adjusted, want, trained, want_trained in page_and_predictor(served, ".png"):
        assert np.abs(adjusted - want).max() < 1e-4 and np.abs(trained - want_trained).max() < 1e-4
        assert np.argmax(adjusted) == np.argmax(want)


def test_page_resizes_as_predict_does(served):
    model, site, _, browser = served
    path = next((site / "img").glob("*.png"))
    page = browser.evaluate(f"skinfeat.inspect('img/{path.name}')")
    want = Predictor(model).load_image(path)
    assert np.abs(np.array(page["resized"], np.float32).reshape(want.shape) - want).max() < 1e-5


def test_page_predicts_as_predict_on_jpeg_images(served):
    """jpeg.js decodes as predict does (libjpeg-turbo's fast IDCT and fancy upsampling),
    not as the browser does (the accurate IDCT: pixels 3/255 and probabilities ~0.07 apart)."""
    for adjusted, want, trained, want_trained in page_and_predictor(served, ".jpg"):
        assert np.abs(adjusted - want).max() < 1e-4 and np.abs(trained - want_trained).max() < 1e-4
        assert np.argmax(adjusted) == np.argmax(want)


@pytest.mark.parametrize("kind, options, decoder", [
    ("grey", {"quality": 90}, "skinfeat"), ("444", {"quality": 95, "subsampling": 0}, "skinfeat"),
    ("422", {"quality": 90, "subsampling": 1}, "skinfeat"), ("restarts", {"quality": 90, "restart_marker_blocks": 3},
                                                             "skinfeat"),
    ("progressive", {"quality": 90, "progressive": True}, "browser")])
def test_page_decodes_other_jpeg_kinds(served, kind, options, decoder):
    """Grey, 4:4:4 and 4:2:2 JPEGs and restart markers decode exactly as predict's; what
    jpeg.js does not handle (progressive) goes to the browser's decoder (pixels up to a few /255 apart)."""
    from PIL import Image

    model, site, _, browser = served
    source = sorted((site / "img").glob("*.jpg"))[0]
    path = site / "img" / f"kind-{kind}.jpeg"
    image = Image.open(source)
    (image.convert("L") if kind == "grey" else image).save(path, **options)
    page = browser.evaluate(f"skinfeat.inspect('img/{path.name}')")
    want = decode(path)
    diff = np.abs(np.array(page["decoded"], np.float32).reshape(want.shape) - want).max() * 255
    assert page["decoder"] == decoder and (diff < 1e-3 if decoder == "skinfeat" else diff <= 10), diff
    path.unlink()


def open_with_image(served, url):
    """Open the page with ?image=URL; its final state (done or error)."""
    _, _, server, browser = served
    browser.goto(f"{server.url}index.html?image={url}")
    return browser.evaluate("new Promise(r => { const t = setInterval(() => { const s = document.body.dataset.state; "
                            "if (s === 'done' || s === 'error') { clearInterval(t); r(s); } }, 20); })")


@pytest.mark.parametrize("name, content, words", [
    ("notes.jpg", b"not an image", "cannot be used"),
    ("tiny.png", "tiny", "is 5 x 5 pixels, too small; expected at least 8 pixels on each side"),
])
def test_page_says_why_an_image_cannot_be_used(served, name, content, words):
    from PIL import Image

    _, site, _, browser = served
    path = site / "img" / name
    if content == "tiny":
        Image.new("RGB", (5, 5)).save(path)
    else:
        path.write_bytes(content)
    try:
        assert open_with_image(served, f"img/{name}") == "error"
        status = browser.evaluate("document.getElementById('status').textContent")
        assert status.startswith("This image cannot be used: it ") and words in status, status
        assert browser.evaluate("document.getElementById('result').hidden")
    finally:
        path.unlink()


def test_page_opened_from_a_file_says_to_serve_it(served, tmp_path):
    _, site, _, _ = served
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                          "--no-first-run", "--virtual-time-budget=3000", "--dump-dom", (site / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-state="error"' in dom and "This page must be served over http" in dom


def test_query_image_fills_the_predictions_table(served):
    model, site, server, browser = served
    path = sorted((site / "img").glob("*.png"))[0]
    server.asked.clear()
    assert open_with_image(served, f"img/{path.name}") == "done"
    dom = browser.evaluate("document.documentElement.outerHTML")
    table = re.search(r'<table id="predictions">(.*?)</table>', dom, re.S).group(1)
    rows = dict(re.findall(r'<tr data-class="(\w+)" data-probability="(0\.\d{6,})"', table))
    predictor = Predictor(model)
    proba, ood = predictor.assess([path])
    want = predictor.prediction(path, proba[0], ood[0])
    assert sorted(rows) == sorted(predictor.manifest["classes"])
    for code, name, probability in want.top(7):
        assert abs(float(rows[code]) - probability) < 1e-4
    top = re.search(r'<table id="top">(.*?)</table>', dom, re.S).group(1)
    assert top.count("<tr") == 3 and want.top(1)[0][1] in top  # the full name of the first choice
    assert f'data-class="{want.decision}"' in re.search(r'<span id="decision"[^>]*>', dom).group(0)
    refer = re.search(r'<p id="refer"[^>]*>', dom).group(0)
    if predictor.operating_point is None:
        assert "hidden" in refer
    else:  # the model's referral rule, as predict applies it
        assert f'data-refer="{str(want.refer).lower()}"' in refer
    unusual = re.search(r'<p id="unusual"[^>]*>', dom).group(0)  # the out-of-distribution flag, as predict's
    assert f'data-unusual="{str(want.unusual).lower()}"' in unusual and ("hidden" in unusual) != want.unusual
    assert "not a diagnosis" in dom and predictor.manifest["backbone"]["module"].split("/")[-1] in dom
    for asked in server.asked:  # everything the page loaded is in the site
        assert (site / asked.split("?")[0].lstrip("/")).is_file(), asked


def test_site_needs_nothing_from_outside(served):
    _, site, _, _ = served
    for name in ("index.html", "app.js"):
        text = (site / name).read_text()
        assert not re.search(r"(src|href)=['\"](https?:)?//", text) and "import(" not in text, name
    assert (site / "vendor" / "litertjs" / "LICENSE").is_file()
    assert (site / "vendor" / "litertjs" / "litert_wasm_internal.wasm").read_bytes()[:4] == b"\0asm"
    info = json.loads((site / "model" / "head.json").read_text())
    assert info["input_size"] and info["resize"] in ("crop", "pad", "squash")


# ----------------------------------------------------------------------------- bad inputs

@pytest.fixture(scope="module")
def pool(skinfeat_home, ham10000):
    return Path(pool_model(skinfeat_home, ham10000)["model"])


def edited(model, tmp_path, change):
    """A copy of ``model`` whose model.json ``change`` edited."""
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    manifest = json.loads((copy / "model.json").read_text())
    change(manifest)
    (copy / "model.json").write_text(json.dumps(manifest))
    return copy


def one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("Error: ")
    for word in words:
        assert word in result.output, result.output


@pytest.mark.parametrize("change, why", [
    (lambda m: m["backbone"].update(lesion="auto"), "crops the lesion"),
    (lambda m: m.update(metadata={"columns": ["age", "sex"], "age": {"mean": 50.0, "std": 15.0},
                                  "sex": {"categories": ["female", "male"]}}), "metadata (age, sex)"),
    (lambda m: m.update(parts=[{"backbone": m["backbone"]}, {"backbone": m["backbone"]}]), "several backbones"),
])
def test_models_the_page_cannot_run_are_refused(pool, tmp_path, change, why):
    model = edited(pool, tmp_path, change)
    result = export_web(model, tmp_path / "site")
    one_line_error(result, str(model), why, "cannot be exported as a web page")
    assert not (tmp_path / "site").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_lightgbm_model_is_refused(skinfeat_home, ham10000, tmp_path):
    model = pool_model(skinfeat_home, ham10000, "lightgbm")["model"]
    one_line_error(export_web(model, tmp_path / "site"), "its head is 'lightgbm'", "logreg or softmax head")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_missing_out_are_usage_errors(pool, tmp_path):
    result = CliRunner().invoke(cli, ["export", "--model", str(pool), "--format", "onnx", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "'onnx' is not one of 'tflite', 'web'" in result.output
    result = CliRunner().invoke(cli, ["export", "--model", str(pool), "--format", "web"])
    assert result.exit_code == 2 and "--format web takes --out DIR" in result.output
    assert list(tmp_path.iterdir()) == []


def test_out_folder_of_other_files_is_refused(pool, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "notes.txt").write_text("mine")
    result = export_web(pool, tmp_path / "site")
    assert result.exit_code == 2 and "is a folder with other files in it" in result.output
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["notes.txt"]


def test_site_is_replaced_by_a_new_export(pool, tmp_path):
    assert export_web(pool, tmp_path / "site").exit_code == 0
    result = export_web(pool, tmp_path / "site")
    assert result.exit_code == 0 and result.output.startswith(f"wrote {tmp_path / 'site'}: 14 files")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_out_on_a_read_only_place(pool, tmpfs):
    read_only = tmpfs("1m", "read-only")
    result = export_web(pool, read_only / "site")
    one_line_error(result, f"cannot write the web page to {read_only / 'site'}", "read-only")


def test_out_on_a_full_disk_leaves_nothing(pool, tmpfs):
    small_disk = tmpfs("400k")
    result = export_web(pool, small_disk / "site")
    one_line_error(result, f"cannot write the web page to {small_disk / 'site'}", "the disk is full")
    assert list(small_disk.iterdir()) == []
