"""Wall time of the default run (`snakemake --cores N` from a clean copy of the project) and of the
no-op re-plan after it (`snakemake -n`). Prints one JSON line.

    python benchmarks/bench_pipeline.py [--cores 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd, cwd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    args = p.parse_args()
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
    replan = timed(["snakemake", "-n"], work, env)
    print(json.dumps({"default_run_s": round(full, 1), "noop_replan_s": round(replan, 2), "cores": args.cores,
                      "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}))
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
