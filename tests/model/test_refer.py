"""``fit --operating-point``: a referral threshold set on the out-of-fold predictions,
carried by the model, applied by predict and serve with its expected sensitivity and
specificity (the web page: tests/apps/test_web.py)."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import Server, error_line, run
from model_factory import PER_CLASS, ham_subset, pool_model

from skinfeat.core.classes import CLASSES
from skinfeat.core.intervals import Resamples
from skinfeat.core.operating import choose_point, parse_point, refer, task_score


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), y] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba, Resamples.draw(np.arange(n).astype(str), np.arange(n) % 3, grouped_by="lesion", n=200)


@pytest.mark.parametrize("text", ["mel:sens=0.9", "melanoma:sensitivity=0.8", "malignant:spec=0.89"])
def test_the_threshold_is_the_one_that_just_reaches_the_target(text):
    y, proba, resamples = _data()
    point = choose_point(y, proba, text, resamples)
    task, by, target = parse_point(text)
    positive = np.isin(y, [CLASSES.index(c) for c in point["positive_classes"]])
    score = task_score(proba, task)
    referred = refer(proba, point)
    sens, spec = referred[positive].mean(), (~referred[~positive]).mean()
    assert point["sensitivity"]["value"] == pytest.approx(sens) and point["specificity"]["value"] == pytest.approx(spec)
    assert point["sensitivity"]["low"] <= sens <= point["sensitivity"]["high"]
    higher = score[score > point["threshold"]]
    if by == "sensitivity":
        assert sens >= target
        if len(higher):  # the next threshold up misses the target: the highest that reaches it
            assert (score[positive] >= higher.min()).mean() < target
    else:
        assert spec >= target
        lower = score[score < point["threshold"]]
        if len(lower):  # the next threshold down misses it: the lowest that reaches it
            assert (score[~positive] < lower.max()).mean() < target


@pytest.mark.parametrize("text", ["mel", "mel:sens", "mel:sens=1.2", "mel:sens=0", "nv:sens=0.9", "mel:ppv=0.5"])
def test_a_bad_operating_point_is_a_usage_error(text, tmp_path, skinfeat_home, ham10000):
    with pytest.raises(ValueError, match="expected TASK:sens=X or TASK:spec=X"):
        parse_point(text)
    features = pool_model(skinfeat_home, ham10000)["features"]
    line = error_line(run("fit", "--head", "logreg", "--features", features, "--cv", "2", "--operating-point", text),
                      2)
    assert "--operating-point" in line and "e.g. mel:sens=0.95" in line
    assert not list(Path(tmp_path / "runs").glob("*.json"))


@pytest.fixture(scope="module")
def model(skinfeat_home, ham10000, tmp_path_factory):
    features = pool_model(skinfeat_home, ham10000)["features"]
    root = tmp_path_factory.mktemp("refer")
    out = root / "model"
    result = run("fit", "--head", "logreg", "--features", features, "--cv", "2", "--operating-point",
                 "mel:sens=0.75", "--out", out, "-q", env={"SKINFEAT_RUNS": str(root / "runs")})
    assert result.exit_code == 0, result.output
    assert "refer: melanoma (MEL) score >= " in result.stdout and "set for sensitivity 0.75" in result.stdout
    record = json.loads(Path(result.stdout.split("record: ")[1].split()[0]).read_text())
    return out, record


def test_the_model_carries_the_point_and_predict_applies_it(model, ham10000):
    out, record = model
    point = record["operating_point"]
    assert point["task"] == "melanoma" and point["sensitivity"]["value"] >= 0.75
    assert json.loads((out / "model.json").read_text())["training"]["operating_point"] == point
    photos = [str(p) for p in ham_subset(ham10000, per_class=2, skip=PER_CLASS).paths]
    result = run("predict", "--model", out, *photos, "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("refer: melanoma (MEL) score >= ")
    items = json.loads(result.stdout)
    want = [item["probabilities_as_trained"]["MEL"] >= point["threshold"] for item in items]
    assert [item["refer"] for item in items] == want and 0 < sum(want) < len(want)
    rows = list(csv.DictReader(io.StringIO(run("predict", "--model", out, *photos, "--format", "csv").stdout)))
    assert [r["refer"] for r in rows] == ["yes" if w else "no" for w in want]
    table = run("predict", "--model", out, *photos).stdout.splitlines()
    assert table[0].split()[:3] == ["image", "decision", "refer"]
    assert [line.split()[2] for line in table[1:]] == ["yes" if w else "no" for w in want]
    plain = run("predict", "--model", pool_model_dir(out), *photos[:1], "--format", "json").stdout
    assert "refer" not in json.loads(plain)[0]  # a model without a point says nothing of referral


def pool_model_dir(out):
    """The same head fitted without --operating-point, beside ``out``."""
    plain = out.with_name("plain")
    if not plain.exists():
        manifest = json.loads((out / "model.json").read_text())
        result = run("fit", "--head", "logreg", "--features", manifest["features"]["path"], "--cv", "2", "--out",
                     plain, "-q")
        assert result.exit_code == 0, result.output
    return plain


def test_serve_says_refer_and_its_rule(model, ham10000):
    out, record = model
    s = Server(out, workers=1)
    try:
        path = ham_subset(ham10000, per_class=1, skip=PER_CLASS).paths[0]
        status, answer, _ = s.predict(Path(path).read_bytes())
        item, = json.loads(run("predict", "--model", out, path, "--format", "json").stdout)
        assert status == 200 and answer["refer"] == item["refer"]
        summary = s.call("/model")[1]["operating_point"]
        assert summary["threshold"] == record["operating_point"]["threshold"] and "sensitivity" in summary["rule"]
    finally:
        s.close()
