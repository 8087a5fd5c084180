"""sample: one job per experiment or sampling (diffzoo.commands.sample)."""
from __future__ import annotations

CODE = ["sampling.py", "runtime.py", "stages/sample.py", "commands/sample.py", "latents.py", "diffusion/*.py",
        "checkpoints.py", "report/figures.py"]
GPUS = "sample_gpus"  # params.resources key
PER_RUN = True


def params_slice(params, run_id: str) -> dict:
    run = params.run(run_id)
    return {"sample": run.sample.model_dump(mode="json"), "vae_dtype": run.latents.dtype}
