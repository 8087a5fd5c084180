"""Where a GPU stage runs: the process group, the device, the launch over every GPU and SLURM node.

`launch_command` / `relaunch_under_torchrun`: a stage started as one process on a machine with several
GPUs, or inside a multi-node SLURM allocation, replaces itself by torchrun (one per node, started by
srun from a batch script) so that `diffzoo train` is one command for 1 or N GPUs.
`setup_process` joins the group torchrun set up and picks this rank's device; `distribute` wraps the
model for DDP or shards it with FSDP2.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
from torch.distributed.fsdp import fully_shard

from .errors import DiffzooError
from .slurm import RENDEZVOUS_PORT, slurm_hostnames, slurm_task_env


@dataclass(frozen=True)
class Process:
    """This process's place in the job: world size, rank and device."""

    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()


def check_device(device: str | None, gpus_asked: int = 0, asked_by: str = "") -> None:
    """One line, before any work, where the device cannot be had: `--device cuda` (or params asking for
    GPUs, `asked_by` names the key) on a machine where torch sees no CUDA device, or a device string
    torch does not know. (A 7M-step preset must not train on a login node's CPU without a word.)"""
    if device is not None:
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise DiffzooError(f"--device {device!r}: not a device (cpu, cuda, cuda:N, mps)") from None
    else:
        kind = "cuda" if gpus_asked else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        why = f"--device {device}" if device is not None else f"{asked_by} = {gpus_asked}"
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        fix = "--device cpu" if device is not None else f"{asked_by}: 0 to run on the CPU"
        raise DiffzooError(f"{why}, but torch {torch.__version__} ({build}) sees no CUDA device here: "
                           f"run on a GPU machine (the slurm profile), or set {fix}")


GPU_KEYS = ("train_gpus", "sample_gpus", "gpus")  # the resources keys the stages' GPUS name


def check_params_gpus(params) -> None:
    """The most GPUs any job of the params asks for, on this machine (one line naming the key, else
    nothing): Snakemake's local run and `diffzoo check --dvc` call it before the first job."""
    key = max(GPU_KEYS, key=lambda k: getattr(params.resources, k))
    check_device(None, getattr(params.resources, key), f"resources.{key}")


def setup_process(device: str | None = None, gpus_asked: int = 0, asked_by: str = "") -> Process:
    """Join torchrun's process group (if any) and take this rank's GPU (or the CPU); TF32 matmuls and
    convolutions on CUDA, as the official DiT train.py and sample_ddp.py allow them. Refuses in one line
    where the device asked for is not there (check_device)."""
    check_device(device, gpus_asked, asked_by)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        device = f"cuda:{local}"  # this rank's GPU, not always the first
    dev = torch.device(device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Process(world, rank, dev)


def distribute(model: torch.nn.Module, ema: torch.nn.Module, world: int, sharded: bool,
               device: torch.device) -> torch.nn.Module:
    """The module the training step calls: the model itself on one process; under torchrun a DDP
    replica, or with `sharded` the model and its EMA sharded in place with FSDP2 (`fully_shard` on
    every repeated block, then on the root), so weights, gradients, EMA and optimizer state are split
    over the GPUs and only one block's full weights are gathered at a time. The EMA update then runs
    shard by shard; checkpoints gather full state dicts, so they load on any GPU count."""
    if world == 1:
        return model
    if not sharded:
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    for m in (model, ema):
        for block in m.repeated_blocks():
            fully_shard(block)
        fully_shard(m)
    return model


def launch_command(argv: list[str], env: dict, gpus: int, hostnames=None) -> list[str] | None:
    """The command that runs `diffzoo ARGV` on every GPU it was given, or None where this process is
    the right one (already under torchrun, or a single GPU on a single node).

    One node with several GPUs: torchrun --standalone. Several nodes of a SLURM allocation
    (SLURM_JOB_NUM_NODES > 1): one torchrun per node (started by srun from the batch script, or this
    task inside an srun step of one task per node), meeting at the first node's c10d rendezvous.
    `hostnames()` lists the allocation's nodes (scontrol by default).
    """
    if "LOCAL_RANK" in env:
        return None
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    nodes = int(env.get("SLURM_JOB_NUM_NODES", "1"))
    if nodes > 1:
        if "SLURM_JOB_NODELIST" not in env:
            raise DiffzooError(f"SLURM_JOB_NUM_NODES is {nodes} but SLURM_JOB_NODELIST is not set")
        head = (hostnames or slurm_hostnames)(env["SLURM_JOB_NODELIST"])[0]
        # From the batch script srun starts one torchrun per node; inside an srun step (one task per
        # node already) this task becomes its node's torchrun.
        srun = [] if "SLURM_STEP_ID" in env else ["srun", f"--nodes={nodes}", "--ntasks-per-node=1"]
        return [*srun, *torchrun, f"--nnodes={nodes}", f"--nproc_per_node={max(gpus, 1)}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={head}:{RENDEZVOUS_PORT}", f"--rdzv_id={env.get('SLURM_JOB_ID', 'diffzoo')}",
                "-m", "diffzoo.cli", *argv]
    if gpus > 1:
        return [*torchrun, "--standalone", f"--nproc_per_node={gpus}", "-m", "diffzoo.cli", *argv]
    return None


def relaunch_under_torchrun(argv: list[str]) -> None:
    """Replace this process by the launch over every GPU of this machine or allocation, if needed; a
    task of an srun step with one rank per task takes its rank from SLURM instead (slurm_task_env)."""
    os.environ.update(slurm_task_env(dict(os.environ)))  # (the CLI has mapped them already: then a no-op)
    cmd = launch_command(argv, dict(os.environ), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if cmd:
        print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
        os.execvp(cmd[0], cmd)
