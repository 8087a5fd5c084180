"""latents: one job per codec (diffzoo.commands.latents)."""
from __future__ import annotations

CODE = ["latents.py", "data/shards.py", "stages/latents.py", "commands/latents.py"]
GPUS = "gpus"  # params.resources key


def params_slice(params, run_id=None, codec: str = "") -> dict:
    lat = params.latents.model_copy(update=params.codecs[codec]) if codec in params.codecs else params.latents
    return {"data": params.data.model_dump(mode="json"),
            "latents": lat.model_dump(mode="json", exclude={"scale", "posterior"})}
