"""A stage run without a terminal (as under Snakemake, DVC or sbatch) writes its progress into its
log: timestamped lines with counts and an ETA, and train's line every log_every with the loss TSV
rewritten at the same time."""
import os
import re
import subprocess

import pytest

from conftest import DIFFZOO, clone, edit_params

pytestmark = pytest.mark.slow  # the full tier: training and sampling runs


def test_train_and_sample_write_progress_lines_off_terminal(prepared, tmp_path):
    root = clone(prepared, tmp_path / "p")
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFZOO_PROGRESS_EVERY="0")
    with open(tmp_path / "train.log", "w") as log:  # a file, not a terminal
        subprocess.run(DIFFZOO + ["train", "--params", "params.yaml", "--experiment", "a"], cwd=root, env=env,
                       stdout=log, stderr=subprocess.STDOUT, check=True)
    text = (tmp_path / "train.log").read_text()
    assert "machine: python" in text and "selective scan" in text
    steps = re.findall(r"^\d\d:\d\d:\d\d train a: step (\d+)/40 loss [\d.]+ [\d.]+ images/s ETA \d+:\d\d:\d\d$",
                       text, re.M)
    assert steps == [str(s) for s in range(5, 41, 5)], text
    assert "\r" not in text  # no progress bar in a log

    with open(tmp_path / "sample.log", "w") as log:
        subprocess.run(DIFFZOO + ["sample", "--params", "params.yaml", "--experiment", "a"], cwd=root, env=env,
                       stdout=log, stderr=subprocess.STDOUT, check=True)
    text = (tmp_path / "sample.log").read_text()
    counts = re.findall(r"sample a: (\d+)/48 samples \(\d+%\), [\d.e+-]+ samples/s, elapsed [\d:]+, ETA ", text)
    assert counts[-1] == "48" and len(counts) >= 8, text  # a line per part (every 0 s) and the last


def test_the_loss_tsv_follows_the_log_interval(prepared, tmp_path):
    """With checkpoints far apart, the loss TSV still holds a row per log interval as the run goes."""
    import signal

    root = clone(prepared, tmp_path / "p")
    edit_params(root, lambda raw: raw["train"].update(ckpt_every=100, log_every=5))
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFZOO_KILL_AT="train-step:12")
    proc = subprocess.run(DIFFZOO + ["train", "--params", "params.yaml", "--experiment", "a"], cwd=root, env=env,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not list((root / "data/experiments/a/checkpoints").glob("step-*.pt"))
    rows = (root / "results/train/a.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == ["5", "10"]


def test_every_stage_run_appends_its_time_record(prepared, tmp_path):
    """logs/benchmarks/<stage>[-<id>].tsv gets a row per run (Snakemake's benchmark columns), a
    failed run included, and the end-of-run summary lists the stages slowest first."""
    import pandas as pd

    from diffzoo.commands.report import stage_times

    root = clone(prepared, tmp_path / "p")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for _ in range(2):
        subprocess.run(DIFFZOO + ["train", "--params", "params.yaml", "--experiment", "a"], cwd=root, env=env,
                       capture_output=True, check=True)
    edit_params(root, lambda raw: raw["sample"].update(sampling_steps="1"))  # refused: fewer than 2 steps
    failed = subprocess.run(DIFFZOO + ["sample", "--params", "params.yaml", "--experiment", "a"], cwd=root, env=env,
                            capture_output=True)
    assert failed.returncode == 2
    train = pd.read_csv(root / "logs/benchmarks/train-a.tsv", sep="\t")
    assert list(train.columns[:4]) == ["s", "h:m:s", "max_rss", "cpu_time"] and len(train) == 2
    assert (train["status"] == "ok").all() and train["s"].iloc[0] > train["s"].iloc[1] > 0  # the rerun resumes
    assert train["max_rss"].iloc[0] > 100  # MB: torch alone is more
    sample = pd.read_csv(root / "logs/benchmarks/sample-a.tsv", sep="\t")
    assert list(sample["status"]) == ["failed"]
    edit_params(root, lambda raw: raw["sample"].update(sampling_steps="8"))
    subprocess.run(DIFFZOO + ["sample", "--params", "params.yaml", "--experiment", "a"], cwd=root, env=env,
                   capture_output=True, check=True)
    sample = pd.read_csv(root / "logs/benchmarks/sample-a.tsv", sep="\t")
    names = {"train-a", "sample-a", "latents"}
    table = stage_times(names, root / "logs/benchmarks")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert set(rows) == names, table
    seconds = [float(r[0]) for r in rows.values()]
    assert seconds == sorted(seconds, reverse=True) and float(rows["train-a"][0]) == round(train["s"].iloc[1], 1)
    # the ok sampling after the failed one: both attempts count (the last ok training stands alone)
    assert float(rows["sample-a"][0]) == round(sample["s"].sum(), 1) and rows["sample-a"][3] == "2", table
    assert rows["train-a"][3] == "1", table
