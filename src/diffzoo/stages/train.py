"""train: one job per experiment (diffzoo.commands.train)."""
from __future__ import annotations

CODE = ["training.py", "runtime.py", "stages/train.py", "commands/train.py", "latents.py", "diffusion/*.py",
        "checkpoints.py"]
GPUS = "train_gpus"  # params.resources key
PER_RUN = True
# Settings that do not change what step N computes: a run resumes across a change of them (more
# steps continue from the newest checkpoint). Every other train setting is the run's identity.
RESUMABLE = ("steps", "log_every", "ckpt_every", "parallel", "compile", "grad_checkpointing")
# The code whose edit starts a run afresh: the backbone's files and the objective's. An edit of
# anything else (the loop, the runtime, the checkpoint code) continues the run.
IDENTITY_CODE = ["diffusion/*.py"]


def params_slice(params, run_id: str) -> dict:
    run = params.run(run_id)
    return {"model": run.model, "model_args": run.model_args, "objective": run.objective,
            "train": run.train.model_dump(mode="json"),
            "latents": {k: getattr(run.latents, k) for k in ("scale", "posterior")}}
