"""dataset: the labeled images in the canonical layout (diffzoo.commands.dataset)."""
from __future__ import annotations

CODE = ["data/dataset.py", "data/_util.py", "stages/dataset.py", "commands/dataset.py"]


def params_slice(params, run_id=None) -> dict:
    return params.data.model_dump(mode="json", exclude={"resolution", "shard_size"})
