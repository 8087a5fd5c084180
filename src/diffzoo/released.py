"""The authors' released checkpoints: where each file is and what it takes to run it as they do.

Torch-free, so that checking params (train.checkpoint names) plans without importing torch; the
loading code is diffzoo.checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Released:
    """A released checkpoint and how its authors sample it."""

    url: str
    model: str                   # our registered name of the architecture
    objective: str               # what it was trained with
    image_size: int              # pixels (latents: image_size / 8)
    model_args: dict = field(default_factory=dict)  # layout options: qk_norm, learn_sigma, ...
    time_scale: float | None = None  # rectified flow: t in (0, 1) times this is the model's timestep
    sha256: str | None = None


_DIT = "https://dl.fbaipublicfiles.com/DiT/models/"
_DIT_MOE = "https://huggingface.co/feizhengcong/DiT-MoE/resolve/main/"
# facebookresearch/DiT README; feizc/DiT-MoE README (S/B: DDPM, sampled with DDIM in their table; XL/G:
# rectified flow with t in (0, 1), the flash-attention block with QK-norm, learn_sigma outputs kept).
RELEASED = {
    "DiT-XL-2-256x256.pt": Released(_DIT + "DiT-XL-2-256x256.pt", "DiT-XL/2", "ddpm", 256),
    "DiT-XL-2-512x512.pt": Released(_DIT + "DiT-XL-2-512x512.pt", "DiT-XL/2", "ddpm", 512),
    "dit_moe_s_8E2A.pt": Released(_DIT_MOE + "dit_moe_s_8E2A.pt", "DiT-MoE-S/2-8E2A", "ddpm", 256),
    "dit_moe_s_16E2A.pt": Released(_DIT_MOE + "dit_moe_s_16E2A.pt", "DiT-MoE-S/2-16E2A", "ddpm", 256),
    "dit_moe_b_8E2A.pt": Released(_DIT_MOE + "dit_moe_b_8E2A.pt", "DiT-MoE-B/2-8E2A", "ddpm", 256),
    "dit_moe_xl_8E2A.pt": Released(_DIT_MOE + "dit_moe_xl_8E2A.pt", "DiT-MoE-XL/2-8E2A", "rectified_flow", 256,
                                   {"qk_norm": True, "learn_sigma": True}, time_scale=1.0),
    "dit_moe_g_16E2A.pt": Released(_DIT_MOE + "dit_moe_g_16E2A.pt", "DiT-MoE-G/2-16E2A", "rectified_flow", 256,
                                   {"qk_norm": True, "learn_sigma": True}, time_scale=1.0),
}


def released(name_or_path: str) -> Released | None:
    """The registry entry of a released file, by name (a path's file name counts)."""
    return RELEASED.get(Path(name_or_path).name)
