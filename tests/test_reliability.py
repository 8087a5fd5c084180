"""The reliability suite (marker `reliability`, run in CI): the attack of issue 15 replayed.

- kill -9 at seeded random points of every stage (the stage's own progress points and the middle of
  an atomic write), then a plain rerun: the artifacts equal an uninterrupted run's, no temp is left;
- a corrupted input of every artifact type: one line naming the file, no traceback, nothing deleted,
  and where the artifact is a resumable piece of our own (a sample part, a latents shard) it is moved
  aside and made again;
- two writers of one stage: the second gets one line naming the holder, the first finishes;
- the rest of the list: unsafe ids never reach a shell (DVC), pickles in weights files never run,
  settings that extend a run continue it, files follow the umask.

The kills are deterministic (diffzoo.utils.kill_point: the process SIGKILLs itself the n-th time it
passes a point), so the suite cannot race however busy the machine is.
"""
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import DIFFZOO, ROOT, clone, edit_params, tiny_params

pytestmark = pytest.mark.reliability

SEEDS = (0, 1, 2)
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def diffzoo(cwd: Path, *args: str, kill_at: str | None = None, check: bool = True, env=None):
    env = dict(env or ENV, **({"DIFFZOO_KILL_AT": kill_at} if kill_at else {}))
    proc = subprocess.run(DIFFZOO + list(args), cwd=cwd, env=env, capture_output=True, text=True)
    if check and kill_at:
        assert proc.returncode == -signal.SIGKILL, f"not killed at {kill_at}: {proc.stderr[-800:]}"
    elif check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def one_line_error(proc, *needles: str) -> str:
    """The stage failed through the CLI's single error path: exit 2, one line, no traceback."""
    err = proc.stderr.strip()
    errors = [line for line in err.splitlines() if ": error: " in line]  # progress lines may come before
    assert proc.returncode == 2 and len(errors) == 1 and err.endswith(errors[0]), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def params_for_suite() -> dict:
    raw = tiny_params()
    raw["data"]["shard_size"] = 40  # 200 images: 5 image and latents shards, so there is a middle
    raw["classifier"]["epochs"] = 2
    raw["train"].update(steps=20)
    raw["sample"].update(num_samples=24)
    return raw


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Every stage run once without interruption: the bytes the interrupted runs must reproduce."""
    root = tmp_path_factory.mktemp("whole")
    (root / "params.yaml").write_text(yaml.safe_dump(params_for_suite()))
    for stage in STAGES:
        diffzoo(root, *STAGES[stage]["cmd"])
    return root


# stage -> its command, its progress point and how many times it passes it, and the artifacts to compare.
STAGES = {
    "dataset": {"cmd": ["dataset", "--params", "params.yaml"], "point": None, "n": 0, "out": ["data/digits/raw"]},
    "images": {"cmd": ["images", "--params", "params.yaml"], "point": "images-shard", "n": 5,
               "out": ["data/digits/images-8"]},
    "latents": {"cmd": ["latents", "--params", "params.yaml"], "point": "latents-shard", "n": 5,
                "out": ["data/digits/latents-8"]},
    "reference": {"cmd": ["reference", "--params", "params.yaml"], "point": None, "n": 0,
                  "out": ["data/digits/reference-8-classifier"]},
    "train": {"cmd": ["train", "--params", "params.yaml", "--experiment", "a"], "point": "train-step", "n": 20,
              "out": ["data/experiments/a/model.safetensors", "data/experiments/a/model.json"]},
    "sample": {"cmd": ["sample", "--params", "params.yaml", "--experiment", "a"], "point": "sample-part", "n": 4,
               "out": ["data/experiments/a/samples.npz"]},
}
UPSTREAM = {s: list(STAGES)[:i] for i, s in enumerate(STAGES)}


def prepared_before(whole: Path, stage: str, dest: Path) -> Path:
    """A project holding the uninterrupted run's artifacts of the stages before `stage` only."""
    dest.mkdir()
    shutil.copy(whole / "params.yaml", dest / "params.yaml")
    for s in UPSTREAM[stage]:
        for rel in STAGES[s]["out"]:
            src, dst = whole / rel, dest / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dest


def files_of(root: Path, rel: str) -> dict[str, bytes]:
    path = root / rel
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def same_artifact(a: Path, b: Path, rel: str) -> None:
    fa, fb = files_of(a, rel), files_of(b, rel)
    assert fa.keys() == fb.keys(), sorted(set(fa) ^ set(fb))
    for name in fa:
        if name.endswith(".npz"):  # compare arrays (zip members carry write times)
            with np.load(a / name) as x, np.load(b / name) as y:
                assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files), name
        elif name.endswith(".json"):
            assert without_clock(json.loads(fa[name])) == without_clock(json.loads(fb[name])), name
        else:
            assert fa[name] == fb[name], name


