"""DiS: Scalable Diffusion Models with State Space Backbone (Fei et al., 2024; repo feizc/DiS).

Computes what the authors' `models_dis.py` (class DisModel) computes, with its state_dict names, so
their checkpoints would load with strict=True -- but runs without their mamba fork: the mixers are
our bidirectional "v2" `Mamba` (mamba.py), which uses mamba-ssm's CUDA scan when it is installed and
our own parallel scan otherwise.

Architecture (authors' code, which the published numbers came from):
* tokens [label, time, patches]: the label token is LabelEmbedder(y) (null class = num_classes,
  dropped with class_dropout_prob in training), the time token is the [cos, sin] frequency
  embedding of t with d = hidden_size frequencies followed by Linear(d, 4d) - SiLU - Linear(4d, d);
  a learnable position embedding (zeros at init) is added to all tokens;
* depth // 2 "in" blocks, one mid block, depth // 2 "out" blocks (depth + 1 blocks), U-ViT long
  skips: out block i concatenates the output of in block (depth//2 - 1 - i) and maps 2d -> d;
* a block is mamba-ssm's pre-norm residual block: residual += drop_path(hidden); hidden =
  mixer(RMSNorm(residual)), with the residual stream kept in float32 (authors: residual_in_fp32);
* final RMSNorm, then DiT's final layer with adaLN from c = time token + label token (the only adaLN);
  the two extra tokens are dropped and the patches unpatchified.
* mixer: Mamba(d, d_state=16, d_conv=4, expand=2, bimamba_type="v2"), directions summed.

* init: mamba-ssm's (_init_weights): Linear biases zero except dt_proj's, embeddings N(0, 0.02),
  out_proj weights kaiming-uniform / sqrt(depth); everything else PyTorch's default (the final
  layer is NOT zeroed, as in the authors' code).
* stochastic depth: linearly increasing to drop_path_rate (authors' default 0.1) over the blocks, and
  drop_path_rate on the last hidden state before the final norm, as in the authors' code.

Configs (papers.yaml "dis"): S 24/368, B 24/768, M 48/768, L 48/1024, H 48/1536 (depth/hidden),
patch 2 or 4.

Vision Mamba's layout (Zhu et al., 2024; hustvl/Vim, models_mamba.py), as options:
* `token_position="middle"` (Vim's use_middle_cls_token): the condition tokens [label, time] go into
  the middle of the patch sequence, at index M // 2 of M patches, instead of in front (Vim places
  its class token there so both scan directions reach it after half the image); the position
  embedding is added after the insertion, as in Vim, and the outputs at those positions are dropped;
* `divide_out=True` (Vim's if_divide_out): the two scan directions are averaged, not summed.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from .layers import Backbone, FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder, unpatchify
from .mamba import Mamba
from .registry import register_family

DIS_CONFIGS = {
    "S": dict(depth=24, hidden_size=368),
    "B": dict(depth=24, hidden_size=768),
    "M": dict(depth=48, hidden_size=768),
    "L": dict(depth=48, hidden_size=1024),
    "H": dict(depth=48, hidden_size=1536),
}
PATCH_SIZES = (2, 4)
TOKEN_POSITIONS = ("prepend", "middle")  # DiS: [label, time, patches]; Vim: patches with the tokens at M // 2


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's DropPath, scaled by 1/keep)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class DiSBlock(nn.Module):
    """mamba-ssm's Block: Add -> RMSNorm -> Mixer, returning (mixer output, residual stream)."""

    def __init__(self, dim: int, mixer_kwargs: dict, norm_eps: float = 1e-5, drop_path: float = 0.0,
                 skip: bool = False, residual_in_fp32: bool = True):
        super().__init__()
        self.mixer = Mamba(dim, bimamba_type="v2", **mixer_kwargs)
        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.drop_path = drop_path
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, skip: torch.Tensor | None = None):
        if self.skip_linear is not None:
            hidden = self.skip_linear(torch.cat([hidden, skip], dim=-1))
        residual = hidden if residual is None else residual + drop_path(hidden, self.drop_path, self.training)
        if self.residual_in_fp32:
            residual = residual.float()
        hidden = self.norm(residual.to(self.norm.weight.dtype))
        return self.mixer(hidden), residual


