"""Rectified flow, the objective DiT-MoE's released checkpoints were trained with.

Convention (the authors' code, feizc/DiT-MoE diffusion/rectified_flow.py, and SD3's "rf/lognorm"):

- data x0 at t = 0, Gaussian noise at t = 1: x_t = (1 - t) * x0 + t * noise;
- training time t = sigmoid(z), z ~ N(logit_mean, logit_std^2) (logit-normal; (0, 1) by default);
- the model predicts the velocity v = dx_t/dt = noise - x0; loss = per-sample mean squared error
  (the first C output channels are the velocity; a learn_sigma model's extra channels are ignored);
- sampling integrates dx/dt = v from t = 1 (the noise) to t = 0 with `sampling_steps` Euler steps
  on the uniform grid t_i = i / steps: x <- x - (1 / steps) * v(x, t_i), i = steps, ..., 1.

The model receives `t * time_scale` as a float timestep. The backbones' sinusoidal embedding is made
for the 0..999 scale of DDPM, so the default time_scale = 1000 trains new models on that scale. The
authors' released DiT-MoE checkpoints were trained with t in [0, 1] passed as is: sample them with
time_scale=1.0.

Guidance needs nothing here: the pipeline passes `model.guided(cfg_scale, mode)` as model_fn, which
extrapolates the conditional output (the velocity) away from the unconditional one, as the authors'
sampler does on the velocity (their sampler guides every channel: mode "all").

The sampler is deterministic: `generator` is accepted for the Objective interface and not used.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .gaussian_diffusion import mean_flat, randn


class RectifiedFlow:
    """Rectified-flow objective (see module docstring); create_objective("rectified_flow", ...)."""

    name = "rectified_flow"

    def __init__(self, sampling_steps: int | str = 50, logit_mean: float = 0.0, logit_std: float = 1.0,
                 time_scale: float = 1000.0, learn_sigma: bool = False):
        steps = int(sampling_steps)
        if steps < 1:
            raise ValueError(f"sampling_steps must be a positive integer, got {sampling_steps!r}")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be positive, got {logit_std}")
        self.sampling_steps = steps
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.time_scale = float(time_scale)
        # Only informative: the first C channels of the output are the velocity either way.
        self.learn_sigma = learn_sigma

    def sample_t(self, n: int, generator=None, device=None) -> torch.Tensor:
        """Logit-normal training times in (0, 1), one per sample (per-sample generators allowed)."""
        z = randn((n,), generator, device, torch.float32)
        return torch.sigmoid(self.logit_mean + self.logit_std * z)

    def velocity(self, model_fn: Callable, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        """The model's velocity at (x, t), t in [0, 1] of shape (N,)."""
        out = model_fn(x, t * self.time_scale, **model_kwargs)
        return out[:, : x.shape[1]]

    def training_losses(self, model: Callable, x_start: torch.Tensor, model_kwargs: dict | None = None,
                        generator=None) -> dict[str, torch.Tensor]:
        """Per-sample terms: "mse" (velocity MSE) and "loss" (the same)."""
        model_kwargs = model_kwargs or {}
        t = self.sample_t(x_start.shape[0], generator, x_start.device)
        noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
        texp = t.to(x_start.dtype).view(-1, *([1] * (x_start.ndim - 1)))
        x_t = (1 - texp) * x_start + texp * noise
        v = self.velocity(model, x_t, t.to(x_start.dtype), model_kwargs)
        mse = mean_flat((noise - x_start - v) ** 2)
        return {"mse": mse, "loss": mse}

    @torch.no_grad()
    def sample(self, model_fn: Callable, noise: torch.Tensor, model_kwargs: dict | None = None,
               generator=None, progress: bool = False) -> torch.Tensor:
        """Euler integration from t = 1 (noise) to t = 0 in `sampling_steps` uniform steps."""
        model_kwargs = model_kwargs or {}
        x = noise
        steps = range(self.sampling_steps, 0, -1)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="euler sampling", leave=False)
        for i in steps:
            t = torch.full((x.shape[0],), i / self.sampling_steps, device=x.device, dtype=x.dtype)
            x = x - self.velocity(model_fn, x, t, model_kwargs) / self.sampling_steps
        return x
