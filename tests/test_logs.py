"""A stage run without a terminal (as under Snakemake, DVC or sbatch) writes its progress into its
log: timestamped lines with counts and an ETA, and train's line every log_every with the loss TSV
rewritten at the same time."""
import os
import re
import subprocess

from conftest import DIFFZOO, clone, edit_params


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
