"""The import graph: the contracts declared for import-linter in pyproject (the layers, no import cycle,
planning imports no torch), imports inside functions included; and a plan seen not to import torch.
Lint: ruff is clean on src/, tests/ and benchmarks/ (pyproject's [tool.ruff])."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "diffzoo"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def test_the_import_layers_hold():
    """The layers pyproject declares for import-linter (cli > pipeline > stages > everything else; the
    backbones and the diffusion maths below the pipeline's data and evaluation), imports inside functions
    included; and every module of the package is named by a contract, so a new one cannot slip past."""
    import tomllib

    linter = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(linter).exists():
        pytest.fail("lint-imports is not installed (import-linter is in the [test] extra)")
    proc = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"))
    assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout[-3000:]
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    named = {m.strip() for c in contracts for key in ("layers", "source_modules") for entry in c.get(key, [])
             for m in entry.split("|")}  # ("a | b": a layer of independent siblings)
    top = {".".join(name.split(".")[:2]) for name in MODULES if name != "diffzoo"}
    assert top <= named, f"modules in no import-linter contract: {sorted(top - named)}"


def test_a_plan_with_nothing_changed_imports_no_torch(tmp_path):
    """The contract "planning imports no torch" at work: planning every job of the default (its params
    checked, every stage's slice, code digest and resources) imports torch the first time, to ask the
    code about its models (plan_cache), and not again once the answers are memoised."""
    script = (
        "import sys\n"
        "from diffzoo import pipeline\n"
        "from diffzoo.params import load_params\n"
        f"params = load_params({str(ROOT / 'params.yaml')!r})\n"
        "for stage in pipeline.pipeline_stages():\n"
        "    runs = params.run_ids if getattr(pipeline.stage_module(stage), 'PER_RUN', False) else [None]\n"
        "    for run in runs:\n"
        "        pipeline.slice_digest(params, stage, run); pipeline.code_digest(stage, params, run)\n"
        "        pipeline.resources(params, stage)\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules))\n")
    env = {k: v for k, v in os.environ.items() if k != "DIFFZOO_PLAN_CACHE"}
    runs = [subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    assert runs[0].stdout.strip() == "['torch']"  # the first plan asked the models (else this test tests nothing)
    assert runs[1].stdout.strip() == "[]"


def test_every_command_is_a_module_with_help():
    from diffzoo.cli import commands, main
    table = commands()
    assert {"train", "sample", "evaluate", "preset", "import-checkpoint", "report", "claims"} <= set(table)
    assert all(help_text and not help_text.endswith(".") for help_text in table.values()), table
    out = subprocess.run([str(Path(sys.executable).with_name("diffzoo")), "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]  # (a "%" in a help line once crashed argparse here)
    assert all(name in out.stdout for name in table) and "95% intervals" in out.stdout
    for name in table:  # each command's own --help
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0, name


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists() and not shutil.which("ruff"):
        pytest.fail("ruff is not installed (it is in the [test] extra)")
    proc = subprocess.run([ruff, "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