CLOCK = {"train_seconds", "images_per_s", "gpu_hours", "seconds"}  # wall-clock figures: they differ in any two runs


def without_clock(obj):
    if isinstance(obj, dict):
        return {k: without_clock(v) for k, v in obj.items() if k not in CLOCK}
    return obj


def kill_points(stage: str, seed: int) -> list[str]:
    """Two seeded points for one stage: one of its progress points and the middle of an atomic write."""
    rng = random.Random(f"{stage}-{seed}")
    spec = STAGES[stage]
    out = [f"write:{rng.randint(1, 2)}"]
    if spec["point"]:
        out.append(f"{spec['point']}:{rng.randint(1, spec['n'] - 1)}")
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_anywhere_then_resume_gives_the_same_bytes(whole, tmp_path, stage, seed):
    for i, point in enumerate(kill_points(stage, seed)):
        root = prepared_before(whole, stage, tmp_path / f"p{i}")
        diffzoo(root, *STAGES[stage]["cmd"], kill_at=point)
        if stage in ("train", "sample"):  # the final artifact is written last
            assert not (root / STAGES[stage]["out"][0]).exists(), point
        diffzoo(root, *STAGES[stage]["cmd"])
        for rel in STAGES[stage]["out"]:
            same_artifact(whole, root, rel)
        assert not temps(root), (point, temps(root))
        assert not list(root.rglob("aside")), point


# ---- corrupted inputs -----------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


CORRUPT = {
    # artifact -> (the stage that reads it, its command, the file to corrupt)
    "images shard": ("latents", "data/digits/images-8/shard-00002.npz"),
    "latents shard": ("train", "data/digits/latents-8/shard-00001/mean.npy"),
    "model weights": ("sample", "data/experiments/a/model.safetensors"),
    "samples": ("evaluate", "data/experiments/a/samples.npz"),
    "reference statistics": ("evaluate", "data/digits/reference-8-classifier/reference.npz"),
    "classifier weights": ("evaluate", "data/digits/reference-8-classifier/classifier.safetensors"),
}


@pytest.mark.parametrize("artifact", list(CORRUPT))
def test_a_corrupt_input_is_one_line_naming_it_and_is_kept(whole, tmp_path, artifact):
    stage, rel = CORRUPT[artifact]
    root = clone(whole, tmp_path / "p")
    target = root / rel
    assert target.is_file(), rel
    truncate(target)
    before = target.read_bytes()
    cmd = STAGES[stage]["cmd"] if stage in STAGES else ["evaluate", "--params", "params.yaml", "--experiment", "a"]
    one_line_error(diffzoo(root, *cmd, check=False), rel.split("/")[-1])
    assert target.read_bytes() == before  # reported, not deleted or replaced


def test_a_corrupt_checkpoint_stops_training_and_stays(whole, tmp_path):
    root = prepared_before(whole, "train", tmp_path / "p")
    diffzoo(root, *STAGES["train"]["cmd"], kill_at="train-step:12")  # checkpoints at 5 and 10
    ckpt = root / "data/experiments/a/checkpoints/step-0000010.pt"
    truncate(ckpt)
    one_line_error(diffzoo(root, *STAGES["train"]["cmd"], check=False), "step-0000010.pt", "left in place")
    assert ckpt.is_file() and (root / "data/experiments/a/checkpoints/step-0000005.pt").is_file()


@pytest.mark.parametrize("what", ["sample part", "latents shard"])
def test_a_corrupt_piece_of_a_resumable_stage_is_set_aside_and_made_again(whole, tmp_path, what):
    if what == "sample part":
        root = prepared_before(whole, "sample", tmp_path / "p")
        diffzoo(root, *STAGES["sample"]["cmd"], kill_at="sample-part:3")
        piece = sorted((root / "data/experiments/a").glob("samples.parts-*/part-00001.npz"))[0]
        stage, rel = "sample", "data/experiments/a/samples.npz"
    else:
        root = prepared_before(whole, "latents", tmp_path / "p")
        diffzoo(root, *STAGES["latents"]["cmd"], kill_at="latents-shard:3")
        piece = root / "data/digits/latents-8/shard-00001/mean.npy"
        stage, rel = "latents", "data/digits/latents-8"
    truncate(piece)
    out = diffzoo(root, *STAGES[stage]["cmd"])
    assert "moved to" in out.stderr and what in out.stderr
    same_artifact(whole, root, rel)
    assert len([p for p in root.rglob("aside/*")]) == 1


