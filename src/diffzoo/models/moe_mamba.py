"""MoE-Mamba: Efficient Selective State Space Models with Mixture of Experts (Pioro et al., 2024).

The paper interleaves Mamba layers with sparse MoE feed-forward layers: every Mamba layer is followed
by a Switch-style MoE layer (top-1 routing, load-balancing loss), each with its own residual branch.
Here one block is that pair, on DiT's skeleton (patchify, fixed sin-cos position embedding, t + y
conditioning by adaLN-Zero, final layer):

    x += gate_m * Mamba(modulate(LN(x), shift_m, scale_m))      # the Mamba layer
    x += gate_f * MoE(modulate(LN(x), shift_f, scale_f))        # the sparse MoE layer

* Mamba layer: diffzoo's mixer (mamba.py), bidirectional for images with Vision Mamba's "v2"
  (backward conv/x_proj/dt_proj/A/D on the flipped sequence, in/out projections shared), the two
  directions averaged (Vim's if_divide_out; averaging keeps mixed precision stable). The paper's
  language models are causal; images have no order to respect.
* MoE layer: diffzoo's SparseMoE (dit_moe.py): SwiGLU experts of width mlp_ratio * d, softmax router,
  top-k gates without renormalisation, optional shared expert, balance loss sum_i P_i f_i scaled by
  balance_loss_coef (Switch's alpha = 0.01) and summed over layers.
* Defaults where the paper is silent for images, or chosen: 8 experts, top_k = 1 (the paper's
  Switch routing), no shared expert (the paper has none; shared_expert_ratio > 0 adds one),
  mlp_ratio 4 (DiT's MLP width per expert), Mamba d_state 16, d_conv 4, expand 2 (mamba-ssm's).
* Initialisation: DiT's (xavier Linear layers, adaLN-Zero, so a fresh model outputs zero), then
  mamba-ssm's dt_proj init again (DiT's zero biases would set every step size to softplus(0)).

Configs: DiT's S/B/L/XL depths and widths (a depth-d model has d Mamba and d MoE layers), patch 2 or 4.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from .dit import DIT_CONFIGS, DiT
from .dit_moe import DEFAULT_BALANCE_LOSS_COEF, SparseMoE, SparseMoEModel
from .layers import modulate
from .mamba import Mamba
from .registry import register_family


class MoEMambaBlock(nn.Module):
    """A bidirectional Mamba layer, then a sparse MoE layer, each an adaLN-Zero residual branch."""

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0, num_experts: int = 8, top_k: int = 1,
                 shared_expert_ratio: float = 0.0, dispatch: str = "auto", d_state: int = 16, d_conv: int = 4,
                 expand: float = 2, divide_out: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mixer = Mamba(hidden_size, d_state=d_state, d_conv=d_conv, expand=expand, bimamba_type="v2",
                           divide_out=divide_out)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.moe = SparseMoE(hidden_size, int(hidden_size * mlp_ratio), num_experts=num_experts, top_k=top_k,
                             shared_expert_ratio=shared_expert_ratio, dispatch=dispatch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_m, scale_m, gate_m, shift_f, scale_f, gate_f = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_m.unsqueeze(1) * self.mixer(modulate(self.norm1(x), shift_m, scale_m))
        return x + gate_f.unsqueeze(1) * self.moe(modulate(self.norm2(x), shift_f, scale_f))


class MoEMamba(SparseMoEModel, DiT):
    """DiT's skeleton with MoE-Mamba blocks; block arguments (num_experts, top_k, d_state, ...) pass through."""

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 1152,
                 depth: int = 28, num_classes: int = 1000, learn_sigma: bool = True, class_dropout_prob: float = 0.1,
                 mlp_ratio: float = 4.0, balance_loss_coef: float = DEFAULT_BALANCE_LOSS_COEF, **block_kwargs):
        super().__init__(input_size=input_size, patch_size=patch_size, in_channels=in_channels,
                         hidden_size=hidden_size, depth=depth, num_heads=1, mlp_ratio=mlp_ratio,
                         class_dropout_prob=class_dropout_prob, num_classes=num_classes, learn_sigma=learn_sigma,
                         **block_kwargs)
        self.balance_loss_coef = balance_loss_coef

    def make_block(self, hidden_size: int, num_heads: int, mlp_ratio: float, **block_kwargs) -> nn.Module:
        return MoEMambaBlock(hidden_size, mlp_ratio=mlp_ratio, **block_kwargs)

    def initialize_weights(self) -> None:
        super().initialize_weights()
        for module in self.modules():
            if isinstance(module, Mamba):
                module.reset_dt_proj()


register_family("MoE-Mamba", {f"MoE-Mamba-{s}/{p}": partial(MoEMamba, patch_size=p, depth=DIT_CONFIGS[s]["depth"],
                                                            hidden_size=DIT_CONFIGS[s]["hidden_size"])
                              for s in DIT_CONFIGS for p in (2, 4)},
                source=[__file__] + [str(Path(__file__).with_name(f)) for f in ("mamba.py", "dit_moe.py", "dit.py")])
