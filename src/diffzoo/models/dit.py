"""DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, 2023).

Computes what facebookresearch/DiT `models.py` computes, with its constructor arguments and its
state_dict names and shapes, so official checkpoints load with strict=True and code written for the
official model runs unchanged. Attention goes through scaled_dot_product_attention.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import (Attention, Backbone, FinalLayer, LabelEmbedder, Mlp, PatchEmbed, TimestepEmbedder,
                     get_2d_sincos_pos_embed, init_adaln_zero, modulate, unpatchify)
from .registry import register_family

# name -> (depth, hidden_size, num_heads), DiT Table 1.
DIT_CONFIGS = {
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
}
PATCH_SIZES = (2, 4, 8)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: x += gate * f(modulate(LN(x), shift, scale)) for attn and MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = self.make_mlp(hidden_size, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def make_mlp(self, hidden_size: int, mlp_ratio: float) -> nn.Module:
        return Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class DiT(Backbone):
    """Diffusion transformer over patchified latents, conditioned on timestep + class by adaLN-Zero."""

    block_class = DiTBlock

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 1152,
                 depth: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0, class_dropout_prob: float = 0.1,
                 num_classes: int = 1000, learn_sigma: bool = True, **block_kwargs):
        super().__init__()
        self.input_size = input_size
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.num_classes = num_classes

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # Fixed sin-cos embedding, a frozen Parameter as in the official code (so it is in the
        # state_dict and in the parameter count).
        self.pos_embed = nn.Parameter(torch.zeros(1, self.x_embedder.num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(
            [self.make_block(hidden_size, num_heads, mlp_ratio, **block_kwargs) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def make_block(self, hidden_size: int, num_heads: int, mlp_ratio: float, **block_kwargs) -> nn.Module:
        return self.block_class(hidden_size, num_heads, mlp_ratio=mlp_ratio, **block_kwargs)

    def initialize_weights(self) -> None:
        def basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic_init)
        pos = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], self.x_embedder.grid_size)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        init_adaln_zero(self)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) latents, t: (N,) integer timesteps on the 0..999 scale, y: (N,) labels."""
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = self.run_block(block, x, c)
        x = self.final_layer(x, c)
        return unpatchify(x, self.patch_size, self.out_channels)


def _dit_constructor(size: str, patch: int):
    def build(**overrides) -> DiT:
        kwargs = dict(DIT_CONFIGS[size], patch_size=patch)
        kwargs.update(overrides)
        return DiT(**kwargs)

    build.__doc__ = f"DiT-{size}/{patch}: {DIT_CONFIGS[size]}"
    return build


register_family("DiT", {f"DiT-{s}/{p}": _dit_constructor(s, p) for s in DIT_CONFIGS for p in PATCH_SIZES},
                source=__file__)
