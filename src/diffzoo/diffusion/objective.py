"""The training objective of an experiment, one interface for every backbone.

An objective draws its own training times, returns per-sample loss terms, and turns noise into
samples given a model function. `create_objective(name, **settings)` builds one by name:

- "ddpm": the ADM/DiT Gaussian diffusion (1000 training steps, hybrid loss when the model learns
  sigma, respaced DDPM or DDIM sampling). The default, as in the DiT, DiS and DiffuSSM papers.
- "rectified_flow": see rectified_flow.py (DiT-MoE's released checkpoints).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from . import create_diffusion
from ..choices import OBJECTIVES, SAMPLERS
from .gaussian_diffusion import randint, randn
from .rectified_flow import RectifiedFlow


class Objective(Protocol):
    name: str

    def training_losses(self, model: Callable, x_start: torch.Tensor, model_kwargs: dict,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-sample loss terms; "loss" is the one to optimise."""

    def sample(self, model_fn: Callable, noise: torch.Tensor, model_kwargs: dict,
               generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
        """Samples from `noise` with `model_fn(x, t, **model_kwargs)` (already guided if wanted)."""


class DDPMObjective:
    """Gaussian diffusion: uniform integer t in [0, 1000) for training; `sampling_steps` respaced
    steps ("250" as in the papers, or "ddimN" with method "ddim") for sampling. `prediction` (eps as
    the papers, v or x0) and `noise_schedule` (linear as the papers, or cosine) are the options for
    small-scale runs (see GaussianDiffusion)."""

    name = "ddpm"

    def __init__(self, learn_sigma: bool = True, diffusion_steps: int = 1000, noise_schedule: str = "linear",
                 sampling_steps: str | int = "250", sampler: str = "ddpm", clip_denoised: bool = False,
                 prediction: str = "eps"):
        settings = dict(noise_schedule=noise_schedule, learn_sigma=learn_sigma, diffusion_steps=diffusion_steps,
                        prediction=prediction)
        self.train_diffusion = create_diffusion("", **settings)
        self.sample_diffusion = create_diffusion(str(sampling_steps), **settings)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        self.sampler = sampler
        # Pixel-space data lives in [-1, 1]: ADM clips each x0 prediction there. DiT's latents are
        # unbounded and are not clipped (clip_denoised=False, as in the official sample.py).
        self.clip_denoised = clip_denoised

    def training_losses(self, model, x_start, model_kwargs, generator=None):
        t = randint(self.train_diffusion.num_timesteps, (x_start.shape[0],), generator, x_start.device)
        noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
        return self.train_diffusion.training_losses(model, x_start, t, model_kwargs, noise=noise)

    def sample(self, model_fn, noise, model_kwargs, generator=None, progress=False):
        return self.sample_diffusion.sample_loop(model_fn, noise.shape, noise=noise, clip_denoised=self.clip_denoised,
                                                 model_kwargs=model_kwargs, device=noise.device, method=self.sampler,
                                                 generator=generator, progress=progress)


CLASSES: dict[str, Callable[..., Objective]] = {"ddpm": DDPMObjective, "rectified_flow": RectifiedFlow}
assert tuple(CLASSES) == OBJECTIVES, "choices.OBJECTIVES names the classes here"


def create_objective(name: str, **settings) -> Objective:
    if name not in CLASSES:
        raise ValueError(f"unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
    return CLASSES[name](**settings)


def build_objective(name: str, learn_sigma: bool, sampling_steps: str, sampler: str = "ddpm",
                    clip_denoised: bool = False, **objective_args) -> Objective:
    """An experiment's objective from its settings: `sampling_steps` (respacing or Euler steps),
    `sampler` and `clip_denoised` (pixel space) for ddpm; `objective_args` as model.json keeps them
    (ddpm: prediction, noise_schedule)."""
    if name == "ddpm":
        return create_objective("ddpm", learn_sigma=learn_sigma, sampling_steps=sampling_steps, sampler=sampler,
                                clip_denoised=clip_denoised, **objective_args)
    return create_objective(name, sampling_steps=int(sampling_steps), **objective_args)
