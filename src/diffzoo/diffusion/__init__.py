"""Diffusion objectives: the ADM/DiT Gaussian diffusion (DDPM/DDIM, respacing) and rectified flow."""
from __future__ import annotations

from .gaussian_diffusion import PREDICTIONS, GaussianDiffusion, get_named_beta_schedule
from .respace import SpacedDiffusion, space_timesteps


def create_diffusion(timestep_respacing, noise_schedule: str = "linear", use_kl: bool = False,
                     sigma_small: bool = False, predict_xstart: bool = False, learn_sigma: bool = True,
                     rescale_learned_sigmas: bool = False, diffusion_steps: int = 1000,
                     prediction: str | None = None) -> SpacedDiffusion:
    """The official DiT constructor: `create_diffusion("")` for training, `create_diffusion("250")`
    for the paper's sampler, "ddim50" for DDIM. `prediction` ("eps", "v" or "x0"; see
    GaussianDiffusion) extends it; the official `predict_xstart=True` means "x0"."""
    if prediction is None:
        prediction = "x0" if predict_xstart else "eps"
    elif predict_xstart and prediction != "x0":
        raise ValueError(f"predict_xstart=True contradicts prediction={prediction!r}")
    betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    loss_type = "kl" if use_kl else ("rescaled_mse" if rescale_learned_sigmas else "mse")
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    var_type = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
    return SpacedDiffusion(space_timesteps(diffusion_steps, timestep_respacing), betas,
                           model_var_type=var_type, loss_type=loss_type,
                           prediction=prediction)


__all__ = ["create_diffusion", "PREDICTIONS", "GaussianDiffusion", "SpacedDiffusion", "space_timesteps",
           "get_named_beta_schedule"]
