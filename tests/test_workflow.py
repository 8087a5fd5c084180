"""End to end through the real engines on a tiny config: Snakemake and DVC each run the whole
pipeline, then re-plan nothing, rerun exactly what a change touches, restore earlier results from
their caches, and rerun an experiment when its backbone's source file changes.

The project is copied to a temporary folder (src/ included, put first on PYTHONPATH) so the tests
can edit params.yaml and a backbone file without touching the repository.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import table_rows

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)
STAGE_CMD = re.compile(r"diffzoo (\S+) --params \S+(?: --experiment '?([^\s']+)'?)?")

pytestmark = pytest.mark.slow


def tiny_params() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["max_per_class"] = 24
    raw["classifier"]["epochs"] = 2
    raw["train"].update(steps=12, global_batch_size=16, ckpt_every=6, log_every=6)
    raw["sample"].update(num_samples=40, batch_size=40, sampling_steps="4")
    tiny = {"hidden_size": 32, "depth": 2}
    raw["experiments"] = {
        "dit": {"model": "DiT-S/4", "model_args": {**tiny, "num_heads": 2}, "objective": "ddpm", "train": {},
                "sample": {}},
        "dis": {"model": "DiS-S/4", "model_args": dict(tiny), "objective": "rectified_flow", "train": {}, "sample": {}},
    }
    raw["samplings"] = SAMPLINGS  # dit's model sampled again with guidance: no training of its own
    return raw


NO_TORCH = """import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked: planning must not import it")
sys.meta_path.insert(0, NoTorch())
"""
SAMPLINGS = {"dit-cfg2": {"experiment": "dit", "sample": {"cfg_scale": 2.0}}}


def make_project(dest: Path) -> Path:
    dest.mkdir()
    for name in ("Snakefile", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):  # what a clone has
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    os.symlink("workflow/profiles", dest / "profiles")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(dest, tiny_params())
    return dest


def snapshot(project: Path) -> dict:
    """The params the last Snakemake call's jobs read: its content-named snapshot (common.smk)."""
    files = sorted((project / ".snakemake/diffzoo").glob("params-*.yaml"), key=lambda f: f.stat().st_mtime_ns)
    return yaml.safe_load(files[-1].read_text())


