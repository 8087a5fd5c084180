"""evaluate: one job per experiment or sampling (diffzoo.commands.evaluate)."""
from __future__ import annotations

CODE = ["evaluate/*.py", "stages/evaluate.py", "commands/evaluate.py"]
GPUS = "gpus"  # params.resources key


def params_slice(params, run_id=None) -> dict:
    return {"evaluate": params.evaluate.model_dump(mode="json")}
