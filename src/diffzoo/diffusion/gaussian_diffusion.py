"""Gaussian diffusion as DiT/ADM use it (Ho et al. 2020; Nichol & Dhariwal 2021).

Epsilon prediction with a learned-range variance, the hybrid loss (MSE + VB term in bits with the
predicted mean detached), DDPM ancestral sampling and DDIM. Schedules are float64 numpy arrays;
per-timestep values are gathered and cast to the input's dtype.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..choices import PREDICTIONS, SAMPLERS

ModelFn = Callable[..., torch.Tensor]


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """The linear schedule of DDPM, scaled to the step count (1e-4..0.02 at 1000), or IDDPM's cosine."""
    if name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if name == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        n = num_diffusion_timesteps
        return np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=np.float64)
    raise ValueError(f"unknown beta schedule {name!r}; allowed: linear, cosine")


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under a Gaussian (ADM's decoder NLL)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def _draw(fn, shape, generator, device, **kw) -> torch.Tensor:
    """`fn(shape)` from one generator, or from a list of generators, one per sample along dim 0, so
    that each sample's draw depends only on its own generator (its seed and index), not on how samples
    are batched or split over GPUs. Draws happen on the generator's device (a CPU generator serves a
    CUDA run) and the result moves to `device`."""
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        out = torch.stack([fn(shape[1:], generator=g, device=g.device, **kw) for g in generator])
    else:
        out = fn(shape, generator=generator, device=generator.device if generator is not None else device, **kw)
    return out if device is None else out.to(device)


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws (see `_draw` for per-sample generators and devices)."""
    return _draw(torch.randn, shape, generator, device, dtype=dtype)


def rand(shape, generator=None, device=None) -> torch.Tensor:
    """Uniform [0, 1) draws (see `_draw`)."""
    return _draw(torch.rand, shape, generator, device)


def randint(high: int, shape, generator=None, device=None) -> torch.Tensor:
    """Uniform integers in [0, high) (see `_draw`)."""
    return _draw(lambda s, **kw: torch.randint(high, s, **kw), shape, generator, device)


def _gather(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[t] broadcast to `like`'s shape, in `like`'s dtype (float64 schedules stay exact in float64)."""
    out = torch.from_numpy(arr).to(device=t.device)[t].to(like.dtype)
    return out.view(-1, *([1] * (like.ndim - 1))).expand_as(like)




class GaussianDiffusion:
    """Diffusion with `model_var_type` in {"learned_range", "fixed_small", "fixed_large"}.
    `loss_type` is "mse" (hybrid with the VB term when the variance is learned), "rescaled_mse" or "kl".

    `prediction` is what the model's first C output channels are:
    - "eps": the noise (DDPM, ADM, DiT and every reproduced paper);
    - "v": the velocity v = sqrt(abar) * eps - sqrt(1 - abar) * x0 (Salimans & Ho 2022);
    - "x0": the clean data (ADM's START_X).
    The MSE term is taken in the predicted quantity's own space. Per unit of x0 error it weighs a
    timestep by SNR = abar / (1 - abar) for eps, SNR + 1 for v and 1 for x0: at high noise (SNR ~ 3e-4
    at t = 900 of the linear schedule) an eps model is barely asked for x0 at all, and a small model
    never learns the coarse structure that the sampler's first steps need (README, "Why the papers'
    recipe samples noise at this scale").
    """

    def __init__(self, betas: np.ndarray, model_var_type: str = "learned_range", loss_type: str = "mse",
                 prediction: str = "eps"):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        self.prediction = prediction
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.betas = betas
        self.num_timesteps = len(betas)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The variance is 0 at t=0: its log is clipped to the value at t=1.
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ---- the forward process -------------------------------------------------------------------
    def q_sample(self, x_start, t, noise=None):
        noise = torch.randn_like(x_start) if noise is None else noise
        return _gather(self.sqrt_alphas_cumprod, t, x_start) * x_start + \
            _gather(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x_start + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _gather(self.posterior_variance, t, x_t), _gather(self.posterior_log_variance_clipped, t, x_t)

    # ---- the reverse process -------------------------------------------------------------------
    def _predict_xstart_from_eps(self, x_t, t, eps):
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) / \
            _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def _predict_xstart(self, x_t, t, out):
        """x0 from the model's prediction (eps, v or x0)."""
        if self.prediction == "eps":
            return self._predict_xstart_from_eps(x_t, t, out)
        if self.prediction == "v":  # x0 = sqrt(abar) x_t - sqrt(1 - abar) v
            return (_gather(self.sqrt_alphas_cumprod, t, x_t) * x_t
                    - _gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * out)
        return out

    def training_target(self, x_start, noise, t):
        """What the model is trained to output for x_t = q_sample(x_start, t, noise)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "v":
            return _gather(self.sqrt_alphas_cumprod, t, noise) * noise - \
                _gather(self.sqrt_one_minus_alphas_cumprod, t, noise) * x_start
        return x_start

    def _wrap_model(self, model: ModelFn) -> ModelFn:
        return model

    def p_mean_variance(self, model: ModelFn, x, t, clip_denoised: bool = False, model_kwargs=None):
        """Mean, variance and x0 prediction of p(x_{t-1} | x_t) from the model's output."""
        model_kwargs = model_kwargs or {}
        c = x.shape[1]
        out = self._wrap_model(model)(x, t, **model_kwargs)
        if self.model_var_type == "learned_range":
            if out.shape[1] != 2 * c:
                raise ValueError(f"learned_range needs 2x{c} output channels, the model gave {out.shape[1]}")
            pred, var_values = out[:, :c], out[:, c:]
            min_log = _gather(self.posterior_log_variance_clipped, t, x)
            max_log = _gather(np.log(self.betas), t, x)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            pred = out[:, :c]
            if self.model_var_type == "fixed_large":
                # IDDPM: beta_t, with the posterior variance at t=0 for a better decoder likelihood.
                var_arr = np.append(self.posterior_variance[1], self.betas[1:])
                variance, log_variance = _gather(var_arr, t, x), _gather(np.log(var_arr), t, x)
            else:
                variance = _gather(self.posterior_variance, t, x)
                log_variance = _gather(self.posterior_log_variance_clipped, t, x)
        pred_xstart = self._predict_xstart(x, t, pred)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    def p_sample(self, model, x, t, clip_denoised=False, model_kwargs=None, noise=None):
        """One ancestral step x_t -> x_{t-1} (no noise added at t=0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        noise = torch.randn_like(x) if noise is None else noise
        nonzero = (t != 0).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return {"sample": out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise,
                "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model, x, t, clip_denoised=False, model_kwargs=None, eta: float = 0.0, noise=None):
        """One DDIM step (Song et al. 2021); eta=0 is deterministic."""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        ab = _gather(self.alphas_cumprod, t, x)
        ab_prev = _gather(self.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        mean_pred = out["pred_xstart"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * eps
        noise = torch.randn_like(x) if noise is None else noise
        nonzero = (t != 0).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return {"sample": mean_pred + nonzero * sigma * noise, "pred_xstart": out["pred_xstart"]}

    def sample_loop(self, model, shape, noise=None, clip_denoised=False, model_kwargs=None, device=None,
                    method: str = "ddpm", eta: float = 0.0, generator: torch.Generator | None = None,
                    progress: bool = False) -> torch.Tensor:
        """Run the whole reverse chain from noise with `method` "ddpm" (ancestral) or "ddim".

        `generator` (one, or a list with one per sample) draws the initial noise (when `noise` is None)
        and every step's noise, so a sample depends only on its generator's seed.
        """
        if method not in SAMPLERS:
            raise ValueError(f"sampling method must be 'ddpm' or 'ddim', got {method!r}")
        device = device or (noise.device if noise is not None else torch.device("cpu"))
        img = noise if noise is not None else randn(shape, generator, device)
        steps = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc=f"{method} sampling", leave=False)
        for i in steps:
            t = torch.full((img.shape[0],), i, device=device, dtype=torch.long)
            step_noise = randn(img.shape, generator, device, img.dtype)
            with torch.no_grad():
                if method == "ddpm":
                    img = self.p_sample(model, img, t, clip_denoised, model_kwargs, noise=step_noise)["sample"]
                else:
                    img = self.ddim_sample(model, img, t, clip_denoised, model_kwargs, eta=eta,
                                           noise=step_noise)["sample"]
        return img

    def p_sample_loop(self, model, shape, noise=None, clip_denoised=False, model_kwargs=None, device=None,
                      progress=False):
        """The official API name for ancestral sampling."""
        return self.sample_loop(model, shape, noise, clip_denoised, model_kwargs, device, "ddpm", progress=progress)

    def ddim_sample_loop(self, model, shape, noise=None, clip_denoised=False, model_kwargs=None, device=None,
                         progress=False, eta=0.0):
        return self.sample_loop(model, shape, noise, clip_denoised, model_kwargs, device, "ddim", eta=eta,
                                progress=progress)

    # ---- training --------------------------------------------------------------------------------
    def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=False, model_kwargs=None):
        """KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dim; the decoder NLL at t=0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised, model_kwargs)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return {"output": torch.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None) -> dict[str, torch.Tensor]:
        """Per-sample loss terms: "mse", "vb" (learned variance only) and their sum "loss"."""
        model_kwargs = model_kwargs or {}
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        terms: dict[str, torch.Tensor] = {}
        if self.loss_type == "kl":
            vb = self._vb_terms_bpd(model, x_start, x_t, t, False, model_kwargs)["output"]
            terms["loss"] = vb * self.num_timesteps
            return terms
        if self.loss_type not in ("mse", "rescaled_mse"):
            raise ValueError(f"unknown loss_type {self.loss_type!r}")
        out = self._wrap_model(model)(x_t, t, **model_kwargs)
        c = x_start.shape[1]
        if self.model_var_type == "learned_range":
            pred, var_values = out[:, :c], out[:, c:]
            # The VB term trains only the variance: the mean is taken from the detached prediction.
            frozen = torch.cat([pred.detach(), var_values], dim=1)
            terms["vb"] = self._vb_terms_bpd(lambda *a, **k: frozen, x_start, x_t, t, False)["output"]
            if self.loss_type == "rescaled_mse":
                terms["vb"] = terms["vb"] * self.num_timesteps / 1000.0
        else:
            pred = out[:, :c]
        terms["mse"] = mean_flat((self.training_target(x_start, noise, t) - pred) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms
