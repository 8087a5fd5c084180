"""Paper tables: published rows from papers.yaml beside ours, every row naming its feature extractor."""
import csv
import io
import json

import numpy as np
import pytest
import yaml
from conftest import table_rows
from PIL import Image

from diffzoo.params import paths, validate
from diffzoo.report.published import PAPERS_YAML, TABLES, load_papers
from diffzoo.report.tables import COLUMNS, OURS_ONLY, published_rows, render
from diffzoo.commands.report import report


def test_published_numbers_are_the_reference_file():
    """The project's copy of the published numbers is the shared reference, unchanged."""
    assert load_papers()["dit"]["table4_256"]["XL/2"] == {"gflops": 118.64, "fid50k": 19.47}
    assert yaml.safe_load(PAPERS_YAML.read_text())["dit_moe"]["imagenet256_xl2_guided"]["fid"] == 1.72


@pytest.mark.parametrize("table", TABLES)
def test_every_table_has_rows_with_sources(table):
    rows = published_rows(table)
    if table in OURS_ONLY:
        assert rows == []
        return
    assert rows and all(r["source"] and r["features"] == "inception (ADM suite)" for r in rows)


def test_dit_table4_rows():
    rows = {r["model"]: r for r in published_rows("dit_table4")}
    assert len(rows) == 12
    assert rows["DiT-B/4"]["fid"] == 68.38 and rows["DiT-B/4"]["gflops"] == 5.56
    assert rows["DiT-S/8"]["params"] == 33148160


def test_report_puts_ours_beside_published(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {"data": {"path": "/data/ILSVRC2012_img_train.tar"}, "report": {"tables": ["dit_table4"]}, "experiments": {
        "b4": {"model": "DiT-B/4", "model_args": {}, "objective": "ddpm", "train": {}, "sample": {}}}}
    params = validate(raw)
    p = paths(params, "b4")
    for path, obj in [(p["metrics"], {"fid": 70.5, "sfid": 9.1, "inception_score": 20.0, "precision": 0.5,
                                      "recall": 0.6, "class_accuracy": None,
                                      "feature_extractor": {"name": "inception"}}),
                      (p["train_metrics"], {"steps": 400000, "params": 130475648, "gflops": 5.57,
                                            "images_seen": 102400000, "gpu_hours": 123.4})]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
    p["train_log"].write_text("step\tloss\n1\t0.5\n2\t0.4\n")
    # The overview's inputs: the images stage's shards and the run's samples (ADM npz with labels).
    rng = np.random.default_rng(0)
    images = paths(params)["images"]
    images.mkdir(parents=True)
    np.savez(images / "shard-00000.npz", images=rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(30) % 3)
    (images / "index.json").write_text(json.dumps({"num_images": 30, "classes": ["a", "b", "c"],
                                                    "shards": ["shard-00000.npz"]}))
    p["samples"].parent.mkdir(parents=True)
    np.savez(p["samples"], arr_0=rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), labels=np.arange(12) % 3)
    written = report(params, tmp_path / "results")
    md = (tmp_path / "results/tables/dit_table4.md").read_text()
    firsts = [row[:3] for row in table_rows(md)]
    assert ["DiT Table 4", "", "DiT-B/4"] in firsts and firsts[-1] == ["diffzoo", "b4", "DiT-B/4"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "results/tables/dit_table4.csv").read_text())))
    assert len(rows) == 13
    ours = rows[-1]
    assert ours["fid"] == "70.5" and ours["features"] == "inception" and ours["gpu_hours"] == "123.4"
    assert (tmp_path / "results/tables/dit_table4.tex").read_text().count("\\\\") == 14
    assert all(w.stat().st_size > 0 for w in written)
    overview = Image.open(tmp_path / "results/plots/samples.png")
    assert overview.height >= 512 and overview.width > overview.height  # real data and b4 side by side


def test_render_formats():
    out = render([{"source": "x", "params": 675129632, "precision": 0.8265, "fid": 2.274, "train_images": 1.79e9}])
    (row,) = table_rows(out["md"])
    cells = dict(zip(COLUMNS, row, strict=True))
    assert (cells["params"], cells["precision"], cells["fid"], cells["train_images"]) == ("675.1M", "0.827", "2.27",
                                                                                       "1.79B")
    assert cells["recall"] == "-" and out["csv"].splitlines()[1].startswith("x,,,")  # CSV: raw values, empty
    assert out["tex"].count("\\\\") == 2 and "\\midrule" in out["tex"]


def test_render_escapes_latex_and_keeps_markdown_cells():
    """A model name with LaTeX's specials stays one cell in both formats."""
    out = render([{"source": "diffzoo", "experiment": "a_b", "model": "x & y 5%", "fid": 70.5}])
    assert r"a\_b & x \& y 5\% &" in out["tex"]
    assert table_rows(out["md"])[0][:3] == ["diffzoo", "a_b", "x & y 5%"]
    assert table_rows(out["md"])[0][COLUMNS.index("fid")] == "70.50"


def test_fid_vs_gflops_keeps_a_readable_axis_for_near_equal_models(tmp_path):
    """Two models of nearly the same Gflops once gave an axis from 0.003412 to 0.003416: the axis spans
    at least a factor 16 around them."""
    from diffzoo.report.tables import plot_fid_vs_gflops

    rows = [{"model": m, "experiment": e, "objective": "ddpm", "source": "diffzoo", "features": "classifier",
             "fid": fid, "gflops": g, "cfg": 1.0}
            for m, e, fid, g in (("DiT-S/2", "dit-s2", 12.0, 0.003412), ("DiS-S/2", "dis-s2", 15.0, 0.003416))]
    low, high = plot_fid_vs_gflops(rows, tmp_path / "f.png")
    assert low < 0.003412 < 0.003416 < high and high / low >= 16
    assert (tmp_path / "f.png").stat().st_size > 10_000
