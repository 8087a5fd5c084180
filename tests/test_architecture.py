"""The import graph: the layers declared for import-linter in pyproject (the stage layer on top, nothing
below it imports a stage), and no import cycle, not even through imports inside functions. Lint: ruff
is clean on src/ and tests/ (pyproject's [tool.ruff])."""
import ast
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


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("diffzoo")}


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
    named = {m for c in contracts for key in ("layers", "source_modules") for m in c.get(key, [])}
    top = {".".join(name.split(".")[:2]) for name in MODULES if name != "diffzoo"}
    assert top <= named, f"modules in no import-linter contract: {sorted(top - named)}"


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = {name: {m for m in _imports(path, False) if m in MODULES and m != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, node, nxt]))
            if not state.get(nxt):
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if not state.get(node):
            visit(node, [])


def test_every_command_is_a_stage_module_with_help():
    from diffzoo.cli import commands
    table = commands()
    assert {"train", "sample", "evaluate", "preset", "import-checkpoint", "report"} <= set(table)
    assert all(help_text and not help_text.endswith(".") for help_text in table.values()), table


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists() and not shutil.which("ruff"):
        pytest.fail("ruff is not installed (it is in the [test] extra)")
    proc = subprocess.run([ruff, "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
