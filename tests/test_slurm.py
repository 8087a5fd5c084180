"""The SLURM profile's dry run (`snakemake --workflow-profile workflow/profiles/slurm -n`) asks for the
GPUs and time limits params.yaml implies, through the executor plugin's `gpu`/`gpu_model` resources."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffzoo import estimate
from diffzoo.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def dry_run_resources(tmp_path: Path, preset: str) -> dict[str, dict[str, str]]:
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("workflow", "configs"):
        shutil.copytree(ROOT / name, tmp_path / name)
    os.symlink("workflow/profiles", tmp_path / "profiles")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               SNAKEMAKE_OUTPUT_CACHE=str(tmp_path / ".cache"))
    out = subprocess.run(["snakemake", "--workflow-profile", "workflow/profiles/slurm", "--configfile", preset, "-n"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "Using workflow specific profile workflow/profiles/slurm" in text
    jobs = {}
    for rule, res in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", text, flags=re.M):
        jobs[rule] = dict(kv.split("=", 1) for kv in res.split(", "))
    return jobs


def test_slurm_dry_run_requests_gpus_per_rule(tmp_path):
    preset = "configs/dit_xl2_256.yaml"
    params = load_params(ROOT / preset)
    jobs = dry_run_resources(tmp_path, preset)
    assert {"dataset", "images", "latents", "reference", "train", "sample", "evaluate", "report"} <= set(jobs)
    model = params.resources.gpu_model
    assert jobs["train"]["gpu"] == str(params.resources.train_gpus) == "8"
    assert jobs["sample"]["gpu"] == str(params.resources.sample_gpus)
    for rule in ("latents", "reference", "evaluate"):
        assert jobs[rule]["gpu"] == "1", rule
    for rule in ("train", "sample", "latents", "reference", "evaluate"):
        assert jobs[rule]["gpu_model"] == model, rule
    for rule in ("dataset", "images", "report"):
        assert "gpu" not in jobs[rule], rule
        assert not any("gres" in v for v in jobs[rule].values())
    # Time limits follow the estimated work: 7M steps of DiT-XL/2 on 8 GPUs, doubled.
    exp = next(iter(params.experiments))
    assert int(jobs["train"]["runtime"]) == estimate.runtime_minutes(params, "train", exp, 8)
    hours = 7e6 * 256 * 3 * 2 * 118.6e9 / (estimate.ASSUMED_MFU * estimate.H100_BF16_PEAK) / 3600
    assert int(jobs["train"]["runtime"]) == pytest.approx(2 * hours / 8 * 60, rel=0.01)
