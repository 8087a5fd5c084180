"""The scheduler's overhead per stage: the tiny pipeline of tests/test_workflow.py run locally
(`snakemake --cores 2`) and through a live SLURM cluster with the project's profile (every stage an
sbatch job), side by side in one run, each in a fresh copy of the project.

    bash tests/slurm_cluster.sh start            # a single-node cluster on this machine (root), if none
    python benchmarks/bench_slurm.py             # local, SLURM with fast polling, SLURM as the profile polls
    python benchmarks/bench_slurm.py --no-default-poll

Prints one JSON line per mode: wall seconds, jobs submitted, and the overhead per submitted job against
the local run.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_workflow import make_project, sh  # noqa: E402  (the tests' tiny project: one definition)

FAST_POLL = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]


def timed(project: Path, *cmd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = sh(project, *cmd)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-default-poll", action="store_true", help="skip the run with the plugin's own polling")
    args = ap.parse_args()
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode:
        sys.exit("no SLURM cluster answers (sinfo): start one with `bash tests/slurm_cluster.sh start`")
    modes = [("local --cores 2", ["snakemake", "--cores", "2"]),
             ("slurm, poll 1-2 s", ["snakemake", "--workflow-profile", "workflow/profiles/slurm", *FAST_POLL])]
    if not args.no_default_poll:
        modes.append(("slurm, the plugin's polling", ["snakemake", "--workflow-profile", "workflow/profiles/slurm"]))
    local = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cmd) in enumerate(modes):
            seconds, out = timed(make_project(Path(tmp) / f"p{i}"), *cmd)
            jobs = len(re.findall(r"has been submitted with SLURM jobid", out))
            local = seconds if local is None else local
            row = {"mode": name, "wall_s": round(seconds, 1), "sbatch_jobs": jobs}
            if jobs:
                row["overhead_per_job_s"] = round((seconds - local) / jobs, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
