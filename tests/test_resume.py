"""An interrupted train or sample stage (killed with SIGKILL) resumes and ends with the same result as
an uninterrupted run, and never leaves a half-written artifact at its final path."""
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from diffzoo.checkpoints import read_state_dict

from conftest import DIFFZOO, clone, edit_params, tiny_params

pytestmark = pytest.mark.slow  # the full tier: training and sampling runs, interrupted and resumed


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """The prepared project with experiment "a" trained once, for the sampling tests to copy."""
    root = clone(prepared, tmp_path_factory.mktemp("trained") / "p")
    subprocess.run(DIFFZOO + ["train", "--params", "params.yaml", "--experiment", "a"], cwd=root, check=True,
                   capture_output=True)
    return root


SAMPLE = DIFFZOO + ["sample", "--params", "params.yaml", "--experiment", "a"]


def sample_and_kill(folder: Path) -> Path:
    """Run the sample stage in folder, killed (SIGKILL) right after its second part; return the
    experiment dir."""
    run_and_kill(SAMPLE, folder, "sample-part:2")
    return folder / "data/experiments/a"


def run_and_kill(cmd, cwd: Path, kill_at: str) -> None:
    """Run cmd and have it SIGKILL itself at `kill_at` (diffzoo.utils.kill_point: "<point>:<n>"), a
    deterministic point however busy the machine is."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFZOO_KILL_AT=kill_at)
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.returncode == -signal.SIGKILL, ("the stage was not killed at " + kill_at + ": "
                                                + proc.stderr.decode()[-500:])


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


def test_train_resumes_to_the_same_weights(prepared, tmp_path):
    whole = clone(prepared, tmp_path / "whole")
    cut = clone(prepared, tmp_path / "cut")
    cmd = DIFFZOO + ["train", "--params", "params.yaml", "--experiment", "a"]
    subprocess.run(cmd, cwd=whole, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))

    ckpts = cut / "data/experiments/a/checkpoints"
    run_and_kill(cmd, cut, "train-step:12")  # after the checkpoints of steps 5 and 10
    model = cut / "data/experiments/a/model.safetensors"
    assert not model.exists()  # no final artifact from the killed run
    steps_done = max(int(p.stem.split("-")[1]) for p in ckpts.glob("step-*.pt"))
    assert 0 < steps_done < 40
    out = subprocess.run(cmd, cwd=cut, check=True, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert "resuming a from step" in out.stderr

    a = read_state_dict(whole / "data/experiments/a/model.safetensors")
    b = read_state_dict(model)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    assert no_temp_files(cut / "data/experiments")
    # The loss log has one row per log interval, no duplicate rows from the replayed span.
    rows = (cut / "results/train/a.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == list(range(5, 41, 5))
    whole_rows = (whole / "results/train/a.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[1] for r in rows] == [r.split("\t")[1] for r in whole_rows]


def test_sample_resumes_to_the_same_samples(trained, tmp_path):
    whole = clone(trained, tmp_path / "whole")
    cut = clone(trained, tmp_path / "cut")
    cmd = SAMPLE
    subprocess.run(cmd, cwd=whole, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))

    exp_dir = sample_and_kill(cut)
    assert not (exp_dir / "samples.npz").exists()
    n_parts = len(list(exp_dir.glob("samples.parts-*/part-*.npz")))
    assert 0 < n_parts < 8
    subprocess.run(cmd, cwd=cut, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))

    x = np.load(whole / "data/experiments/a/samples.npz")
    y = np.load(cut / "data/experiments/a/samples.npz")
    res = tiny_params()["data"]["resolution"]
    assert x["arr_0"].shape == (48, res, res, 3) and x["arr_0"].dtype == np.uint8
    assert np.array_equal(x["arr_0"], y["arr_0"]) and np.array_equal(x["labels"], y["labels"])
    assert not list(exp_dir.glob("samples.parts-*")) and no_temp_files(cut / "data/experiments")


def test_samples_do_not_depend_on_batch_size(trained, tmp_path):
    """Sample i depends only on (seed, i): a different batch size gives the same images."""
    root = clone(trained, tmp_path / "bs")
    out = {}
    for bs in (6, 16):
        edit_params(root, lambda raw, bs=bs: raw["sample"].update(batch_size=bs))
        subprocess.run(SAMPLE, cwd=root, check=True,
                       capture_output=True)
        out[bs] = np.load(root / "data/experiments/a/samples.npz")["arr_0"]
    # Batched matrix products may round differently with another batch shape: equal to 1 grey level.
    assert np.abs(out[6].astype(int) - out[16].astype(int)).max() <= 1
    assert (out[6] != out[16]).mean() < 0.01


def test_interrupted_samples_are_not_reused_under_other_settings(trained, tmp_path):
    """Parts of a killed run with seed 0 must not leak into a rerun with seed 1."""
    root = clone(trained, tmp_path / "seed")
    fresh = clone(trained, tmp_path / "fresh")
    cmd = SAMPLE
    exp_dir = sample_and_kill(root)
    for folder in (root, fresh):
        edit_params(folder, lambda raw: raw["sample"].update(seed=1))
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    x = np.load(root / "data/experiments/a/samples.npz")["arr_0"]
    y = np.load(fresh / "data/experiments/a/samples.npz")["arr_0"]
    assert np.array_equal(x, y)
    assert not list(exp_dir.glob("samples.parts-*"))
