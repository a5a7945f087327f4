"""``compare --best`` when the best run needs metadata: the model it saves holds the
best image-only run too, so a photo alone is classified, and every output says which
inputs answered (``skinfeat.runs.save``, ``Predictor.fallback``)."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from helpers import Server, error_line, run
from model_factory import PER_CLASS, ham_subset, pool_model

from skinfeat.core.classes import CLASSES

META = "age,sex,localization"
WITH_META = "image+age+sex+localization"  # the encoding's columns, in order


@pytest.fixture(scope="module")
def best(skinfeat_home, ham10000, tmp_path_factory):
    """A runs folder with an image-only run and a shift-checked metadata run (so the
    metadata run ranks first), and the model `compare --best` saved from it."""
    features = pool_model(skinfeat_home, ham10000)["features"]
    root = tmp_path_factory.mktemp("best")
    env = {"SKINFEAT_RUNS": str(root / "runs"), "SKINFEAT_FEATURES": str(root / "features")}  # module scope: set here
    image = run("fit", "--head", "logreg", "--features", features, "--cv", "2", "-q", env=env)
    meta = run("fit", "--head", "logreg", "--features", features, "--cv", "2", "-q", "--metadata", META,
               "--data", ham10000, "--shift", "pad", env=env)
    assert image.exit_code == 0 and meta.exit_code == 0, image.output + meta.output
    saved = run("compare", "--best", root / "best", env=env)
    assert saved.exit_code == 0, saved.output
    record = {name: json.loads(Path(r.stdout.split("record: ")[1].split()[0]).read_text())
              for name, r in (("image", image), ("meta", meta))}
    return {"model": root / "best", "record": record, "env": env, "root": root}


def unseen(ham10000, n=3):
    return [str(p) for p in ham_subset(ham10000, per_class=1, skip=PER_CLASS).paths[:n]]


def test_the_best_model_holds_the_best_image_only_run(best):
    manifest = json.loads((best["model"] / "model.json").read_text())
    assert manifest["training"]["run_id"] == best["record"]["meta"]["run_id"]
    assert manifest["metadata"]["columns"] == ["age", "sex", "localization"]
    assert manifest["fallback"]["run_id"] == best["record"]["image"]["run_id"]
    inner = json.loads((best["model"] / manifest["fallback"]["dir"] / "model.json").read_text())
    assert inner["metadata"] is None and inner["training"]["run_id"] == best["record"]["image"]["run_id"]


def test_a_photo_alone_is_answered_by_the_image_only_model_and_says_so(best, ham10000, tmp_path):
    photos = unseen(ham10000)
    table = run("predict", "--model", best["model"], *photos)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()[1:]
    assert len(lines) == 3 and all(line.endswith("[image]") for line in lines)
    alone = json.loads(run("predict", "--model", best["model"], *photos, "--format", "json").stdout)
    direct = json.loads(run("predict", "--model", best["model"] / "fallback", *photos, "--format", "json").stdout)
    assert [a["inputs"] for a in alone] == ["image"] * 3
    assert [a["probabilities"] for a in alone] == [d["probabilities"] for d in direct]
    # Metadata for one image only: that one is answered with it, the others by the image alone.
    first = Path(photos[0]).stem
    rows = [r for r in csv.DictReader(open(Path(ham10000) / "HAM10000_metadata.csv")) if r["image_id"] == first]
    table_csv = tmp_path / "one.csv"
    with open(table_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    mixed = run("predict", "--model", best["model"], *photos, "--metadata", table_csv, "--format", "csv")
    assert mixed.exit_code == 0, mixed.output
    got = {r["image"]: r["inputs"] for r in csv.DictReader(io.StringIO(mixed.stdout))}
    assert got == {Path(p).stem: WITH_META if Path(p).stem == first else "image" for p in photos}


def test_evaluate_on_data_without_metadata_scores_the_image_only_model(best, ham10000, tmp_path):
    folder = tmp_path / "isic"
    (folder / "images").mkdir(parents=True)
    subset = ham_subset(ham10000, per_class=2, skip=PER_CLASS)
    lines = ["image," + ",".join(CLASSES)]
    for path, image_id, label in zip(subset.paths, subset.image_ids, subset.labels):
        shutil.copy(path, folder / "images")
        lines.append(image_id + "," + ",".join(str(int(c == label)) for c in range(len(CLASSES))))
    (folder / "truth.csv").write_text("\n".join(lines) + "\n")
    out = run("evaluate", "--model", best["model"], "--images", folder / "images", "--labels", folder / "truth.csv",
              "--no-progress", "--format", "json", env=best["env"])
    assert out.exit_code == 0, out.output
    assert "scoring the image-only model" in out.stderr
    result = json.loads(out.stdout)
    assert result["inputs"] == "image" and result["answered_by"] == str(best["model"] / "fallback")
    assert result["model_run_id"] == best["record"]["image"]["run_id"]  # the test column of the run that answered
    direct = run("evaluate", "--model", best["model"] / "fallback", "--images", folder / "images", "--labels",
                 folder / "truth.csv", "--no-progress", "--format", "json", "--no-record")
    assert json.loads(direct.stdout)["clean"]["bmca"] == result["clean"]["bmca"]


def test_serve_and_the_web_page_take_the_photo_alone(best, ham10000, tmp_path):
    s = Server(best["model"], workers=1)
    try:
        data = Path(unseen(ham10000, 1)[0]).read_bytes()
        status, alone, _ = s.predict(data)
        assert status == 200 and alone["inputs"] == "image", alone
        status, empty, _ = s.predict(data, {"age": "", "sex": "", "localization": ""})  # the page's empty form
        assert status == 200 and empty["inputs"] == "image" and empty["probabilities"] == alone["probabilities"]
        status, known, _ = s.predict(data, {"age": "55", "sex": "male", "localization": "back"})
        assert status == 200 and known["inputs"] == WITH_META
        status, partial, _ = s.predict(data, {"age": "55"})
        assert status == 400 and "has no sex, localization" in partial["error"]
        assert s.call("/model")[1]["metadata_optional"] is True
    finally:
        s.close()
    site = run("export", "--model", best["model"], "--format", "web", "--out", tmp_path / "site")
    assert site.exit_code == 0, site.output
    assert f"it runs {best['model'] / 'fallback'}, the image-only model" in site.stderr
    head = json.loads((tmp_path / "site" / "model" / "head.json").read_text())
    assert head["n_features"] == json.loads((best["model"] / "fallback" / "model.json").read_text())["backbone"][
        "feature_dim"]


def test_without_an_image_only_run_the_best_model_says_it_needs_metadata(skinfeat_home, ham10000, tmp_path):
    features = pool_model(skinfeat_home, ham10000)["features"]
    env = {"SKINFEAT_RUNS": str(tmp_path / "runs")}
    assert run("fit", "--head", "logreg", "--features", features, "--cv", "2", "-q", "--metadata", META,
               env=env).exit_code == 0
    saved = run("compare", "--best", tmp_path / "best", env=env)
    assert saved.exit_code == 0 and "cannot classify an image alone" in saved.stderr, saved.output
    line = error_line(run("predict", "--model", tmp_path / "best", *unseen(ham10000, 1)))
    assert "was fitted with metadata" in line and "--fallback DIR" in line
