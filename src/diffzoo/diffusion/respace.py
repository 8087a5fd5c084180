"""Timestep respacing (IDDPM): sample with a subset of the 1000 training steps.

The model always receives timesteps on the original 0..999 scale, also when the chain is respaced.
"""
from __future__ import annotations

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """Timesteps to keep: "ddimN" (a uniform stride giving exactly N steps), or comma-separated counts
    per equal section ("250" keeps 0, 4, 8, ..., 995, 999 of 1000), or a list of counts."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {desired} steps of {num_timesteps} with a uniform stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)


class _TimestepMapped:
    """Calls the model with respaced indices mapped back to original timesteps."""

    def __init__(self, model, timestep_map: torch.Tensor):
        self.model = model
        self.timestep_map = timestep_map

    def __call__(self, x, t, **kwargs):
        return self.model(x, self.timestep_map.to(t.device)[t], **kwargs)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion over the kept timesteps, with betas recomputed from alpha-bar:
    beta'_i = 1 - abar[s_i] / abar[s_{i-1}]."""

    def __init__(self, use_timesteps, betas, **kwargs):
        self.use_timesteps = set(use_timesteps)
        base = GaussianDiffusion(betas, **kwargs)
        self.original_num_steps = base.num_timesteps
        timestep_map, new_betas, last = [], [], 1.0
        for i, abar in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - abar / last)
                last = abar
                timestep_map.append(i)
        self.timestep_map = torch.tensor(timestep_map, dtype=torch.long)
        super().__init__(np.array(new_betas), **kwargs)

    def _wrap_model(self, model):
        if isinstance(model, _TimestepMapped):
            return model
        return _TimestepMapped(model, self.timestep_map)
