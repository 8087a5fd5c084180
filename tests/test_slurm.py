"""The SLURM path, on a live cluster: the Snakemake executor plugin submits every stage as an sbatch
job and the table equals a local run's; `dvc repro` in one allocation sized from the params; `srun
--ntasks=2 diffzoo train` is real DDP (gloo on CPU) that trains what one process trains; a cancelled
training job resumes from its checkpoint when resubmitted. Plus the profile's dry run on a GPU preset
(the GPUs, partitions and time limits the params imply).

The cluster is the machine's own where `sinfo` answers, else a single-node one that
tests/slurm_cluster.sh starts (root and apt needed) and stops after the session. Where neither can be
had the live tests skip saying why; with DIFFZOO_REQUIRE_SLURM=1 (CI sets it) they fail instead.
"""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import DIFFZOO, clone, edit_params, table_rows
from test_workflow import BIN, make_project, read, sh

from diffzoo import estimate
from diffzoo.params import load_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("cluster")  # one worker under pytest-xdist: one cluster, one port
CLUSTER = ROOT / "tests/slurm_cluster.sh"
# Poll the scheduler every second or two (the plugin's default waits 40 s before the first look).
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2"]
REMOTE_STAGES = {"dataset", "images", "latents", "reference", "train", "sample", "evaluate"}  # report is local


def dry_run_resources(tmp_path: Path, *configfiles: str) -> dict[str, dict[str, str]]:
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("workflow", "configs"):
        shutil.copytree(ROOT / name, tmp_path / name, dirs_exist_ok=True)
    os.symlink("workflow/profiles", tmp_path / "profiles")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               SNAKEMAKE_OUTPUT_CACHE=str(tmp_path / ".cache"))
    out = subprocess.run(["snakemake", "--workflow-profile", "workflow/profiles/slurm", "--configfile", *configfiles,
                          "-n"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "Using workflow specific profile workflow/profiles/slurm" in text
    jobs = {}
    for rule, res in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", text, flags=re.M):
        jobs[rule] = dict(kv.split("=", 1) for kv in res.split(", "))
    return jobs


@pytest.mark.slow  # the full tier
def test_slurm_dry_run_requests_gpus_partitions_and_time_per_rule(tmp_path):
    preset = "configs/dit_xl2_256.yaml"
    params = load_params(ROOT / preset)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/site.yaml").write_text(yaml.safe_dump(
        {"resources": {"partition": "short", "gpu_partition": "a100", "account": "lab42"}}))
    jobs = dry_run_resources(tmp_path, preset, "configs/site.yaml")
    assert {"dataset", "images", "latents", "reference", "train", "sample", "evaluate", "report"} <= set(jobs)
    model = params.resources.gpu_model
    assert jobs["train"]["gpu"] == str(params.resources.train_gpus) == "8"
    assert jobs["sample"]["gpu"] == str(params.resources.sample_gpus)
    for rule in ("latents", "reference", "evaluate"):
        assert jobs[rule]["gpu"] == str(params.resources.gpus) == "1", rule
    for rule in ("train", "sample", "latents", "reference", "evaluate"):
        assert jobs[rule]["gpu_model"] == model, rule
        assert jobs[rule]["slurm_partition"] == "a100", rule
    for rule in ("dataset", "images"):
        assert "gpu" not in jobs[rule], rule
        assert not any("gres" in v for v in jobs[rule].values())
        assert jobs[rule]["slurm_partition"] == "short", rule
    for rule in REMOTE_STAGES:
        assert jobs[rule]["slurm_account"] == "lab42", rule
    # Time limits follow the estimated work: 7M steps of DiT-XL/2 on 8 GPUs, doubled.
    exp = next(iter(params.experiments))
    assert int(jobs["train"]["runtime"]) == estimate.runtime_minutes(params, "train", exp, 8)
    hours = 7e6 * 256 * 3 * 2 * 118.6e9 / (estimate.ASSUMED_MFU * estimate.H100_BF16_PEAK) / 3600
    assert int(jobs["train"]["runtime"]) == pytest.approx(2 * hours / 8 * 60, rel=0.01)


@pytest.mark.slow  # the full tier
def test_the_embedded_default_asks_a_cluster_for_no_gpu(tmp_path):
    """params.yaml is CPU work: on a cluster without GPUs no job may ask for one (or sbatch refuses it)."""
    jobs = dry_run_resources(tmp_path, "params.yaml")
    for rule, res in jobs.items():
        assert "gpu" not in res and "slurm_partition" not in res, (rule, res)


