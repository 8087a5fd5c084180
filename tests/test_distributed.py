"""Training on several processes (torchrun, gloo on CPU) trains what one process trains: the global
batch, learning rate and every random draw are those of params.yaml whatever the process count, and
DDP and FSDP differ from one process only by the floating-point order of the gradient reduction.
Checkpoints hold full state dicts, so a run resumes on another process count and with FSDP."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DIFFZOO, clone, edit_params
from diffzoo.checkpoints import read_state_dict

# the full tier: torchrun process groups and training runs; under pytest-xdist on the worker that runs the
# SLURM tests (one cluster, whose presence a test here reads, and the rendezvous ports)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

TRAIN = ["train", "--params", "params.yaml", "--experiment", "a"]
EXP = Path("data/experiments/a")
# A reduction in another order moves weights by ~1e-8 here; one wrong draw, a lost gradient half or
# a wrong learning rate moves them by > 1e-4 (checked below against the training's own movement).
TOL = 1e-6


def train(folder: Path, nproc: int) -> subprocess.CompletedProcess:
    launch = DIFFZOO if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         f"--nproc_per_node={nproc}", "-m", "diffzoo.cli"]
    run = subprocess.run(launch + TRAIN, cwd=folder, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def short(parallel: str = "ddp", model: str | None = None):
    def edit(raw):
        raw["train"].update(steps=6, global_batch_size=8, ckpt_every=3, log_every=3, parallel=parallel)
        if model:
            raw["experiments"]["a"]["model"] = model
    return edit


def checkpoint(folder: Path, step: int) -> dict:
    return torch.load(folder / EXP / f"checkpoints/step-{step:07d}.pt", map_location="cpu", weights_only=True)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def losses(folder: Path) -> list[float]:
    rows = (folder / "results/train/a.tsv").read_text().splitlines()[1:]
    return [float(r.split("\t")[1]) for r in rows]


@pytest.fixture(scope="module")
def single(prepared, tmp_path_factory):
    folder = clone(prepared, tmp_path_factory.mktemp("single") / "p")
    edit_params(folder, short())
    train(folder, 1)
    return folder


def test_training_moves_weights_far_beyond_the_tolerance(single):
    assert max_diff(checkpoint(single, 3)["model"], checkpoint(single, 6)["model"]) > 1e-4


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_train_what_one_trains(prepared, single, tmp_path, parallel):
    folder = clone(prepared, tmp_path / "p")
    edit_params(folder, short(parallel))
    out = train(folder, 2)
    assert '"world_size": 2' in out.stdout
    one, two = checkpoint(single, 6), checkpoint(folder, 6)
    assert max_diff(one["model"], two["model"]) < TOL
    assert max_diff(one["ema"], two["ema"]) < TOL
    assert max_diff(read_state_dict(single / EXP / "model.safetensors"),
                    read_state_dict(folder / EXP / "model.safetensors")) < TOL
    # Adam's moments gathered from the shards equal the single process's.
    for key in ("exp_avg", "exp_avg_sq"):
        assert max_diff({n: s[key] for n, s in one["opt"]["state"].items()},
                        {n: s[key] for n, s in two["opt"]["state"].items()}) < TOL
    # The logged loss is the global batch's, not rank 0's half.
    assert losses(folder) == pytest.approx(losses(single), abs=2e-6)


def test_fsdp_resumes_a_single_process_checkpoint(single, tmp_path):
    folder = clone(single, tmp_path / "p")
    (folder / EXP / "checkpoints/step-0000006.pt").unlink()
    for path in (folder / EXP / "model.safetensors", folder / EXP / "model.json", folder / "results"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    edit_params(folder, short("fsdp"))
    out = train(folder, 2)
    assert "resuming a from step 3" in out.stderr
    assert max_diff(read_state_dict(single / EXP / "model.safetensors"),
                    read_state_dict(folder / EXP / "model.safetensors")) < TOL
    assert losses(folder) == pytest.approx(losses(single), abs=2e-6)


def test_moe_sharded_equals_replicated(prepared, tmp_path):
    """DiT-MoE's balance loss is computed per process, as in the authors' code, so 2 processes are
    compared with 2: FSDP (experts sharded) against DDP."""
    runs = {}
    for parallel in ("ddp", "fsdp"):
        folder = clone(prepared, tmp_path / parallel)
        edit_params(folder, short(parallel, model="DiT-MoE-S/2-8E2A"))
        train(folder, 2)
        runs[parallel] = checkpoint(folder, 6)
    assert max_diff(runs["ddp"]["model"], runs["fsdp"]["model"]) < TOL
    assert max_diff(runs["ddp"]["ema"], runs["fsdp"]["ema"]) < TOL
    assert max_diff(checkpoint(folder, 3)["model"], runs["fsdp"]["model"]) > 1e-4


def test_launch_over_one_node_and_over_a_slurm_allocation(monkeypatch, tmp_path):
    from diffzoo.runtime import launch_command

    argv = ["train", "--params", "p.yaml", "--experiment", "a"]
    assert launch_command(argv, {}, gpus=1) is None
    assert launch_command(argv, {"LOCAL_RANK": "0"}, gpus=8) is None  # already a torchrun worker
    one = launch_command(argv, {}, gpus=8)
    assert one[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "-m", "diffzoo.cli", *argv]
    env = {"SLURM_JOB_NUM_NODES": "4", "SLURM_JOB_NODELIST": "gpu[07-10]", "SLURM_JOB_ID": "123"}
    many = launch_command(argv, env, gpus=8, hostnames=lambda nodelist: [f"gpu{i:02d}" for i in range(7, 11)])
    assert many[:3] == ["srun", "--nodes=4", "--ntasks-per-node=1"]
    for flag in ("--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:29500",
                 "--rdzv_id=123"):
        assert flag in many
    assert many[-len(argv):] == argv
    # Inside an srun step (one task per node already): this task becomes its node's torchrun, no srun.
    step = launch_command(argv, {**env, "SLURM_STEP_ID": "0"}, gpus=8, hostnames=lambda nodelist: ["gpu07"])
    assert step[1:3] == ["-m", "torch.distributed.run"] and step[3:] == many[6:]
    # A broken allocation environment is a one-line error, not a traceback.
    from diffzoo.errors import DiffzooError
    with pytest.raises(DiffzooError, match="SLURM_JOB_NODELIST is not set"):
        launch_command(argv, {"SLURM_JOB_NUM_NODES": "2"}, gpus=8)
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol (a login node of a broken install)
    with pytest.raises(DiffzooError, match="cannot list the nodes"):
        launch_command(argv, {"SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[1-2]"}, gpus=8)
