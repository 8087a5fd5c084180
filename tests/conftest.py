"""Shared fixtures: a small project (digits through dataset -> images -> latents) that the stage tests
copy, so the data stages run once per test session; the two CPU selective-scan paths."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIFFZOO = [sys.executable, "-m", "diffzoo.cli"]


@pytest.fixture
def hf_offline(monkeypatch):
    """HF_HUB_OFFLINE for this test, also where huggingface_hub was imported before it (it reads the
    variable once, at import: an earlier test's import would leave it trying the network, with five
    retries, about 25 s here)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def tiny_params(model="DiT-S/4", objective="ddpm"):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["max_per_class"] = 20
    raw["train"].update(steps=40, global_batch_size=16, ckpt_every=5, log_every=5)
    raw["sample"].update(num_samples=48, batch_size=6, sampling_steps="8", sampler="ddpm")  # per-step noise too
    raw["experiments"] = {"a": {"model": model, "model_args": {"hidden_size": 32, "depth": 2, "num_heads": 2},
                                "objective": objective, "train": {}, "sample": {}}}
    return raw


def table_rows(md: str) -> list[list[str]]:
    """The body rows of a Markdown table (pandas' to_markdown pads its cells), as lists of cells."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def edit_params(folder: Path, edit) -> None:
    """Rewrite folder/params.yaml with edit(raw) applied."""
    raw = yaml.safe_load((folder / "params.yaml").read_text())
    edit(raw)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A project folder with the digits data set taken through dataset -> images -> latents and one
    experiment "a" (a tiny DiT-S/4) declared; tests copy it with clone() before changing anything."""
    root = tmp_path_factory.mktemp("prepared")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    for stage in ("dataset", "images", "latents"):
        subprocess.run(DIFFZOO + [stage, "--params", "params.yaml"], cwd=root, check=True, capture_output=True)
    return root


def require_fused_kernel():
    """The fused CPU scan kernels must build wherever there is a C compiler; without one there is
    nothing of theirs to test (mamba.py then runs its PyTorch path, which the other param tests)."""
    from diffzoo.models import scan_kernel

    if not scan_kernel.available():
        compiler = shutil.which(os.environ.get("CC", "cc"))
        assert compiler is None, f"{compiler} is there but the fused scan kernels did not build"
        pytest.skip("no C compiler: the fused scan kernels cannot be built here")


@pytest.fixture(params=["fused", "pytorch"])
def scan_path(request, monkeypatch):
    """Run a test on the fused C kernels (scan_kernel.py) and on the PyTorch path they replace."""
    from diffzoo.models import mamba

    if request.param == "pytorch":
        monkeypatch.setattr(mamba, "use_fused_kernel", lambda u: False)
    else:
        require_fused_kernel()
    return request.param


def pytest_sessionfinish(session, exitstatus):
    """With DIFFZOO_NO_SKIPS=1 (CI, which has every optional part: SLURM, Chromium, the Debian data,
    a C compiler) a skipped test fails the run: a skip there means a part went missing, not green."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("DIFFZOO_NO_SKIPS") == "1" and skipped and exitstatus == 0:
        if reporter:
            reporter.write_line(f"DIFFZOO_NO_SKIPS=1: {skipped} test(s) skipped; CI has every part they need")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
