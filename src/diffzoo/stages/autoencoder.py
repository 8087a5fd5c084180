"""autoencoder: the latent-diffusion autoencoder of the data set (diffzoo.commands.autoencoder)."""
from __future__ import annotations

# (the evaluate files it runs: not evaluate/bootstrap.py, which its evaluation does not use)
CODE = ["autoencoder.py", "stages/autoencoder.py", "commands/autoencoder.py", "training.py", "report/figures.py",
        *(f"evaluate/{name}.py" for name in ("__init__", "classifier", "evaluator", "features", "images", "judge",
                                             "metrics", "reference"))]
GPUS = "gpus"  # params.resources key


def params_slice(params, run_id=None) -> dict:
    return {"data": params.data.model_dump(mode="json"), "autoencoder": params.autoencoder.model_dump(mode="json"),
            "channels": params.autoencoder_channels, "used": params.uses_autoencoder,
            "grid": params.sample.grid}
