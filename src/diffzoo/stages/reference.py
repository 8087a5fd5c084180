"""reference: the feature extractor and the real images' statistics (diffzoo.commands.reference)."""
from __future__ import annotations

CODE = ["evaluate/*.py", "stages/reference.py", "commands/reference.py"]
GPUS = "gpus"  # params.resources key


def params_slice(params, run_id=None) -> dict:
    return {"data": params.data.model_dump(mode="json"),
            "evaluate": params.evaluate.model_dump(mode="json", exclude={"bootstrap"}),  # (not what it computes)
            "classifier": params.classifier.model_dump(mode="json")}
