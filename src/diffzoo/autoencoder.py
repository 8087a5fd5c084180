"""The latent-diffusion autoencoder the pipeline trains itself, for data without a pretrained VAE.

A diffusers `AutoencoderKL` (the class of SD's VAE, so the latents stage, sampling and `diffzoo sample
--vae FOLDER` load it as they load stabilityai/sd-vae-ft-ema) trained on the training images as the
latent-diffusion paper trains its KL autoencoders, less the two terms whose weights cannot be had
offline (LPIPS, and the patch discriminator that starts late in training):

    loss = sum over pixels |x - D(z)|  +  kl_weight * KL(q(z | x) || N(0, I)),   z ~ q(z | x)

summed per image and averaged over the batch (LDM's `LPIPSWithDiscriminator` with its perceptual and
GAN weights at 0 and logvar at its init 0; kl_weight 1e-6 as their KL-f8 config). L1, not L2: LDM's
choice, and sharper at equal steps. Adam at a constant rate, no EMA.

Training is resumable like the backbones' (training.Checkpointer: atomic step files, an identity
that a change of settings or data sets aside). The folder it writes holds the model as
`save_pretrained` writes it, `diffzoo.json` (settings, steps, loss, held-out PSNR) and the held-out
images' reconstructions (`reconstructions.npz`, ADM's npz layout with labels), which the stage
evaluates like a sample file: the floor any latent model can reach.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import DiffzooError
from .latents import to_adm_uint8
from .training import Checkpointer, global_batch_indices, mix_seed, restore_optimizer, resume_or_fresh
from .utils import Progress, kill_point, sha256_file

WEIGHTS = "diffusion_pytorch_model.safetensors"  # what save_pretrained writes
SUMMARY = "diffzoo.json"
RECONSTRUCTIONS = "reconstructions.npz"


def build_autoencoder(cfg: dict, channels: int):
    """The AutoencoderKL of an `autoencoder` params section, `channels` in and out."""
    from diffusers.models import AutoencoderKL

    blocks = len(cfg["block_out_channels"])
    return AutoencoderKL(in_channels=channels, out_channels=channels,
                         down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks,
                         block_out_channels=tuple(cfg["block_out_channels"]),
                         layers_per_block=cfg["layers_per_block"], latent_channels=cfg["latent_channels"],
                         norm_num_groups=cfg["norm_groups"], mid_block_add_attention=False)


def weights_digest(folder: str | Path) -> str:
    """sha256 of a saved autoencoder's weights (its identity for the latents made with it)."""
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise DiffzooError(f"{folder} holds no {WEIGHTS}: run the autoencoder stage first")
    return sha256_file(path)


def to_input(images: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 NHWC (three channels) -> float NCHW in [-1, 1], grey (the mean) for a one-channel model."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if channels == 1:
        x = x.mean(1, keepdim=True)
    return x / 127.5 - 1.0


def loss_terms(vae, x: torch.Tensor, kl_weight: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """LDM's loss of one batch (see the module doc): per image sums, batch means."""
    posterior = vae.encode(x).latent_dist
    eps = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device)  # CPU stream: resumable
    z = posterior.mean + posterior.std * eps
    rec = vae.decode(z).sample
    l1 = (rec - x).abs().flatten(1).sum(1).mean()
    kl = posterior.kl().mean()  # diffusers sums over the latent's elements
    return {"loss": l1 + kl_weight * kl, "l1": l1, "kl": kl}


def train_autoencoder(images: np.ndarray, cfg: dict, channels: int, checkpoints: Path, proc,
                      ckpt_every: int = 500, log_every: int = 100):
    """Train on `images` (uint8 NHWC): returns (the model, its summary). Batches are a pure function
    of (seed, step), so a resumed run equals an uninterrupted one."""

    torch.manual_seed(cfg["seed"])
    vae = build_autoencoder(cfg, channels).to(proc.device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg["lr"])
    identity = {"autoencoder": {k: v for k, v in cfg.items() if k != "steps"}, "channels": channels,
                "images": [int(len(images))], "data": _images_digest(images)}
    checkpointer = Checkpointer(checkpoints, identity, proc)
    state = resume_or_fresh(checkpointer, vae, vae, cfg["steps"])
    restore_optimizer(vae, opt, state)
    if state.step:
        print(f"autoencoder: resuming from step {state.step}", file=sys.stderr)
    progress = Progress(cfg["steps"], "autoencoder", "steps", initial=state.step, every=float("inf"))
    vae.train()
    window, t0 = [], time.perf_counter()
    for step in range(state.step, cfg["steps"]):
        gen = torch.Generator().manual_seed(mix_seed(cfg["seed"], step))
        idx = global_batch_indices(step, cfg["batch_size"], len(images), cfg["seed"])
        terms = loss_terms(vae, to_input(images[np.sort(idx)], channels).to(proc.device), cfg["kl_weight"], gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        window.append([terms["l1"].item() / x_size(images, channels), terms["kl"].item()])
        progress.update(1)
        done = step + 1
        if done % log_every == 0 or done == cfg["steps"]:
            now = time.perf_counter()
            state.elapsed += now - t0
            t0 = now
            l1, kl = np.mean(window, 0)
            state.log_rows.append(f"{done}\t{l1:.6f}\t{kl:.3f}")
            progress.note(f"step {done}/{cfg['steps']} L1 per pixel {l1:.4f} KL {kl:.1f} ETA {progress.eta()}")
            window = []
        if done % ckpt_every == 0 or done == cfg["steps"]:
            state.step = done
            checkpointer.save(done, vae, vae, opt, state)
        kill_point("autoencoder-step")
    progress.close()
    last = state.log_rows[-1].split("\t") if state.log_rows else ["0", "nan", "nan"]
    summary = {"steps": cfg["steps"], "batch_size": cfg["batch_size"], "train_images": int(len(images)),
               "channels": channels, "params": sum(p.numel() for p in vae.parameters()),
               "train_seconds": round(state.elapsed, 1), "final_l1_per_pixel": float(last[1]),
               "final_kl": float(last[2]), "log": state.log_rows}
    return vae.eval(), summary


def x_size(images: np.ndarray, channels: int) -> int:
    return int(np.prod(images.shape[1:3])) * channels


def _images_digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """decode(posterior mean) of uint8 NHWC images, as the sample stage writes its decoded samples:
    uint8 NHWC, grey repeated to three channels (the latents' round trip without the sampling noise)."""

    channels = int(vae.config.in_channels)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size], channels).to(vae.device)
        out.append(to_adm_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample))
    return np.concatenate(out)


def psnr(original: np.ndarray, reconstructed: np.ndarray) -> float:
    """Mean over images of 10 log10(255^2 / MSE) on the uint8 pixels a person sees."""
    a = original.astype(np.float64)
    mse = ((a - reconstructed.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))