def test_a_yaml_error_names_the_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  name: digits\n  source: [digits\n")
    line = one_line_error(diffzoo(tmp_path, "dataset", "--params", "params.yaml", check=False), "params.yaml")
    assert re.search(r"params.yaml:\d+:\d+: invalid YAML", line), line
    assert not (tmp_path / "data").exists()


def test_os_errors_take_the_single_error_path(tmp_path, monkeypatch, capsys):
    """Permission denied and a full disk come out as one line naming the file (as root, chmod does
    not deny reading: the errors are raised where the stage writes)."""
    import errno

    from diffzoo import cli
    from diffzoo.commands import report

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))  # the lock is named by its data set
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")):
        def fail(args, code=code, text=text):
            raise OSError(code, text, "results/tables/default.md")

        monkeypatch.setattr(report, "run", fail)
        monkeypatch.chdir(tmp_path)
        assert cli.main(["report", "--params", "params.yaml"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"diffzoo report: error: results/tables/default.md: {text}", err


# ---- two writers ------------------------------------------------------------------------------------------
def test_a_second_writer_of_a_stage_is_refused_with_the_holder(whole, tmp_path):
    root = prepared_before(whole, "train", tmp_path / "p")
    edit_params(root, lambda raw: raw["train"].update(steps=400))  # long enough to be caught running
    first = subprocess.Popen(DIFFZOO + STAGES["train"]["cmd"], cwd=root, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    ckpts = root / "data/experiments/a/checkpoints"
    while first.poll() is None and not list(ckpts.glob("step-*.pt")):  # it holds the lock and trains
        time.sleep(0.05)
    second = diffzoo(root, *STAGES["train"]["cmd"], check=False)
    running = first.poll() is None
    assert first.wait() == 0, first.stderr.read()[-2000:]
    assert running, "the first run ended before the second started"
    one_line_error(second, "train-a is already running", f"pid {first.pid}")
    assert (root / "data/experiments/a/model.safetensors").is_file()
    assert "resuming" not in first.stderr.read()  # the refused writer touched nothing


def test_the_stale_temp_cleanup_keeps_a_live_writers_temps(tmp_path):
    from diffzoo.utils import HOST, clean_stale_temps

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        names = {pid: tmp_path / f".step-0000005.pt.{HOST}-{pid}.abcd1234.tmp" for pid in (live.pid, dead.pid)}
        for p in names.values():
            p.write_bytes(b"x")
        other_host = tmp_path / ".shard-00001.otherhost-1.abcd1234.tmp"
        other_host.mkdir()
        assert clean_stale_temps(tmp_path) == [names[dead.pid]]
        assert names[live.pid].exists() and other_host.exists()
    finally:
        live.kill()


# ---- the rest of the attack -------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["params", "flag"])
def test_a_pickle_given_as_inception_weights_never_runs(whole, tmp_path, how):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pth"
    evil.write_bytes(pickle.dumps({"Conv2d_1a_3x3.conv.weight": _Payload(marker)}))
    root = clone(whole, tmp_path / "p")
    if how == "params":
        edit_params(root, lambda raw: raw["evaluate"].update(feature_extractor="inception",
                                                              inception_weights=str(evil)))
        proc = diffzoo(root, "evaluate", "--params", "params.yaml", "--experiment", "a", check=False)
    else:
        proc = diffzoo(root, "evaluate", "data/experiments/a/samples.npz", "--extractor", "inception",
                       "--inception-weights", str(evil), "--ref", "data/digits/reference-8-classifier/reference.npz",
                       "--no-download", check=False)
    assert not marker.exists()
    one_line_error(proc, "weights.pth")


# Ids that would run a command if they reached a shell, quoted ('...') or not (issue 25).
HOSTILE_IDS = ["x'$(touch $PWNED_AT)'", "y; touch $PWNED_AT; echo "]


@pytest.mark.parametrize("mode", ["repro", "single-stage", "downstream", "exp-run", "queue"])
def test_dvc_never_runs_an_unsafe_id_in_a_shell(tmp_path, mode):
    """No DVC mode runs an id from the params in a shell: the per-experiment stages take the id from
    DVC_STAGE, not from their command line, so `-s` and `--downstream` (which skip the `check` stage
    when an old data/params-check.json is there) and queued experiments are as safe as `dvc repro`."""
    p = tmp_path / "dvc"
    p.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        (p / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, p / name)
    shutil.copytree(ROOT / "src", p / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    raw = tiny_params()
    raw["experiments"] = {hostile: raw["experiments"]["a"] for hostile in HOSTILE_IDS}
    (p / "params.yaml").write_text(yaml.safe_dump(raw))
    (p / "data").mkdir()
    (p / "data/params-check.json").write_text("{}")  # an earlier run's: -s / --downstream skip `check`
    pwned = tmp_path / "PWNED"
    env = dict(ENV, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"], PYTHONPATH=str(p / "src"),
               PWNED_AT=str(pwned))
    run = lambda *cmd: subprocess.run(cmd, cwd=p, env=env, capture_output=True, text=True)  # noqa: E731
    git = ["git", "-c", "user.name=diffzoo", "-c", "user.email=diffzoo@example.org"]
    run("git", "init", "-q")
    if mode in ("exp-run", "queue"):
        run("git", "add", "-A")
        run(*git, "commit", "-qm", "hostile ids")
    outs = []
    for hostile in HOSTILE_IDS:
        cmd = {"repro": ["dvc", "repro"], "single-stage": ["dvc", "repro", "-s", f"code@{hostile}"],
               "downstream": ["dvc", "repro", "--downstream", f"code@{hostile}"],
               "exp-run": ["dvc", "exp", "run"], "queue": ["dvc", "exp", "run", "--queue"]}[mode]
        proc = run(*cmd)
        outs.append(proc.stdout + proc.stderr)
        if mode != "queue":
            assert proc.returncode != 0, outs[-1][-2000:]
    if mode == "queue":
        run("dvc", "queue", "start", "-j", "1")
        deadline = time.time() + 300
        while re.search(r"Queued|Running", run("dvc", "queue", "status").stdout) and time.time() < deadline:
            time.sleep(2)
        outs.append(run("dvc", "queue", "status").stdout)
        assert "Failed" in outs[-1], outs[-1]
    else:
        assert any(msg in out for out in outs for msg in ("must be a name of letters", "is not a safe name")), outs
    assert not pwned.exists()
    assert not list(tmp_path.rglob("PWNED*"))


def test_more_steps_and_a_code_edit_outside_the_model_continue_the_run(whole, tmp_path):
    root = prepared_before(whole, "train", tmp_path / "p")
    edit_params(root, lambda raw: raw["train"].update(steps=15))
    diffzoo(root, *STAGES["train"]["cmd"])
    # A longer run and an edited training loop: resumes at 15 and ends where a 20-step run ends.
    edit_params(root, lambda raw: raw["train"].update(steps=20, log_every=4))
    out = diffzoo(root, *STAGES["train"]["cmd"], env=dict(ENV, PYTHONPATH=str(edited_package(tmp_path))))
    assert "resuming a from step 15" in out.stderr
    same_artifact(whole, root, "data/experiments/a/model.safetensors")
    # A new learning rate is another run: fresh from step 0, the old checkpoints kept aside.
    lr = params_for_suite()["train"]["lr"]
    edit_params(root, lambda raw: raw["train"].update(lr=lr / 2))
    out = diffzoo(root, *STAGES["train"]["cmd"])
    assert "resuming a from" not in out.stderr and f"train.lr {lr} -> {lr / 2}" in out.stderr
    aside = list((root / "data/experiments/a/checkpoints-aside").iterdir())
    assert len(aside) == 1 and list(aside[0].glob("step-*.pt"))


def edited_package(tmp_path: Path) -> Path:
    """A copy of the package with a comment added to training.py (outside the model and objective)."""
    src = tmp_path / "edited"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    loop = src / "diffzoo/training.py"
    loop.write_text(loop.read_text() + "\n# an edit of the loop's file\n")
    return src


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_artifacts_follow_the_umask(whole, tmp_path, umask):
    root = prepared_before(whole, "sample", tmp_path / "p")
    proc = subprocess.run(["sh", "-c", f"umask {umask:03o} && exec \"$@\"", "sh", *DIFFZOO, *STAGES["sample"]["cmd"]],
                          cwd=root, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1000:]
    for rel in ("data/experiments/a/samples.npz", "results/samples/a.png"):
        assert (root / rel).stat().st_mode & 0o777 == 0o666 & ~umask, rel
    old = os.umask(umask)
    try:
        from diffzoo.utils import atomic_dir
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask


def test_empty_class_folders_are_refused_by_the_images_stage(tmp_path):
    for cls, n in (("a", 2), ("b", 2), ("c", 0)):
        d = tmp_path / "src" / cls
        d.mkdir(parents=True)
        for i in range(n):
            from PIL import Image
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
    proc = diffzoo(tmp_path, "images", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                   "--resolution", "8", check=False)
    one_line_error(proc, "class folder", "holds no images")


def test_documented_values_and_a_spaced_configfile_plan_under_snakemake(tmp_path):
    """`sampling_steps: "5,5"` (a respacing) and `train_gpus: 0` (a CPU job) once crashed planning;
    a --configfile whose name has a space once broke every job's command."""
    from test_workflow import make_project, sh, snapshot

    p = make_project(tmp_path / "smk")
    (p / "my params.yaml").write_text(json.dumps({"experiments": {"dit": {"sample": {"sampling_steps": "5,5"}}},
                                                  "resources": {"train_gpus": 0}}))
    out = sh(p, "snakemake", "--cores", "2", "-n", "-p", "--configfile", "params.yaml", "my params.yaml")
    assert "diffzoo train" in out and "sampling_steps" not in out
    sh(p, "snakemake", "--cores", "2", "data/digits/images-8", "--configfile", "params.yaml", "my params.yaml")
    merged = snapshot(p)
    assert merged["experiments"]["dit"]["sample"]["sampling_steps"] == "5,5"
    assert merged["resources"]["train_gpus"] == 0


@pytest.mark.parametrize("key, value, message", [
    ("data.path", "/no/such/ILSVRC2012_img_train.tar", "data.path = '/no/such/ILSVRC2012_img_train.tar': no such file"),
    ("latents.vae", "not a vae", "latents.vae = 'not a vae': neither 'identity', a local diffusers"),
    ("latents.vae", "/tmp", "latents.vae = '/tmp': the folder has no config.json"),
    ("evaluate.inception_weights", "/no/such.pth", "evaluate.inception_weights = '/no/such.pth': no such file"),
])
def test_missing_inputs_are_refused_at_plan_time(tmp_path, key, value, message):
    """Checked before Snakemake's first job (its onstart) and by DVC's first stage, before any job."""
    from test_workflow import make_project

    from diffzoo.params import check_inputs, validate

    raw = tiny_params()
    section, field = key.split(".")
    raw[section][field] = value
    if key == "data.path":
        raw["data"]["source"] = "imagenet-tar"
    if key == "latents.vae":  # a VAE needs colour and a multiple of 8 (here 32 px: 4x4 latents)
        raw["latents"]["grayscale"] = False
        raw["data"]["resolution"] = 32
    with pytest.raises(Exception, match=re.escape(message)):
        check_inputs(validate(raw))
    p = make_project(tmp_path / "smk")
    (p / "params.yaml").write_text(yaml.safe_dump(raw))
    env = dict(ENV, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"], PYTHONPATH=str(p / "src"))
    proc = subprocess.run(["snakemake", "--cores", "1"], cwd=p, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-1500:]
    assert not (p / "data").exists() and not (p / "logs").exists()  # no job ran
    # Planning alone (a preset's dry run on a login node without the data) is not refused.
    dry = subprocess.run(["snakemake", "--cores", "1", "-n"], cwd=p, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-1500:]


# A billion laughs as one flow value: each of 9 levels 9 aliases of the one before (9^9 values from 350 bytes).
LAUGHS = "[" + ", ".join(f"&{a} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]"
                         for a, p in zip("abcdefghi", [None, *"abcdefgh"], strict=True)) + "]"


@pytest.mark.parametrize("where", ["data.name", "model_args", "recursive", "size", "deep"])
def test_hostile_params_files_are_refused_at_once(tmp_path, where):
    """A 1 KB alias bomb (10^9 values once expanded), an alias that contains itself, a 2 MB params
    file and lists 5000 deep are each refused in one line naming the file, by `diffzoo check` and by
    Snakemake's planning, in well under the seconds a bomb takes to hang them. (The deep file stops
    Snakemake with its own RecursionError traceback: it reads a --configfile before our Snakefile.)"""
    raw = tiny_params()
    if where == "deep":
        text = yaml.safe_dump(raw) + "deep: " + "[" * 5000 + "]" * 5000 + "\n"
    elif where == "size":
        raw["comment"] = "x" * 2_000_000
        text = yaml.safe_dump(raw)
    elif where == "recursive":
        text = yaml.safe_dump(raw) + "loop: &loop [1, *loop]\n"
    else:
        if where == "data.name":
            raw["data"]["name"] = "BOMB"
        else:
            raw["experiments"]["a"]["model_args"]["extra"] = "BOMB"
        text = yaml.safe_dump(raw).replace("BOMB", LAUGHS)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    proc = diffzoo(tmp_path, "check", "--params", "params.yaml", check=False)
    expected = {"size": "a params file is at most", "recursive": "contains itself",
                "deep": "nested too deeply"}.get(where, "alias bomb")
    one_line_error(proc, "params.yaml", expected)
    plan = subprocess.run(["snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--configfile",
                           str(path)], cwd=tmp_path, env=dict(ENV, PATH=str(Path(sys.executable).parent) + os.pathsep
                                                                 + os.environ["PATH"]),
                          capture_output=True, text=True, timeout=120)
    said = "RecursionError" if where == "deep" else expected
    assert plan.returncode != 0 and said in plan.stdout + plan.stderr, (plan.stdout + plan.stderr)[-2000:]
    assert time.perf_counter() - t0 < 60


def _npz_with(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy(array) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _forged_header(shape) -> bytes:
    """An .npy header claiming `shape` of uint8, with no data after it."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buf.getvalue()


MALFORMED_SAMPLES = {
    "bad magic": ({"arr_0.npy": b"not an npy file at all"}, "not a readable sample file"),
    "bad header": ({"arr_0.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}  \n"}, "not a readable sample file"),
    "10^15 images": ({"arr_0.npy": _forged_header((10**15, 8, 8, 3))}, "forged header"),
    "truncated": ({"arr_0.npy": _npy(np.zeros((40, 8, 8, 3), np.uint8))[:-500]}, "truncated"),
    "pickled labels": ({"labels.npy": _npy(np.array([{"a": 1}] * 4, dtype=object))}, "labels are object"),
    "float labels": ({"labels.npy": _npy(np.full(4, 1.5))}, "labels are float64"),
    "nan labels": ({"labels.npy": _npy(np.full(4, np.nan))}, "labels are float64"),
    "negative labels": ({"labels.npy": _npy(np.full(4, -3))}, "labels has -3"),
    "garbage labels": ({"labels.npy": b"\x00" * 64}, "not a readable sample file"),
}


@pytest.mark.parametrize("case", list(MALFORMED_SAMPLES))
def test_malformed_sample_files_are_refused_in_one_line(tmp_path, case):
    """A sample npz with a broken or forged member: one line naming the file, before any image is read
    or any memory is taken for the count its header claims; labels must be whole numbers >= 0."""
    members, expected = MALFORMED_SAMPLES[case]
    members = {"arr_0.npy": _npy(np.zeros((4, 8, 8, 3), np.uint8)), **members}
    path = _npz_with(tmp_path / "samples.npz", members)
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    proc = diffzoo(tmp_path, "evaluate", str(ref), str(path), "--extractor", "classifier", check=False)
    one_line_error(proc, "samples.npz", expected)


def test_nan_weights_and_a_diverging_training_are_refused(prepared, tmp_path):
    """A loss that turns NaN stops the training in one line, without a checkpoint of NaN weights; a model
    file holding NaN is refused by sampling (it once gave all-black samples and exit 0)."""
    import torch
    from safetensors.torch import load_file, save_file

    root = clone(prepared, tmp_path / "p")
    edit_params(root, lambda raw: raw["train"].update(steps=30, lr=1.0e12, ckpt_every=5, log_every=5))
    proc = diffzoo(root, "train", "--params", "params.yaml", "--experiment", "a", check=False)
    one_line_error(proc, "training diverged")
    for ckpt in (root / "data/experiments/a/checkpoints").glob("step-*.pt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()), ckpt
    # A model that trained, then a NaN in its file.
    edit_params(root, lambda raw: raw["train"].update(steps=5, lr=1.0e-3))
    subprocess.run(["rm", "-rf", str(root / "data/experiments/a/checkpoints")], check=True)
    diffzoo(root, "train", "--params", "params.yaml", "--experiment", "a")
    weights = root / "data/experiments/a/model.safetensors"
    tensors = load_file(weights)
    name = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[name][...] = float("nan")
    weights.unlink()  # (the artifact may be a link into a cache: write a file of its own)
    save_file(tensors, weights)
    proc = diffzoo(root, "sample", "--params", "params.yaml", "--experiment", "a", check=False)
    one_line_error(proc, "model.safetensors", "NaN or inf")
    assert not (root / "data/experiments/a/samples.npz").exists()


def test_two_standalone_samplings_into_one_file_do_not_destroy_each_other(prepared, tmp_path):
    """`diffzoo sample --ckpt` takes a lock per output file: a second sampling into the same --out (from
    any folder) is refused in one line while the first holds it, instead of deleting its parts."""
    import fcntl

    root = clone(prepared, tmp_path / "p")
    edit_params(root, lambda raw: raw["train"].update(steps=2, ckpt_every=2, log_every=2))
    diffzoo(root, "train", "--params", "params.yaml", "--experiment", "a")
    out = tmp_path / "shared" / "samples.npz"
    out.parent.mkdir()
    argv = ["sample", "--ckpt", str(root / "data/experiments/a/model.safetensors"), "--num-fid-samples", "4",
            "--per-proc-batch-size", "4", "--num-sampling-steps", "2", "--out", str(out)]
    lock = out.parent / ".samples.npz.sample.lock"
    with open(lock, "a+") as held:  # the first sampling, as far as the lock can tell
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 1 on elsewhere since then\n")
        held.flush()
        proc = diffzoo(tmp_path, *argv, check=False)
        one_line_error(proc, "already running", str(lock))
        assert not out.exists()
    diffzoo(root, *argv)  # from another folder, once the first is done
    with np.load(out) as z:
        assert z["arr_0"].shape[0] == 4


def test_the_output_cache_is_writable_only_by_its_owner(tmp_path):
    """Snakemake's output cache stores entries 0666/0777 (a cache shared by users); our outputs link
    into it, so another local user could rewrite a model or a shard. Entries follow the umask: stored
    ones, and those an earlier run left open. Another user (nobody) can read but not change them."""
    import tempfile

    from test_workflow import make_project, sh, write_params

    shared = Path(tempfile.mkdtemp(prefix="diffzoo-cache-", dir="/tmp"))  # traversable by others, unlike tmp_path
    try:
        shared.chmod(0o755)
        p = make_project(shared / "project")
        write_params(p, params_for_suite())
        sh(p, "snakemake", "--cores", "2", "data/digits/images-8")
        images = p / "data/digits/images-8"
        assert images.is_symlink(), "images-8 did not come from the output cache"
        entries = list((p / ".cache/snakemake").iterdir())
        assert entries
        for path in [q for e in entries for q in [e, *e.rglob("*")]]:
            assert path.stat().st_mode & 0o022 == 0, f"{path} is {path.stat().st_mode & 0o777:o}"
        shard = next(f for f in images.resolve().iterdir() if f.is_file())
        if os.geteuid() == 0:  # as another user: reading works, writing does not
            nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c"]
            assert subprocess.run(nobody + [f"cat '{shard}' > /dev/null"]).returncode == 0
            for attack in (f"echo x >> '{shard}'", f"touch '{images}/new-file'"):
                proc = subprocess.run(nobody + [attack], capture_output=True, text=True)
                assert proc.returncode != 0 and "Permission denied" in proc.stderr, attack
        # an entry an earlier Snakemake left world-writable is closed when the Snakefile is next read
        shard.chmod(0o666)
        images.resolve().chmod(0o777)
        sh(p, "snakemake", "--cores", "1", "-n")
        assert shard.stat().st_mode & 0o777 == 0o644 & ~0o022
        assert images.resolve().stat().st_mode & 0o777 == 0o755
    finally:
        shutil.rmtree(shared)


def _tiny_checkpoint(folder: Path) -> Path:
    """A small DiT-S/4 written as our checkpoints are (safetensors + model.json)."""
    import torch

    from diffzoo.checkpoints import model_json, save_checkpoint
    from diffzoo.models import create_model

    args = {"input_size": 8, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "depth": 2, "num_heads": 2}
    torch.manual_seed(0)
    model = create_model("DiT-S/4", **args)
    path = folder / "model.safetensors"
    save_checkpoint(path, model.state_dict(), model_json("DiT-S/4", args, "ddpm", {}, "identity", 1.0, [1, 8, 8], 10))
    return path


HOSTILE_MODEL_JSON = {  # an edit of the model.json -> what the one line names
    "huge depth": (lambda c: c["model_args"].update(depth=10_000_000), "model_args.depth = 10000000 exceeds"),
    "huge width": (lambda c: c["model_args"].update(hidden_size=200_000), "model_args.hidden_size = 200000"),
    "a list": (lambda c: [c], "is a JSON list, not an object"),
    "unknown model": (lambda c: c.update(model="DiT-Q/4"), "model = 'DiT-Q/4' is not a registered model"),
    "negative size": (lambda c: c["model_args"].update(hidden_size=-32), "model_args.hidden_size = -32 is negative"),
    "zero classes": (lambda c: c["model_args"].update(num_classes=0), "does not match the model"),
    "no class names": (lambda c: c["latents"].update(classes=[]), "latents.classes must list the class names"),
    "unknown objective": (lambda c: c.update(objective="score"), "objective = 'score'; allowed: ddpm"),
    "heads do not divide": (lambda c: c["model_args"].update(num_heads=3), "model_args do not build DiT-S/4"),
    "text size": (lambda c: c["model_args"].update(depth=[2]), "model_args.depth = [2] is not a finite number"),
}


@pytest.mark.parametrize("case", list(HOSTILE_MODEL_JSON))
def test_a_hostile_model_json_is_refused_before_a_model_is_built(tmp_path, case):
    """model.json is input (it also comes with `sample --ckpt`): a traceback, or 6 GB in a minute for
    depth 1e7, became one line naming the key. The unedited file samples (the check refuses no model of ours)."""
    from diffzoo.checkpoints import load_model

    path = _tiny_checkpoint(tmp_path)
    load_model(path)
    edit, expected = HOSTILE_MODEL_JSON[case]
    config = json.loads(path.with_suffix(".json").read_text())
    edited = edit(config)
    path.with_suffix(".json").write_text(json.dumps(config if edited is None else edited))
    proc = diffzoo(tmp_path, "sample", "--ckpt", str(path), "--num-fid-samples", "4", "--out", "s.npz",
                   "--device", "cpu", check=False)
    one_line_error(proc, "model", expected)
    assert not (tmp_path / "s.npz").exists()


def test_every_registered_model_passes_the_model_json_check():
    """The bound of check_config (no integer of model_args above both the tensor count and the largest
    dimension) holds for every backbone at its full size and at a tiny one."""
    import torch

    from diffzoo.checkpoints import check_config, model_json
    from diffzoo.models import create_model, list_models

    for name in list_models():
        for args in ({"input_size": 32, "in_channels": 4, "num_classes": 1000},
                     {"input_size": 8, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "depth": 2}):
            with torch.device("meta"):
                try:
                    tensors = create_model(name, **args).state_dict()
                except ValueError:  # an attention model: heads that divide the tiny width
                    args = {**args, "num_heads": 2}
                    tensors = create_model(name, **args).state_dict()
            side = args["input_size"]
            check_config(model_json(name, args, "ddpm", {}, "identity", 1.0, [args["in_channels"], side, side],
                                    args["num_classes"]), tensors, name)


def test_poor_messages_of_the_second_round_name_the_thing(tmp_path):
    """Issue 25's poor messages: a revision of '..' parts is no repo id (it cost 42 s of HTTP retries);
    a released name under a missing folder is a missing file, not a download; gpu_model and partitions
    are names (SLURM's a,b lists too); a full disk names the artifact, not a temporary name."""
    import errno

    from diffzoo import hub
    from diffzoo.checkpoints import resolve_checkpoint
    from diffzoo.errors import DiffzooError
    from diffzoo.params import load_params
    from diffzoo.utils import atomic_path

    assert not hub.is_ref("../..") and not hub.is_ref("stabilityai/sd-vae-ft-ema@../../..")
    assert hub.is_ref("stabilityai/sd-vae-ft-ema@refs/pr/1") and hub.is_ref("a.b/c-d@v1.0")
    with pytest.raises(DiffzooError, match=r"/missing/dir/DiT-XL-2-256x256.pt: no such file \(the released name"):
        resolve_checkpoint("/missing/dir/DiT-XL-2-256x256.pt")
    for key, value, ok in (("gpu_model", "h100;rm -rf", False), ("partition", "gpu,gpu2", True),
                           ("account", "lab 42", False), ("gpu_partition", "a100", True)):
        raw = tiny_params()
        raw["resources"][key] = value
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
        if ok:
            load_params(tmp_path / "p.yaml")
        else:
            with pytest.raises(DiffzooError, match=f"resources.{key} = {value!r} must be"):
                load_params(tmp_path / "p.yaml")
    final = tmp_path / "out" / "samples.npz"
    with pytest.raises(OSError) as caught, atomic_path(final) as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.EFBIG, "File too large")  # what a write past the quota raises, without a name
    assert caught.value.filename == str(final) and not list(final.parent.iterdir())


def test_another_users_lock_file_and_a_read_only_folder(tmp_path):
    """A lock file another user left (0644) no longer blocks everyone with 'Permission denied' (flock
    works on a read-only descriptor); a folder the job cannot write is one line before any work. Run as
    user nobody where the test is root (CI), so permissions apply."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="diffzoo-perm-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        root = shared / "p"
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
        as_user = []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "65534:65534", str(root)], check=True)
            as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = dict(ENV, HOME=str(root), PYTHONPATH=str(ROOT / "src"))
        locks = root / ".diffzoo" / "locks"
        locks.mkdir(parents=True)
        foreign = locks / "dataset-data-digits.lock"
        foreign.write_text("pid 1 on elsewhere since long ago\n")
        foreign.chmod(0o644)
        if os.geteuid() == 0:  # the lock file is root's, its folder nobody's
            os.chown(foreign, 0, 0)
            os.chown(locks, 65534, 65534)
        proc = subprocess.run(as_user + DIFFZOO + ["dataset", "--params", "params.yaml"], cwd=root, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-1500:]
        assert (root / "data/digits/raw").is_dir()
        (root / "data").chmod(0o555)  # read-only: the images stage cannot make data/digits/images-8
        (root / "data/digits").chmod(0o555)
        proc = subprocess.run(as_user + DIFFZOO + ["images", "--params", "params.yaml"], cwd=root, env=env,
                              capture_output=True, text=True)
        one_line_error(proc, "data/digits: cannot write there", "nothing was computed")
    finally:
        for d in (shared / "p/data", shared / "p/data/digits"):
            d.chmod(0o755) if d.exists() else None
        shutil.rmtree(shared)


def test_standalone_sampling_writes_only_its_out(tmp_path):
    """`sample --ckpt` (no params file) once left .diffzoo/locks and logs/benchmarks in whatever folder it
    ran from; it writes its --out, the grid beside it and its lock there, nothing else."""
    weights = tmp_path / "w"
    weights.mkdir()
    path = _tiny_checkpoint(weights)
    here = tmp_path / "here"
    here.mkdir()
    diffzoo(here, "sample", "--ckpt", str(path), "--num-fid-samples", "4", "--num-sampling-steps", "4",
            "--out", str(tmp_path / "out" / "s.npz"), "--device", "cpu")
    assert list(here.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["s.npz", "s.png"]
