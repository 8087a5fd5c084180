"""Layers shared by the backbones: conditioning embedders, adaLN modulation, attention, position
embeddings, the adaLN-Zero final layer, and the `Backbone` base class that gives every model
`forward_with_cfg`.

Each piece computes what facebookresearch/DiT computes and keeps its state_dict names, so official
checkpoints load strictly (see facts.md, "DiT").
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..choices import GUIDANCE_MODES


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of a token sequence (N, T, D) by per-sample shift and scale (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Integer timesteps -> [cos, sin] frequency features (256) -> Linear - SiLU - Linear."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        # Cos first, then sin: the order of the official code (swapping them changes every output).
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; row `num_classes` is the null class used by classifier-free guidance.

    Labels are replaced by the null class with probability `dropout_prob` in training only.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens (N, T, D) in row-major order; state_dict key `proj`."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with the timm layout (qkv stacked [q; k; v], proj), computed by
    `scaled_dot_product_attention` so flash/memory-efficient kernels are used where available.

    `qk_norm`: a LayerNorm over the head dimension (affine, eps 1e-6) on every head's queries and
    keys before the product, as the DiT-MoE authors' flash-attention block (FlashSelfMHAModified,
    which their released XL and G checkpoints use). Its names load too: Wqkv -> qkv, out_proj -> proj.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        head_dim = dim // num_heads
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self._register_load_state_dict_pre_hook(self._authors_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))

    @staticmethod
    def _authors_names(state_dict, prefix, *args) -> None:
        """The flash-attention block's names (Wqkv, out_proj) as ours."""
        for theirs, ours in (("Wqkv", "qkv"), ("out_proj", "proj")):
            for param in ("weight", "bias"):
                if f"{prefix}{theirs}.{param}" in state_dict:
                    state_dict[f"{prefix}{ours}.{param}"] = state_dict.pop(f"{prefix}{theirs}.{param}")


class Mlp(nn.Module):
    """fc1 - GELU(tanh) - fc2, timm's names."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) over a LayerNorm without affine, then a Linear to p*p*C_out per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def get_1d_sincos_pos_embed(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """[sin, cos] of pos * omega_i, omega_i = 1 / 10000^(i / (embed_dim/2)); shape (len(pos), embed_dim)."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D position embedding (grid_size**2, embed_dim), tokens in row-major order.

    The first embed_dim/2 channels encode the column (w) index and the last embed_dim/2 the row,
    as the official code does (its meshgrid puts w first).
    """
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    emb_col = get_1d_sincos_pos_embed(embed_dim // 2, cols)
    emb_row = get_1d_sincos_pos_embed(embed_dim // 2, rows)
    return np.concatenate([emb_col, emb_row], axis=1)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """(N, T, p*p*C) tokens, row-major over an h x w grid -> images (N, C, h*p, w*p)."""
    n, t, _ = x.shape
    h = w = int(round(t**0.5))
    if h * w != t:
        raise ValueError(f"{t} tokens do not form a square grid")
    x = x.reshape(n, h, w, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, h * patch_size, w * patch_size)


def init_adaln_zero(model: nn.Module) -> None:
    """Zero every adaLN output Linear (`adaLN_modulation[-1]`) and the final projection, so a fresh
    model is the identity on its residual stream and outputs exactly zero (adaLN-Zero)."""
    for name, module in model.named_modules():
        if name.endswith("adaLN_modulation"):
            nn.init.zeros_(module[-1].weight)
            nn.init.zeros_(module[-1].bias)
    final = getattr(model, "final_layer", None)
    if final is not None:
        nn.init.zeros_(final.linear.weight)
        nn.init.zeros_(final.linear.bias)




class Backbone(nn.Module):
    """Base of every registered model: forward(x, t, y) on latents, plus classifier-free guidance.

    Subclasses set in_channels, out_channels, learn_sigma, num_classes and input_size.
    """

    in_channels: int
    out_channels: int
    learn_sigma: bool
    num_classes: int
    input_size: int

    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def run_block(self, block: nn.Module, *args, **kwargs):
        """block(*args), under non-reentrant activation checkpointing when enabled in training."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def repeated_blocks(self) -> list[nn.Module]:
        """The repeated blocks (members of the model's top-level ModuleLists): the units that FSDP
        shards and gathers one at a time."""
        return [b for child in self.children() if isinstance(child, nn.ModuleList) for b in child]

    def aux_loss(self) -> torch.Tensor | None:
        """Extra training loss of the last forward (the MoE balance loss); None for dense models.
        The trainer adds it to the objective's loss as it is (coefficients live in the model)."""
        return None

    def aux_metrics(self) -> dict[str, float]:
        """Scalars of the last forward worth logging with the training metrics (MoE expert load)."""
        return {}

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         guidance: str = "legacy3") -> torch.Tensor:
        """Guided forward on a batch whose second half repeats the first with the null label.

        guidance="legacy3" guides channels 0..2 only, exactly as the official DiT code does (the kept
        bug behind the paper's FID 2.27); "all" guides every predicted-noise (or velocity) channel.
        """
        if guidance not in GUIDANCE_MODES:
            raise ValueError(f"guidance must be one of {GUIDANCE_MODES}, got {guidance!r}")
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        n_guided = 3 if guidance == "legacy3" else self.in_channels
        guided, rest = out[:, :n_guided], out[:, n_guided:]
        cond, uncond = torch.split(guided, len(guided) // 2, dim=0)
        half_guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([half_guided, half_guided], dim=0), rest], dim=1)

    def guided(self, cfg_scale: float, guidance: str = "legacy3"):
        """A model function (x, t, y) on N samples for the samplers: with cfg_scale > 1 it runs the
        2N batch [x; x] with labels [y; null] through forward_with_cfg and returns the first half
        (as the official sample.py does); otherwise the plain conditional forward."""
        if cfg_scale <= 1.0:
            return lambda x, t, y: self.forward(x, t, y)

        def fn(x, t, y):
            null = torch.full_like(y, self.num_classes)
            out = self.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), cfg_scale,
                                        guidance=guidance)
            return out[: len(x)]

        return fn
