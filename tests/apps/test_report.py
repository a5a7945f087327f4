"""``skinfeat report``: one self-contained HTML file, checked in a real headless
browser with networking off (Debian ``chromium``)."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from model_factory import pool_model
from skinfeat.cli import cli
from skinfeat.core.errors import DataError
from skinfeat.apps.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(skinfeat_home, ham10000):
    """The runs folder of a fitted model (record, out-of-fold probabilities, features)."""
    from pathlib import Path

    return Path(pool_model(skinfeat_home, ham10000)["record"]).parent


def browser_dom(page, tmp_path):
    """The DOM after load, as headless Chromium with no network renders ``page``."""
    assert CHROMIUM, "the report test needs Chromium: apt-get install -y chromium"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--no-first-run", "--disable-extensions", "--disable-background-networking", "--disable-sync",
         "--disable-component-update", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_offline_with_leaderboard_and_every_picture(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("SKINFEAT_RUNS", str(runs))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--out", str(out), "--map", "pca"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}: 1 run, best ") and result.stdout.rstrip().endswith("4 figures")
    text = out.read_text()
    assert not re.search(r"(src|href)=['\"](?!data:)", text), "the page must not load anything"
    dom = browser_dom(out, tmp_path)
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-images="4"' in body and 'data-rendered="4"' in body, body
    board = re.search(r"<table id=\"leaderboard\">(.*?)</table>", dom, re.S).group(1)
    assert board.count("<tr") == 2 and "BMCA" in board and "logreg" in board
    for title in ("confusion matrix", "ROC and precision-recall", "reliability", "pca feature map"):
        assert f'alt="{title}"' in dom
    for png in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text):
        with Image.open(io.BytesIO(base64.b64decode(png))) as im:
            assert min(im.size) > 300 and np.asarray(im.convert("L")).std() > 10  # drawn, not blank


def test_runs_without_stored_predictions_or_features_say_what_is_missing(runs, tmp_path):
    copy = shutil.copytree(runs, tmp_path / "runs")
    for oof in copy.glob("*.oof.npz"):
        oof.unlink()
    record = next(copy.glob("*.json"))
    data = json.loads(record.read_text())
    data["features"]["path"] = str(tmp_path / "moved.h5")
    record.write_text(json.dumps(data))
    result = write_report(tmp_path / "r.html", runs=copy, map_method="pca")
    assert result.figures == ["confusion matrix"]
    assert any("no stored out-of-fold probabilities" in n for n in result.notes)
    assert any("moved.h5 is not here" in n for n in result.notes)
    assert "no stored out-of-fold probabilities" in (tmp_path / "r.html").read_text()


def test_no_runs_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINFEAT_RUNS", str(tmp_path / "empty"))
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path / "r.html")], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: no runs recorded in {tmp_path / 'empty'}; fit a head first "
                                     "(`skinfeat fit --head logreg --features FILE`) or point $SKINFEAT_RUNS "
                                     "at the runs folder")
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(DataError):
        write_report(tmp_path / "r.html", runs=tmp_path / "empty")
