"""Results a researcher can trust (issue 24): each Snakemake run reads its own params snapshot, and the
two engines agree on what an artifact is, both ways, on one workspace."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml
from PIL import Image
from test_workflow import env_for, jobs, make_project, read, sh, tiny_params, write_params


def _one_experiment(**train) -> dict:
    raw = tiny_params()
    raw["experiments"] = {"dit": raw["experiments"]["dit"]}
    raw["samplings"] = {}
    raw["train"].update(train)
    return raw


@pytest.mark.slow  # engine runs
def test_a_second_snakemake_call_during_a_run_changes_nothing_of_it(tmp_path):
    """During a run: params.yaml edited, `snakemake -n` to preview, and a second live call (refused by
    Snakemake's lock). The run's sample job still draws the run's number of samples, and the table's
    row says what was drawn (from the sample job's record, not from params.yaml as it is now). The run's
    results page is then looked at in a real headless browser (check_results_page)."""
    p = make_project(tmp_path / "during")
    raw = _one_experiment(steps=3000, ckpt_every=1000, log_every=100)  # ~30 s: long enough to act while it trains
    write_params(p, raw)
    first = subprocess.Popen(["snakemake", "--cores", "1"], cwd=p, env=env_for(p), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    log = p / "results/train/dit.tsv"
    deadline = time.time() + 600
    while not (log.is_file() and log.stat().st_size > 0) and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, "the run ended before the test could act during it:\n" + first.stdout.read()[-3000:]
    edited = yaml.safe_load(yaml.safe_dump(raw))
    edited["sample"]["num_samples"] = 16
    write_params(p, edited)
    sh(p, "snakemake", "-n", "--cores", "1")
    refused = subprocess.run(["snakemake", "--cores", "1"], cwd=p, env=env_for(p), capture_output=True, text=True)
    assert refused.returncode != 0 and "lock" in (refused.stdout + refused.stderr).lower()
    acted = time.time()
    out, _ = first.communicate(timeout=900)
    assert first.returncode == 0, out[-4000:]
    assert (p / "data/experiments/dit/model.safetensors").stat().st_mtime > acted, "acted after training ended"

    record = json.loads(read(p, "data/experiments/dit/samples.json"))
    assert record["num_samples"] == raw["sample"]["num_samples"] == 40
    with np.load(p / "data/experiments/dit/samples.npz") as f:
        assert len(f["arr_0"]) == 40
    row = next(line for line in read(p, "results/tables/default.md").splitlines() if "| dit " in line)
    assert "40 samples" in row and "16 samples" not in row
    check_results_page(p, tmp_path / "page.png")
    check_live_tracking(p / "logs/tensorboard/dit", steps=3000, every=500)
    # The edit is a change for the next run: it resamples, and only that (the edited file also has its
    # keys in another order, which means nothing: no retraining).
    assert jobs(sh(p, "snakemake", "-n", "--cores", "1")) == {("sample", "dit"), ("evaluate", "dit"), ("report", None)}


@pytest.mark.slow  # engine runs
def test_the_engines_agree_on_artifacts_both_ways_on_one_workspace(tmp_path):
    p = make_project(tmp_path / "both")
    write_params(p, _one_experiment())
    sh(p, "git", "init", "-q")
    lr = _one_experiment()["train"]["lr"]

    # A workspace Snakemake made: DVC has no record of it, `dvc status` says so (it once crashed on a
    # missing check file; `dvc repro --dry` still needs every DVC-only intermediate: treeverse/dvc#9818).
    sh(p, "snakemake", "--cores", "2")
    assert "train@dit" in sh(p, "dvc", "status")

    # DVC then makes everything; Snakemake at the same params takes DVC's artifacts as they are ...
    sh(p, "dvc", "repro")
    assert json.loads(read(p, "results/train/dit.json"))["engine"] == "dvc"
    assert "Nothing to be done" in sh(p, "snakemake", "-n", "--cores", "2")
    # ... and at another learning rate reruns what DVC made under the old one (it has no record of it).
    planned = sh(p, "snakemake", "-n", "--cores", "2", "--config", f"train={{lr: {lr / 2}}}")
    assert "job(s) to rerun, their outputs made by another engine" in planned and "train dit" in planned
    assert {("train", "dit"), ("sample", "dit"), ("evaluate", "dit")} <= jobs(planned)
    sh(p, "snakemake", "--cores", "2", "--config", f"train={{lr: {lr / 2}}}")
    assert json.loads(read(p, "results/train/dit.json"))["engine"] == "snakemake"

    # The other way: DVC's lock says lr, the workspace holds Snakemake's lr / 2 models: DVC reruns them
    # (here its run-cache restores its own lr models) and stamps them as its own again.
    assert "train@dit" in sh(p, "dvc", "status")
    assert jobs(sh(p, "dvc", "repro")) <= {("train", "dit"), ("sample", "dit"), ("evaluate", "dit"), ("report", None)}
    assert json.loads(read(p, "results/train/dit.json"))["engine"] == "dvc"
    assert "Data and pipelines are up to date" in sh(p, "dvc", "status")


def check_results_page(project, shot):
    """results/index.html opens on the rounded table (the real-data floor marked), shows every run's grid
    and the plots (every picture it names is there), the params the run read and the code version; a
    headless Chromium renders it (a screenshot with content top to bottom, not a blank page)."""
    page = (project / "results/index.html").read_text()
    first_table = page[page.index("<table>"):page.index("</table>")]
    assert "<tr class=floor><td>real data</td>" in first_table and "<th>judge_acc</th>" in first_table
    assert "<th>source</th>" not in first_table  # one value in every row: left out of the page
    assert re.search(r"<td class=num>\d+\.\d\d</td>", first_table)  # rounded
    for src in re.findall(r"<img src='([^']+)'", page):
        assert (project / "results" / src).is_file(), src
    assert "samples/dit.png" in page and "plots/loss.png" in page and "judge " in page
    assert "num_samples: 40" in page and "package digest" in page
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        why = "chromium is not installed (apt-get install chromium): the page's text was checked, not its rendering"
        if os.environ.get("DIFFZOO_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,1800", f"--screenshot={shot}", (project / "results/index.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (1800, 1400)
    bands = [image[i:i + 300] for i in range(0, 1500, 300)]  # the table, the grids, the plots: ink everywhere
    assert all((band < 128).mean() > 0.005 for band in bands), [float((b < 128).mean()) for b in bands]


def test_unit_checks_of_the_small_fixes(tmp_path, monkeypatch):
    """preset --out leaves the file alone on a typo (and names the preset meant); --device cuda without
    CUDA and GPUs asked for by params are one line; sample --ckpt takes a diffzoo model's own settings;
    the console/page table leaves out constant columns only."""
    import argparse

    import torch

    from diffzoo.errors import DiffzooError
    from diffzoo.report.tables import compact_markdown
    from diffzoo.runtime import check_device
    from diffzoo.commands import preset
    from diffzoo.commands.sample import DIT_SAMPLE_DEFAULTS, standalone_settings
    from test_workflow import ROOT

    monkeypatch.chdir(ROOT)
    target = tmp_path / "params.yaml"
    target.write_text("kept: true\n")
    with pytest.raises(DiffzooError, match="did you mean 'dit_table4'"):
        preset.run(argparse.Namespace(preset="dit_tabel4", out=str(target)))
    assert target.read_text() == "kept: true\n"
    preset.run(argparse.Namespace(preset="quick", out=str(target)))
    assert yaml.safe_load(target.read_text())["experiments"]["dit-s2"]["model"] == "DiT-S/2"

    with pytest.raises(DiffzooError, match="not a device"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DiffzooError, match="--device cuda, but torch .* sees no CUDA device"):
            check_device("cuda")
        with pytest.raises(DiffzooError, match="resources.train_gpus = 4, .* set resources.train_gpus: 0"):
            check_device(None, 4, "resources.train_gpus")
    check_device("cpu")
    check_device(None, 0, "resources.train_gpus")
    # the cost estimate at every scale (the default's printed 0.0 everywhere)
    from diffzoo.estimate import gpu_time
    assert [gpu_time(h) for h in (3.46, 0.2, 3 / 3600, 0.0)] == ["3.5 h", "12 min", "3 s", "<1 s"]
    # the params check covers every resources key a stage's GPUS names
    from diffzoo.pipeline import pipeline_stages, stage_module
    from diffzoo.runtime import GPU_KEYS
    assert {getattr(stage_module(s), "GPUS", 0) for s in pipeline_stages()} - {0} == set(GPU_KEYS)

    none = argparse.Namespace(num_fid_samples=None, per_proc_batch_size=None, num_sampling_steps=None, sampler=None,
                              cfg_scale=None, guidance=None, global_seed=0)
    ours = {"num_samples": 500, "batch_size": 250, "sampling_steps": "ddim25", "sampler": "ddim", "cfg_scale": 1.0,
            "guidance": "all", "seed": 3, "grid": 8}
    cfg = standalone_settings(none, ours)
    got = (cfg.num_samples, cfg.sampling_steps, cfg.sampler, cfg.cfg_scale, cfg.seed)
    assert got == (500, "ddim25", "ddim", 1.0, 0)
    cfg = standalone_settings(argparse.Namespace(**{**vars(none), "cfg_scale": 2.0}), None)  # released weights
    assert cfg.cfg_scale == 2.0 and cfg.num_samples == DIT_SAMPLE_DEFAULTS["num_samples"] == 50_000

    md = ("| source | experiment | fid |\n|:--|:--|--:|\n| diffzoo | real data | 2.43 |\n"
          "| diffzoo | dit | 21.25 |\n")
    compact = compact_markdown(md)
    assert "source" not in compact and "real data" in compact and "21.25" in compact
    assert compact.splitlines()[1].rstrip(" |").endswith(":")  # the numbers stay right-aligned
    md = ("| experiment | cfg | gpu_hours |\n|:--|--:|--:|\n| real data | - | - |\n| a | - | 0.00 |\n"
          "| b | 4.0 | 0.00 |\n")  # a floor's "-" does not make gpu_hours vary; a run's "-" against 4.0 does
    assert compact_markdown(md).splitlines()[0].split("|")[1:-1] == [" experiment ", " cfg "]


def check_live_tracking(folder, steps: int, every: int):
    """The run's TensorBoard events, read with TensorBoard's own reader: loss, lr and images/s at every
    log interval, and a grid of EMA samples every `every` steps (also as PNG files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"train/loss", "train/lr", "train/images_per_s"} <= set(events.Tags()["scalars"])
    losses = events.Scalars("train/loss")
    assert losses[-1].step == steps and losses[-1].value < losses[0].value  # it learned
    assert [e.step for e in events.Images("samples/ema")] == list(range(every, steps + 1, every))
    assert sorted(p.name for p in folder.glob("preview-*.png"))[-1] == f"preview-{steps:07d}.png"


@pytest.mark.slow  # engine runs
def test_rerun_reasons_say_what_changed_in_one_line(tmp_path):
    """Snakemake's reason for a changed param printed the whole slice before and now (1,100 characters
    for a train slice): the rules' params are digests, and diffzoo prints one line per job naming the
    keys that changed, from what the outputs' stamps recorded."""
    p = make_project(tmp_path / "p")
    raw = _one_experiment()
    write_params(p, raw)
    sh(p, "snakemake", "--cores", "2", "data/digits/images-8")
    raw["data"]["max_per_class"] = 20
    raw["data"]["shard_size"] = 64
    write_params(p, raw)
    out = sh(p, "snakemake", "-n", "data/digits/images-8")
    assert "  dataset: data.max_per_class 24 -> 20\n" in out
    assert "  images: data.max_per_class 24 -> 20; data.shard_size 10000 -> 64\n" in out
    reasons = [line for line in out.splitlines() if "reason: Params have changed" in line]
    assert len(reasons) == 1 and len(reasons[0]) < 200, reasons
