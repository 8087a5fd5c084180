"""Backbones by name. Importing this package registers every family."""
from .registry import check_model_name, create_model, list_models, model_family, model_source_files
from . import dit  # noqa: F401  (registers DiT-{S,B,L,XL}/{2,4,8})
from . import dit_moe  # noqa: F401
from . import dis, diffussm  # noqa: F401
from . import bst, moe_mamba, vmamba  # noqa: F401  (the Mamba family: BST-SH, MoE-Mamba, VMamba's SS2D)
from .dit import DiT

__all__ = ["create_model", "list_models", "check_model_name", "model_family", "model_source_files", "DiT"]