# -- a live cluster ------------------------------------------------------------------------------------

def _cannot(why: str):
    if os.environ.get("DIFFZOO_REQUIRE_SLURM") == "1":
        pytest.fail(f"DIFFZOO_REQUIRE_SLURM=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def slurm():
    """A SLURM cluster that takes jobs: the machine's own, or one tests/slurm_cluster.sh starts."""
    if subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0:
        yield
        return
    if os.geteuid() != 0:
        _cannot("no SLURM cluster answers here (sinfo) and starting one needs root")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        _cannot("no SLURM cluster answers here, and neither slurmctld nor apt-get is there to start one")
    started = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
    if started.returncode:
        _cannot(f"tests/slurm_cluster.sh start failed: {(started.stdout + started.stderr)[-2000:]}")
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True)


def job_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T", "--states=all"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def local_table(tmp_path_factory):
    """The tiny pipeline's table from a local Snakemake run: what the cluster runs must equal it."""
    p = make_project(tmp_path_factory.mktemp("local") / "p")
    sh(p, "snakemake", "--cores", "2")
    return read(p, "results/tables/default.md")


@pytest.mark.slow
def test_pipeline_through_a_live_slurm_cluster_equals_a_local_run(slurm, local_table, tmp_path):
    p = make_project(tmp_path / "p")
    out = sh(p, "snakemake", "--workflow-profile", "workflow/profiles/slurm", *FAST_POLL)
    rule_of, rule = {}, None  # Snakemake's job id -> its rule (submissions are logged out of order)
    for line in out.splitlines():
        rule = m.group(1) if (m := re.match(r"(?:local)?rule (\w+):$", line)) else rule
        if m := re.match(r"    jobid: (\d+)$", line):
            rule_of[m.group(1)] = rule
    submitted = [rule_of[j] for j in re.findall(r"^Job (\d+) has been submitted with SLURM jobid \d+", out, flags=re.M)]
    assert set(submitted) == REMOTE_STAGES, out[-3000:]
    # one sbatch job per stage and run: 1 dataset, images, latents, reference; 2 trainings; 3 runs sampled
    # and evaluated (dit, dis and the sampling dit-cfg2)
    assert len(submitted) == 4 + 2 + 3 + 3
    for job in re.findall(r"has been submitted with SLURM jobid (\d+)", out):  # real jobs, each one done
        assert job_state(job) == "COMPLETED", job
    assert read(p, "results/tables/default.md") == local_table
    rows = table_rows(local_table)
    assert any(r[1] == "dit-cfg2" for r in rows)


@pytest.mark.slow
def test_dvc_repro_in_one_allocation_sized_from_the_params(slurm, local_table, tmp_path):
    p = make_project(tmp_path / "p")
    sh(p, "git", "init", "-q")
    options = sh(p, "diffzoo", "cost", "--sbatch").split()
    assert "--cpus-per-task=1" in options and not any(o.startswith("--gpus") for o in options)  # CPU params
    # No DVC remote: said in one line, and the job succeeds.
    out = sh(p, "sbatch", "--wait", "--parsable", *options, "workflow/slurm/dvc-repro.sbatch")
    log = read(p, f"diffzoo-dvc-{out.strip().splitlines()[-1]}.log")
    assert "no DVC remote configured" in log
    assert read(p, "results/tables/default.md") == local_table
    # With a remote, the job pushes every artifact: a fresh clone pulls and recomputes nothing.
    sh(p, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    out = sh(p, "sbatch", "--wait", "--parsable", *options, "workflow/slurm/dvc-repro.sbatch")
    log = read(p, f"diffzoo-dvc-{out.strip().splitlines()[-1]}.log")
    assert "no DVC remote" not in log
    assert "Data and pipelines are up to date" in log or "didn't change, skipping" in log
    git = ["git", "-c", "user.name=diffzoo", "-c", "user.email=diffzoo@example.org"]
    sh(p, "git", "add", "-A")
    sh(p, *git, "commit", "-qm", "results")
    fresh = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(p), str(fresh)], check=True)
    sh(fresh, "dvc", "pull")
    assert "Data and pipelines are up to date" in sh(fresh, "dvc", "status")
    assert read(fresh, "results/tables/default.md") == local_table


