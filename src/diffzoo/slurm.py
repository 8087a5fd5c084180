"""SLURM's view of a task, in torch's terms, without importing torch (the CLI maps it before the
stage lock is taken, so that rank 0 alone holds it)."""
from __future__ import annotations

import subprocess

from .errors import DiffzooError

RENDEZVOUS_PORT = 29500


def slurm_task_env(env: dict, hostnames=None) -> dict:
    """torch.distributed's variables for a task of an srun step that runs one rank per task (`srun
    --ntasks=N diffzoo train`: more tasks than nodes), from SLURM's: WORLD_SIZE = the step's tasks, RANK
    = SLURM_PROCID, LOCAL_RANK = SLURM_LOCALID, the rendezvous at the step's first node on a port of
    this job and step. Empty where torchrun set them already, outside an srun step, for a single task,
    or for one task per node (those become torchrun launchers: launch_command)."""
    if "LOCAL_RANK" in env or "SLURM_STEP_ID" not in env:
        return {}
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    if tasks <= 1 or (tasks == nodes and nodes > 1):
        return {}
    missing = [k for k in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NODELIST", "SLURM_JOB_ID") if k not in env]
    if missing:
        raise DiffzooError(f"an srun step of {tasks} tasks without {', '.join(missing)}: launch one rank per task "
                           "with `srun --ntasks=N diffzoo ...` inside an allocation, or torchrun")
    head = (hostnames or slurm_hostnames)(env["SLURM_STEP_NODELIST"])[0]
    port = RENDEZVOUS_PORT + 1 + (int(env["SLURM_JOB_ID"]) * 7 + int(env["SLURM_STEP_ID"] or 0)) % 30000
    return {"WORLD_SIZE": str(tasks), "RANK": env["SLURM_PROCID"], "LOCAL_RANK": env["SLURM_LOCALID"],
            "LOCAL_WORLD_SIZE": env.get("SLURM_NTASKS_PER_NODE", str(tasks // max(nodes, 1))),
            "MASTER_ADDR": head, "MASTER_PORT": str(port)}


def slurm_hostnames(nodelist: str) -> list[str]:
    if not any(c in nodelist for c in "[],"):  # one host
        return [nodelist]
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise DiffzooError(f"cannot list the nodes of this SLURM allocation ({nodelist!r}) with scontrol: "
                           f"{err}") from None
    return out.stdout.split()
