"""Facts about the code that planning needs, memoised so that a plan with nothing changed imports no torch.

Checking params and planning jobs asks the code a few questions: which model names are registered,
whether a model's args build it, which files a backbone is made of, its forward FLOPs (for the
jobs' time limits), how many steps a respacing gives. Answering them imports torch and builds models
on the meta device (about 2-3 s). Snakemake plans at every call, `-n` and a no-op run included, so
the answers are kept in .diffzoo/plan-cache.json, valid for one digest of the package's source files
and the installed torch: any edit of diffzoo's code, or another torch, starts the file afresh.
DIFFZOO_PLAN_CACHE=0 turns it off.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from .utils import PACKAGE

PATH = Path(".diffzoo/plan-cache.json")
_state: dict[str, Any] = {}


def code_digest() -> str:
    """sha256 of every source file of the package (path and bytes) and of the torch version."""
    h = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".c", ".yaml", ".json") and p.is_file()):
        h.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    with contextlib.suppress(metadata.PackageNotFoundError):
        h.update(metadata.version("torch").encode())
    return h.hexdigest()


def _entries() -> dict:
    if "entries" not in _state:
        _state["digest"] = code_digest()
        try:
            stored = json.loads(PATH.read_text())
            ok = isinstance(stored, dict) and stored.get("code") == _state["digest"]
            _state["entries"] = stored["entries"] if ok and isinstance(stored.get("entries"), dict) else {}
        except (OSError, ValueError):
            _state["entries"] = {}  # none yet, or unreadable: recomputed and rewritten
    return _state["entries"]


def memo(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """compute()'s JSON value for (kind, key), from the file when this code answered it before."""
    if os.environ.get("DIFFZOO_PLAN_CACHE", "1") == "0":
        return compute()
    entries = _entries()
    name = f"{kind}:{key}"
    if name not in entries:
        entries[name] = json.loads(json.dumps(compute()))  # what a later read gives back
        # Written whole and renamed into place, like an artifact, but not through utils.atomic_path:
        # this memo is no artifact and must not count among the stages' kill points (DIFFZOO_KILL_AT).
        tmp = PATH.with_name(f".{PATH.name}.{os.getpid()}.tmp")
        try:
            PATH.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"code": _state["digest"], "entries": entries}, sort_keys=True))
            os.replace(tmp, PATH)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only checkout plans too, just without the memo
    return entries[name]


# ---- The questions, asked of the code: the only place where planning reaches torch --------------------
# Each answer is memoised above, so the imports below run only when the code (or torch) changed since the
# last plan. pyproject's import contract "planning imports no torch" names these edges as its exceptions.

def unknown_model(name: str) -> str | None:
    """Why `name` is no registered model (with the close names), or None."""
    def compute():
        from .models import check_model_name
        try:
            check_model_name(name)
        except KeyError as err:
            return err.args[0]
        return None
    return memo("model-name", name, compute)


def model_error(model: str, args: dict) -> str | None:
    """Why `create_model(model, **args)` fails, or None; built on the meta device (no memory)."""
    def compute():
        import torch

        from .models import create_model
        try:
            with torch.device("meta"):
                create_model(model, **args)
        except (TypeError, ValueError) as err:
            return str(err).splitlines()[0]
        return None
    return memo("model-build", f"{model} {json.dumps(args, sort_keys=True)}", compute)


def model_files(model: str) -> list[str]:
    """The backbone's own source files, relative to the package: the memo file may be read by another copy
    of the package (a DVC experiment's workspace), where the same code lies under another folder."""
    def compute():
        from .models import model_source_files
        return [str(Path(p).resolve().relative_to(PACKAGE)) for p in model_source_files(model)]
    return memo("model-files", model, compute)


def model_cost(model: str, args: dict) -> dict:
    """{"gflops": ..., ...} of one forward (diffzoo.flops.model_cost)."""
    def compute():
        from .flops import model_cost as cost
        return cost(model, **args)
    return memo("model-cost", f"{model} {json.dumps(args, sort_keys=True)}", compute)


def respaced_steps(value: str) -> int | str:
    """The step count of a respacing ("250", "ddim25", "10,10"), or why it is none."""
    def compute():
        from .diffusion.respace import space_timesteps
        try:
            return len(space_timesteps(1000, value))
        except ValueError as err:
            return str(err)
    return memo("respaced-steps", value, compute)