def write_params(project: Path, raw: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def env_for(project: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(project / "src"), PATH=BIN + os.pathsep + os.environ["PATH"],
                OMP_NUM_THREADS="1", SNAKEMAKE_OUTPUT_CACHE=str(project / ".cache/snakemake"))


def sh(project: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=project, env=env_for(project), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


# DVC's per-experiment stages take the id from DVC_STAGE (no id in their command line): the stage name
# says which command ran for which id.
DVC_STAGE_RAN = re.compile(r"Running stage '([\w-]+)@([^']+)'")
DVC_COMMAND = {"code": "code-digest", "train": "train", "sample": "sample", "evaluate": "evaluate",
               "sampling": "sample", "evaluate-sampling": "evaluate"}


def jobs(output: str) -> set[tuple[str, str | None]]:
    """(stage, experiment) of every diffzoo call an engine printed (ran or planned)."""
    found = {(m.group(1), m.group(2)) for m in STAGE_CMD.finditer(output)}
    found -= {(DVC_COMMAND[m.group(1)], None) for m in DVC_STAGE_RAN.finditer(output)}
    found |= {(DVC_COMMAND[m.group(1)], m.group(2)) for m in DVC_STAGE_RAN.finditer(output)}
    return found - {("check", None)}  # DVC's params check reruns on any params change (it is cheap)


def chain(exp: str, engine: str = "snakemake") -> set:
    """The jobs downstream of an experiment's training: its own, its samplings', the report (and under
    DVC the claims stage, which reads every run's metrics; Snakemake has that rule only where the
    params name claims)."""
    runs = [exp] + [s for s, spec in SAMPLINGS.items() if spec["experiment"] == exp]
    return ({("train", exp), ("report", None)} | {(stage, r) for r in runs for stage in ("sample", "evaluate")}
            | ({("claims", None)} if engine == "dvc" else set()))


def read(project: Path, rel: str) -> str:
    return (project / rel).read_text()


def test_snakemake_end_to_end_and_caching(tmp_path):
    p = make_project(tmp_path / "smk")
    snakemake = lambda *a: sh(p, "snakemake", "--cores", "2", *a)  # noqa: E731

    out = snakemake()
    assert {("dataset", None), ("images", None), ("latents", None), ("reference", None),
            *chain("dit"), *chain("dis")} <= jobs(out)
    for rel in ("results/tables/default.md", "results/tables/default.csv", "results/tables/default.tex",
                "results/plots/fid_vs_gflops.png", "results/plots/loss.png", "results/samples/dit.png"):
        assert (p / rel).stat().st_size > 0, rel
    table = read(p, "results/tables/default.md")
    firsts = [row[:3] for row in table_rows(table)]
    assert ["diffzoo", "dit", "DiT-S/4"] in firsts and "classifier" in table
    assert ["diffzoo", "dit-cfg2", "DiT-S/4"] in firsts and "cfg 2.0" in table
    assert not (p / "data/experiments/dit-cfg2/model.safetensors").exists()
    metrics = json.loads(read(p, "results/metrics/dis.json"))
    assert metrics["fid"] >= 0 and 0 <= metrics["precision"] <= 1
    # A run a person can follow: the table at the end, every job's progress and result in its log.
    # (the console leaves out the columns with one value in every row: `source` here)
    assert ["dit", "DiT-S/4"] in [row[:2] for row in table_rows(out.split("steps (100%) done")[-1])]
    logs = {f.name: f.read_text() for f in (p / "logs").glob("*.log")}
    assert len(logs) >= 12 and all(logs.values()), sorted(k for k, v in logs.items() if not v)
    assert re.search(r"\d\d:\d\d:\d\d train dit: step 12/12 loss [\d.]+ [\d.]+ images/s ETA", logs["train-dit.log"])
    assert "machine: python" in logs["sample-dis.log"] and "40/40 samples (100%)" in logs["sample-dis.log"]
    assert re.search(r"^dit: FID: [\d.]+$", logs["evaluate-dit.log"], re.M), logs["evaluate-dit.log"]
    # Snakemake's HTML report: the tables, plots and sample grids, captioned.
    snakemake("--report", "report.html")
    html = read(p, "report.html")
    assert all(name in html for name in ("default.csv", "fid_vs_gflops.png", "loss.png", "dit-cfg2.png"))

    # 1. Nothing left to do, and planning that imports no torch: the plan cache answers the model
    #    questions (names, builds, FLOPs). Without it the same plan needs torch: the block is real.
    assert "Nothing to be done" in snakemake("-n")
    blocker = tmp_path / "no-torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_TORCH)
    env = dict(env_for(p), PYTHONPATH=f"{blocker}{os.pathsep}{p / 'src'}")
    plan = lambda **extra: subprocess.run(["snakemake", "-n", "--cores", "2"], cwd=p, env=dict(env, **extra),  # noqa: E731
                                          capture_output=True, text=True)
    planned = plan()
    assert planned.returncode == 0 and "Nothing to be done" in planned.stdout + planned.stderr, planned.stderr[-3000:]
    unplanned = plan(DIFFZOO_PLAN_CACHE="0")
    assert unplanned.returncode != 0 and "torch is blocked" in unplanned.stdout + unplanned.stderr

    # 2. One experiment's training setting: only its chain (and the tables) rerun.
    raw = tiny_params()
    first_dit = read(p, "results/train/dit.json")
    dis_model = (p / "data/experiments/dis/model.safetensors").resolve().stat().st_mtime_ns
    raw["experiments"]["dit"]["train"] = {"steps": 18}
    write_params(p, raw)
    assert jobs(snakemake("-n")) == chain("dit")
    snakemake()
    assert json.loads(read(p, "results/train/dit.json"))["steps"] == 18
    assert (p / "data/experiments/dis/model.safetensors").resolve().stat().st_mtime_ns == dis_model

    # 3. Changing it back restores the earlier results from the cache, without recomputing them
    #    (train_seconds in the restored metrics is the first run's, to the digit).
    write_params(p, tiny_params())
    out = snakemake()
    assert "from cache" in out
    assert read(p, "results/train/dit.json") == first_dit

    # 5. Editing a backbone's source file reruns exactly the experiments that use that backbone.
    dis_py = p / "src/diffzoo/models/dis.py"
    original = dis_py.read_text()
    dis_py.write_text(original + "\n# an edit\n")
    assert jobs(snakemake("-n")) == chain("dis")
    #    Also when the edited file's time stamp is older than the outputs (rsync -a, cp -p, tar x, clock
    #    skew): Snakemake compares the code's content (a digest among the rule's params), as DVC does.
    day_ago = time.time_ns() - 86_400 * 10**9
    os.utime(dis_py, ns=(day_ago, day_ago))
    assert jobs(snakemake("-n")) == chain("dis")
    dis_py.write_text(original)

    # 6. `--config` changes a value for this run only: the jobs read the merged params.
    assert jobs(snakemake("-n", "--config", "experiments={dit: {train: {steps: 18}}}")) == chain("dit")
    merged = snapshot(p)
    assert merged["experiments"]["dit"]["train"] == {"steps": 18} and merged["experiments"]["dis"]

    # 4. Adding an experiment runs only its chain.
    raw = tiny_params()
    raw["experiments"]["dit-b"] = dict(raw["experiments"]["dit"], train={"seed": 1})
    write_params(p, raw)
    assert jobs(snakemake("-n")) == chain("dit-b")


def test_snakemake_merges_configfiles_and_config_and_refuses_bad_values_before_any_job(tmp_path):
    p = make_project(tmp_path / "cfg")
    base = tiny_params()
    (p / "a.yaml").write_text(yaml.safe_dump(base))
    (p / "b.yaml").write_text(yaml.safe_dump({"train": {"steps": 7}, "sample": {"cfg_scale": 1.5}}))
    out = sh(p, "snakemake", "-n", "--cores", "1", "--configfile", "a.yaml", "b.yaml", "--config", "train={lr: 0.01}")
    merged = snapshot(p)
    # b over a, key by key; --config over both; the rest from a.
    assert merged["train"]["steps"] == 7 and merged["train"]["lr"] == 0.01
    assert merged["train"]["global_batch_size"] == base["train"]["global_batch_size"]
    assert merged["sample"]["cfg_scale"] == 1.5 and merged["sample"]["num_samples"] == base["sample"]["num_samples"]
    assert all(cmd.count('--params "$DIFFZOO_PARAMS"') for cmd in out.splitlines() if "diffzoo " in cmd
               and "--params" in cmd)
    for args, message in ((["--config", "train={steps: -1}"], "train.steps = -1 must be >= 1"),
                          (["--config", "sample={cfg: 2}"], "unknown key sample.cfg"),
                          (["--configfile", "a.yaml", "--config", "data={name: ../x}"], "data.name = '../x' must be")):
        proc = subprocess.run(["snakemake", "-n", "--cores", "1", *args], cwd=p, env=env_for(p), capture_output=True,
                              text=True)
        assert proc.returncode != 0 and message in proc.stderr + proc.stdout, (args, proc.stderr[-2000:])
        assert not jobs(proc.stdout + proc.stderr), args  # no job was planned


def test_released_weights_are_imported_not_trained(tmp_path):
    """An experiment with train.checkpoint gets an import job in Snakemake's plan, and no train job."""
    import torch

    from diffzoo.models import create_model
    p = make_project(tmp_path / "rel")
    raw = tiny_params()
    exp = raw["experiments"]["dit"]
    model = create_model(exp["model"], input_size=8, in_channels=1, num_classes=10, **exp["model_args"])
    torch.save(model.state_dict(), p / "weights.pt")
    raw["experiments"]["released"] = {**exp, "train": {"checkpoint": "weights.pt"}}
    write_params(p, raw)
    planned = jobs(sh(p, "snakemake", "-n", "--cores", "1"))
    assert ("import-checkpoint", "released") in planned and ("train", "released") not in planned
    assert {("train", "dit"), ("sample", "released"), ("evaluate", "released")} <= planned


def test_dvc_end_to_end_and_caching(tmp_path):
    p = make_project(tmp_path / "dvc")
    sh(p, "git", "init", "-q")  # a fresh clone: the DVC repository (.dvc/config) is committed, no `dvc init`
    dvc = lambda *a: sh(p, "dvc", *a)  # noqa: E731

    out = dvc("repro")
    assert {("dataset", None), ("images", None), ("latents", None), ("reference", None),
            *chain("dit", "dvc"), *chain("dis", "dvc")} <= jobs(out)
    assert (p / "results/tables/default.md").stat().st_size > 0
    assert ("sample", "dit-cfg2") in jobs(out) and ("train", "dit-cfg2") not in jobs(out)
    assert "name no claims" in read(p, "results/claims.md")  # (DVC runs every stage: a note, no work)

    # 1. Nothing changed.
    assert "Data and pipelines are up to date" in dvc("status")

    # 2. One experiment's training setting: only its chain reruns.
    first_dit = read(p, "results/train/dit.json")
    raw = tiny_params()
    raw["experiments"]["dit"]["train"] = {"steps": 18}
    write_params(p, raw)
    ran = jobs(dvc("repro"))
    assert ran == chain("dit", "dvc")

    # 3. Changing it back: the run-cache restores the outputs, no stage command runs.
    write_params(p, tiny_params())
    out = dvc("repro")
    assert jobs(out) == set(), out
    assert "is cached" in out
    assert read(p, "results/train/dit.json") == first_dit

    # 5. Editing a backbone file: the code digests are recomputed, only DiS retrains and resamples.
    #    (DVC compares content: the comment-only edit gives identical samples, so evaluate is skipped.)
    dis_py = p / "src/diffzoo/models/dis.py"
    original = dis_py.read_text()
    dis_py.write_text(original + "\n# an edit\n")
    ran = jobs(dvc("repro"))
    assert {("train", "dis"), ("sample", "dis")} <= ran
    assert not {j for j in ran if j[1] == "dit" and j[0] != "code-digest"}
    dis_py.write_text(original)

    # 4. Adding an experiment runs only its chain.
    dvc("repro")  # back to the original dis.py (restored from the run-cache)
    raw = tiny_params()
    raw["experiments"]["dit-b"] = dict(raw["experiments"]["dit"], train={"seed": 1})
    write_params(p, raw)
    ran = jobs(dvc("repro"))
    assert {j for j in ran if j[0] != "code-digest"} == chain("dit-b", "dvc")

    # A DVC remote round trip: push every artifact, then lose the cache and every artifact as a fresh
    # clone would (it keeps only what git tracks: the .gitignore files DVC wrote), and pull.
    before = read(p, "results/tables/default.md")
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"))
    dvc("push")
    shutil.rmtree(p / ".dvc/cache")
    for rel in ("data", "results"):
        for f in sorted((p / rel).rglob("*"), reverse=True):
            if f.is_dir() and not any(f.iterdir()):
                f.rmdir()
            elif f.is_file() and f.name not in (".gitignore", "headline.json"):
                f.unlink()  # (the headline metrics are `cache: false`: git tracks them, a clone has them)
    assert not (p / "data/experiments/dit-b/model.safetensors").exists()
    dvc("pull")
    assert "Data and pipelines are up to date" in dvc("status")
    assert read(p, "results/tables/default.md") == before
    assert (p / "data/experiments/dit-b/model.safetensors").stat().st_size > 0


def test_dvc_experiments_queue_runs_each_with_its_own_params(tmp_path):
    """`dvc exp run --queue -S ...` then `dvc queue start`: each queued experiment runs in its own
    copy of the workspace (its params, and through PYTHONPATH=src its code), and `dvc exp show`
    lists its headline metrics."""
    p = make_project(tmp_path / "exp")
    raw = tiny_params()
    raw["experiments"] = {"dit": raw["experiments"]["dit"]}
    raw["samplings"] = {}
    raw["train"].update(steps=6, ckpt_every=6, log_every=3)
    write_params(p, raw)
    git = ["git", "-c", "user.name=diffzoo", "-c", "user.email=diffzoo@example.org"]
    sh(p, "git", "init", "-q")
    sh(p, "dvc", "repro")
    sh(p, "git", "add", "-A")
    sh(p, *git, "commit", "-qm", "baseline")
    lr = raw["train"]["lr"]
    for name, value in (("low", lr / 2), ("high", lr * 2)):
        sh(p, "dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.lr={value}")
    sh(p, "dvc", "queue", "start", "-j", "1")
    deadline = time.time() + 900
    while re.search(r"Queued|Running", sh(p, "dvc", "queue", "status")) and time.time() < deadline:
        time.sleep(3)
    status = sh(p, "dvc", "queue", "status")
    assert status.count("Success") == 2, status + subprocess.run(["dvc", "queue", "logs", "low"], cwd=p, env=env_for(p),
                                                                 capture_output=True, text=True).stdout[-4000:]
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=p, env=env_for(p), capture_output=True, text=True)
    rows = json.loads(shown.stdout)
    seen = {}
    for commit in rows:
        for exp in commit.get("experiments") or []:
            run = exp["revs"][0]
            data = run["data"]
            seen[run["name"]] = (data["params"]["params.yaml"]["data"]["train"]["lr"],
                                 data["metrics"]["results/headline.json"]["data"]["dit"]["judge_acc"],
                                 data["metrics"]["results/headline.json"]["data"]["dit"]["fid"])
            assert set(data["metrics"]) == {"results/headline.json"}  # the only metrics file: one screen
    assert set(seen) == {"low", "high"}, seen
    assert seen["low"][0] == lr / 2 and seen["high"][0] == lr * 2
    assert seen["low"][2] != seen["high"][2]  # each trained with its own learning rate


def test_snakemake_lint_is_clean(tmp_path):
    """Snakemake's own conventions (a conda env per rule, envvars, log per rule, no absolute paths)."""
    p = make_project(tmp_path / "lint")
    out = sh(p, "snakemake", "--lint")
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]
