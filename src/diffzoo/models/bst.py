"""Block-State Transformer (Fathi et al., 2023), the single-head variant BST-SH, as a diffusion backbone.

A BST layer has an SSM sublayer over the whole sequence, whose outputs are the "context states",
and a Block Transformer sublayer that splits the sequence into blocks of W tokens; each block attends
to its own tokens and to context states. In BST-SH (single-head) the SSM maps the D-channel input to
a D-channel output sequence (one SSM "head" of D channels) and the context states of block i are the
SSM outputs at the W positions just before it, so they summarise everything up to the block (the
first block gets none: zeros). The multi-head (MH) and multi-filter (MF) variants form the context
from several heads or filters at one position; they are not implemented.

Choices where the paper (causal language models) is silent on images:

* Bidirectional context: a denoiser sees the whole image, so the SSM is DiffuSSM's bidirectional S4D
  (diffussm.BiS4D, FFT convolution, S4D-Lin or S4D-LegS): block i attends to the forward SSM's outputs
  over block i-1 (all tokens before it) and the backward SSM's outputs over block i+1 (all tokens
  after it), each padded with zeros past the ends: 2W context states per block.
* One attention over [context; block tokens]: queries are the block's tokens, keys and values the
  2W context states followed by the W block tokens (one softmax; no causal mask), multi-head.
* Conditioning and skeleton: DiT's (patchify, fixed sin-cos position embedding, t + y by
  adaLN-Zero, final layer, init). One block:

      h = modulate(LN(x), shift1, scale1)
      x += gate1 * BlockAttention(h, context = BiS4D(h))
      x += gate2 * MLP(modulate(LN(x), shift2, scale2))

* Block size W: 64 tokens for patch 2 (4 rows of the 16 x 16 token grid at 256px), 16 for patch 4,
  any W that divides the token count (`block_size`). Cost is linear in the tokens: per block W x 3W attention.

Configs: DiT's S/B/L/XL depths, widths and heads, patch 2 or 4; S4D d_state 64 (DiffuSSM's).
FLOP counting: projections and attention by FlopCounterMode, the S4D convolution declared by BiS4D.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .diffussm import BiS4D
from .dit import DIT_CONFIGS, DiT
from .layers import Mlp, modulate
from .registry import register_family


def block_context(y_fwd: torch.Tensor, y_bwd: torch.Tensor, block_size: int) -> torch.Tensor:
    """(N, L, D) forward and backward SSM outputs -> (N, L/W, 2W, D) context states per block: the
    forward outputs over the previous block and the backward outputs over the next (zeros past the ends)."""
    n, length, d = y_fwd.shape
    f = y_fwd.reshape(n, length // block_size, block_size, d)
    b = y_bwd.reshape(n, length // block_size, block_size, d)
    before = torch.cat([torch.zeros_like(f[:, :1]), f[:, :-1]], dim=1)
    after = torch.cat([b[:, 1:], torch.zeros_like(b[:, :1])], dim=1)
    return torch.cat([before, after], dim=2)


class BlockAttention(nn.Module):
    """Multi-head attention of each block's W tokens over [its context states; its tokens]."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (N, B, W, D) block tokens, context: (N, B, S, D) -> (N, B, W, D)."""
        n, blocks, w, d = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(n, blocks, w, heads, d // heads).transpose(2, 3)           # (N, B, h, W, d/h)
        kv = self.kv(torch.cat([context.to(x.dtype), x], dim=2))
        k, v = kv.reshape(n, blocks, -1, 2, heads, d // heads).permute(3, 0, 1, 4, 2, 5)  # (N, B, h, S+W, d/h)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(2, 3).reshape(n, blocks, w, d))


class BSTBlock(nn.Module):
    """BST-SH layer with adaLN-Zero: bidirectional S4D context, block attention, MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, block_size: int = 64,
                 d_state: int = 64, s4d_init: str = "lin"):
        super().__init__()
        self.block_size = block_size
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ssm = BiS4D(hidden_size, d_state=d_state, init=s4d_init)
        self.attn = BlockAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        w = self.block_size
        if length % w:
            raise ValueError(f"{length} tokens do not split into blocks of {w} (block_size)")
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift1, scale1)
        y = self.ssm(h)  # (N, L, 2, D): both directions
        context = block_context(y[:, :, 0], y[:, :, 1], w)
        attn = self.attn(h.reshape(n, length // w, w, d), context).reshape(n, length, d)
        x = x + gate1.unsqueeze(1) * attn
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class BST(DiT):
    """DiT's skeleton with BST-SH blocks; block_size, d_state and s4d_init pass through to the blocks."""

    block_class = BSTBlock

    def __init__(self, block_size: int = 64, d_state: int = 64, s4d_init: str = "lin", **dit_kwargs):
        super().__init__(block_size=block_size, d_state=d_state, s4d_init=s4d_init, **dit_kwargs)


# Patch 2 at 256px: 256 tokens in 4 blocks of 64 (4 token rows); patch 4: 64 tokens in 4 blocks of 16.
register_family("BST", {f"BST-{s}/{p}": partial(BST, patch_size=p, block_size=64 if p == 2 else 16, **DIT_CONFIGS[s])
                        for s in DIT_CONFIGS for p in (2, 4)},
                source=[__file__] + [str(Path(__file__).with_name(f)) for f in ("diffussm.py", "dit.py")])