TRAIN = ["train", "--params", "params.yaml", "--experiment", "a"]


def short(raw):
    raw["train"].update(steps=6, global_batch_size=8, ckpt_every=3, log_every=3)


def weights(folder: Path) -> dict:
    from diffzoo.checkpoints import read_state_dict
    return read_state_dict(folder / "data/experiments/a/model.safetensors")


@pytest.mark.slow
def test_srun_two_tasks_train_what_one_process_trains(slurm, prepared, tmp_path):
    one = clone(prepared, tmp_path / "one")
    edit_params(one, short)
    subprocess.run(DIFFZOO + TRAIN, cwd=one, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    two = clone(prepared, tmp_path / "two")
    edit_params(two, short)
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=BIN + os.pathsep + os.environ["PATH"])
    srun = ["srun", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1"]  # one rank fails: both stop
    run = subprocess.run([*srun, "diffzoo", *TRAIN], cwd=two, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"world_size": 2' in run.stdout
    a, b = weights(one), weights(two)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-6
    loss = lambda f: [r.split("\t")[1] for r in read(f, "results/train/a.tsv").splitlines()[1:]]  # noqa: E731
    assert [float(x) for x in loss(two)] == pytest.approx([float(x) for x in loss(one)], abs=2e-6)


@pytest.mark.slow
def test_a_cancelled_training_job_resumes_when_resubmitted(slurm, prepared, tmp_path):
    p = clone(prepared, tmp_path / "p")
    edit_params(p, lambda raw: raw["train"].update(steps=3000, global_batch_size=8, ckpt_every=25, log_every=25))
    script = p / "train.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --output=train-%j.log\nexec diffzoo " + " ".join(TRAIN) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=BIN + os.pathsep + os.environ["PATH"])
    job = subprocess.run(["sbatch", "--parsable", str(script)], cwd=p, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    ckpts = p / "data/experiments/a/checkpoints"
    deadline = time.time() + 300
    while not list(ckpts.glob("step-*.pt")) and time.time() < deadline:
        assert job_state(job) in ("PENDING", "RUNNING"), (job_state(job), read(p, f"train-{job}.log")[-2000:])
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=True)
    while job_state(job) in ("PENDING", "RUNNING", "COMPLETING"):
        time.sleep(0.5)
    assert job_state(job) == "CANCELLED"
    assert not (p / "data/experiments/a/model.safetensors").exists()
    done = max(int(f.stem.split("-")[1]) for f in ckpts.glob("step-*.pt"))
    assert 0 < done < 3000
    again = subprocess.run(["sbatch", "--wait", "--parsable", str(script)], cwd=p, env=env, capture_output=True,
                           text=True)
    log = read(p, f"train-{again.stdout.strip()}.log")
    assert again.returncode == 0, log[-3000:]
    resumed = int(re.search(r"resuming a from step (\d+)", log).group(1))
    assert resumed >= done
    steps = [int(r.split("\t")[0]) for r in read(p, "results/train/a.tsv").splitlines()[1:]]
    assert steps == list(range(25, 3001, 25))  # every logged step once: nothing lost, nothing twice
    assert weights(p)


def test_slurm_task_env_maps_an_srun_step_to_torch_ranks():
    from diffzoo.errors import DiffzooError
    from diffzoo.runtime import launch_command, slurm_task_env

    step = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2", "SLURM_PROCID": "5",
            "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "42"}
    env = slurm_task_env(step, hostnames=lambda nodelist: ["gpu07", "gpu08"])
    assert {k: env[k] for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")} == {
        "WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07"}
    assert launch_command(TRAIN, {**step, **env}, gpus=4) is None  # a rank already: no torchrun on top
    # Not ranks: torchrun's own workers, one task, one task per node (that task becomes torchrun), the
    # batch script itself (no step).
    assert slurm_task_env({**step, "LOCAL_RANK": "0"}) == {}
    assert slurm_task_env({**step, "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_NUM_NODES": "1"}) == {}
    assert slurm_task_env({**step, "SLURM_STEP_NUM_TASKS": "2"}) == {}
    assert slurm_task_env({k: v for k, v in step.items() if k != "SLURM_STEP_ID"}) == {}
    with pytest.raises(DiffzooError, match="launch one rank per task"):
        slurm_task_env({k: v for k, v in step.items() if k != "SLURM_PROCID"})