class DiS(Backbone):
    """Diffusion state space model over patch tokens, with time and label as tokens and long skips."""

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 368,
                 depth: int = 24, num_classes: int = 1000, learn_sigma: bool = True, class_dropout_prob: float = 0.1,
                 d_state: int = 16, d_conv: int = 4, expand: float = 2, divide_out: bool = False,
                 norm_eps: float = 1e-5, drop_path_rate: float = 0.1, skip: bool = True,
                 token_position: str = "prepend"):
        super().__init__()
        if depth % 2:
            raise ValueError(f"DiS depth counts in- plus out-blocks and must be even, got {depth}")
        if token_position not in TOKEN_POSITIONS:
            raise ValueError(f"token_position must be one of {TOKEN_POSITIONS}, got {token_position!r}")
        self.token_position = token_position
        self.input_size, self.patch_size = input_size, patch_size
        self.in_channels, self.learn_sigma = in_channels, learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.num_classes, self.hidden_size = num_classes, hidden_size
        self.drop_path_rate = drop_path_rate

        self.patch_embed = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.time_embed = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.SiLU(),
                                        nn.Linear(4 * hidden_size, hidden_size))
        self.extras = 1
        if num_classes > 0:
            self.label_emb = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
            self.extras = 2
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.patch_embed.num_patches, hidden_size))

        mixer = dict(d_state=d_state, d_conv=d_conv, expand=expand, divide_out=divide_out)
        rates = [0.0] + [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # authors' inter_dpr
        half = depth // 2
        self.in_blocks = nn.ModuleList(
            [DiSBlock(hidden_size, mixer, norm_eps, rates[i]) for i in range(half)])
        self.mid_block = DiSBlock(hidden_size, mixer, norm_eps, rates[half])
        self.out_blocks = nn.ModuleList(
            [DiSBlock(hidden_size, mixer, norm_eps, rates[half + 1 + i], skip=skip) for i in range(half)])
        self.norm_f = nn.RMSNorm(hidden_size, eps=norm_eps)
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        if num_classes <= 0:
            self.final_layer.adaLN_modulation = None
        self.initialize_weights(depth)

    def initialize_weights(self, n_layer: int) -> None:
        """mamba-ssm's _init_weights, as the authors apply it."""
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None \
                    and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, Mamba):
                nn.init.kaiming_uniform_(module.out_proj.weight, a=math.sqrt(5))
                with torch.no_grad():
                    module.out_proj.weight /= math.sqrt(n_layer)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W) latents, t: (N,) integer timesteps on the 0..999 scale, y: (N,) labels."""
        x = self.patch_embed(x)
        n_patches = x.shape[1]
        time_token = self.time_embed(TimestepEmbedder.timestep_embedding(t, self.hidden_size).to(x.dtype))
        extra = [time_token.unsqueeze(1)]
        c = time_token
        if self.num_classes > 0:
            label_token = self.label_emb(y, self.training)
            extra.insert(0, label_token.unsqueeze(1))
            c = time_token + label_token
        at = n_patches // 2 if self.token_position == "middle" else 0
        hidden = torch.cat([x[:, :at], *extra, x[:, at:]], dim=1) + self.pos_embed

        residual, skips = None, []
        for block in self.in_blocks:
            hidden, residual = self.run_block(block, hidden, residual)
            skips.append(hidden)
        hidden, residual = self.run_block(self.mid_block, hidden, residual)
        for block in self.out_blocks:
            hidden, residual = self.run_block(block, hidden, residual, skip=skips.pop())
        residual = residual + drop_path(hidden, self.drop_path_rate, self.training)
        hidden = self.norm_f(residual.to(self.norm_f.weight.dtype))

        if self.final_layer.adaLN_modulation is not None:
            out = self.final_layer(hidden, c)
        else:
            out = self.final_layer.linear(self.final_layer.norm_final(hidden))
        out = torch.cat([out[:, :at], out[:, at + self.extras:]], dim=1)
        assert out.shape[1] == n_patches
        return unpatchify(out, self.patch_size, self.out_channels)


# functools.partial: keyword overrides given to create_model replace the variant's defaults.
register_family("DiS", {f"DiS-{s}/{p}": partial(DiS, patch_size=p, **DIS_CONFIGS[s])
                        for s in DIS_CONFIGS for p in PATCH_SIZES},
                source=[__file__] + [str(Path(__file__).with_name(f))
                                     for f in ("mamba.py", "scan_kernel.py", "selective_scan_cpu.c")])
