"""images: the centre crops in shards (diffzoo.commands.images)."""
from __future__ import annotations

CODE = ["data/images.py", "data/crop.py", "data/shards.py", "data/_util.py", "stages/images.py", "commands/images.py"]


def params_slice(params, run_id=None) -> dict:
    return params.data.model_dump(mode="json")
