"""Wall time of the default run (`snakemake --cores N` from a clean copy of the project) and of the
no-op re-plan after it (`snakemake -n`). Prints one JSON line.

    python benchmarks/bench_pipeline.py [--cores 2] [--keep DIR]
    python benchmarks/bench_pipeline.py --log .snakemake/log/X.snakemake.log   # job times of a past run
    python benchmarks/bench_pipeline.py --replan DIR [--repeats 5]   # no-op `snakemake -n` in a finished
        # project DIR, alternating with Snakemake's floor (a one-rule workflow, same interpreter): the
        # medians, their difference (what diffzoo's planning adds) and whether torch was imported
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd, cwd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def job_seconds(log: Path) -> dict[str, float]:
    """Wall seconds of each job of a Snakemake run, "rule" or "rule:experiment", from its log."""
    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
    start, names, out, now = {}, {}, {}, None
    lines = log.read_text().splitlines()
    for i, line in enumerate(lines):
        if m := stamp.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule, block = m.group(1), lines[i + 1:i + 12]
            jobid = next(int(b.split(":")[1]) for b in block if b.strip().startswith("jobid:"))
            wild = next((b.split("exp=")[1] for b in block if "wildcards: exp=" in b), None)
            names[jobid], start[jobid] = f"{rule}:{wild}" if wild else rule, now
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            jobid = int(m.group(1))
            out[names[jobid]] = (now - start[jobid]).total_seconds()
    return out


FLOOR = "rule all:\n    output: 'x.txt'\n    shell: 'touch {output}'\n"


def replan(project: Path, repeats: int, env: dict) -> dict:
    """Median seconds of a no-op `snakemake -n` in `project` and of the floor, run alternately."""
    floor = Path(tempfile.mkdtemp(prefix="diffzoo-floor-"))
    (floor / "Snakefile").write_text(FLOOR)
    (floor / "x.txt").write_text("")
    ours, base = [], []
    for _ in range(repeats):
        ours.append(timed(["snakemake", "-n", "--cores", "2"], project, env))
        base.append(timed(["snakemake", "-n", "--cores", "1"], floor, env))
    shutil.rmtree(floor)
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "2"], cwd=project,
                           env=env, capture_output=True, text=True)
    torch = any(line.rstrip().endswith("| torch") for line in probe.stderr.splitlines())
    med = statistics.median
    return {"noop_plan_s": round(med(ours), 2), "snakemake_floor_s": round(med(base), 2),
            "diffzoo_adds_s": round(med(ours) - med(base), 2), "imports_torch": torch, "repeats": repeats,
            "runs_s": [round(t, 2) for t in ours], "floor_runs_s": [round(t, 2) for t in base],
            "machine": platform.machine(), "cpus": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    p.add_argument("--log", type=Path, default=None, help="only print the job times of this Snakemake log")
    p.add_argument("--replan", type=Path, default=None, help="time the no-op plan of this finished project")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.replan:
        env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        print(json.dumps(replan(args.replan.resolve(), args.repeats, env)))
        return
    if args.log:
        print(json.dumps(job_seconds(args.log)))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="diffzoo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(ROOT / "workflow", work / "workflow", dirs_exist_ok=True)
    if not (work / "profiles").exists():
        os.symlink("workflow/profiles", work / "profiles")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               SNAKEMAKE_OUTPUT_CACHE=str(work / ".cache/snakemake"))
    full = timed(["snakemake", "--cores", str(args.cores)], work, env)
    noop = timed(["snakemake", "-n"], work, env)
    log = max((work / ".snakemake/log").glob("*.snakemake.log"), key=lambda f: f.stat().st_size)
    print(json.dumps({"default_run_s": round(full, 1), "noop_replan_s": round(noop, 2), "cores": args.cores,
                      "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                      "job_s": job_seconds(log)}))
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
