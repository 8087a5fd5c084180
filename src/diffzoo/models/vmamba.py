"""VMamba: Visual State Space Model (Liu et al., 2024; repo MzeroMiko/VMamba) as a diffusion backbone.

`SS2D` is the authors' 2-D selective scan mixer (classification/models/vmamba.py, class SS2D) with
their constructor arguments and parameter names, so their state_dicts load with strict=True and
compute their output; it runs on our selective scan (mamba.py: mamba-ssm's CUDA kernel where it
imports, our parallel scan otherwise). Channels-last (B, H, W, C) in and out, or (B, C, H, W) with
channel_first=True, as theirs. Two forward types:

* "v0" (the first paper): in_proj Linear(C, 2D) split into x, z; x -> depthwise Conv2d(3x3, bias)
  -> SiLU; cross-scan into K = 4 sequences of L = H*W tokens (k0 row-major, k1 column-major, k2 and k3
  the two reversed); per direction x_proj_weight[k] (R + 2N, D) gives [dt | B | C] and
  dt_projs_weight[k] (D, R) maps dt to D channels; one grouped selective scan over (B, K*D, L) with
  A = -exp(A_logs), skip Ds, softplus(dt + dt_projs_bias); cross-merge y = y0 + flip(y2) + T(y1) +
  T(flip(y3)) (T: column-major back to row-major); out_norm LayerNorm(D) (eps 1e-5), times SiLU(z),
  out_proj Linear(D, C). The authors' v0 hard-codes d_conv = 3, conv_bias = True, bias = False and
  the default dt init: other values are refused here rather than ignored.
* "v05_noz" (what the VMamba-v2 configs use): no z branch (in_proj C -> D), the same core, conv
  optional (d_conv > 1) with conv_bias as given (the v2 configs: False), LayerNorm out_norm and no
  gate. Their nominal default forward_type "v2" does not run at their current HEAD (its
  selective-scan backend "core" is rejected by their own assert); ours defaults to "v05_noz".

D = int(ssm_ratio * d_model), R = ceil(d_model / 16) for dt_rank="auto"; `initialize` "v0"
(mamba-ssm's dt/A/D init, shared with mamba.py), "v1" or "v2" (the authors' simple random inits).

`VSSBlock` is the authors' VSS block (pre-norm SS2D branch, then an MLP branch when mlp_ratio > 0)
with DiT's adaLN-Zero in place of its LayerNorms: x += gate * SS2D(modulate(LN(x))), x += gate *
MLP(modulate(LN(x))). The MLP is DiT's (GELU tanh; the authors' uses exact GELU). `VMamba` is DiT's
skeleton (patchify, fixed sin-cos position embedding, t + y conditioning, final layer, init) with
VSS blocks on the token grid: isotropic, as DiT/DiS, not the authors' four-stage hierarchy
(a denoiser must return every token at full resolution; the paper is silent on generation).
Configs: DiT's S/B/L/XL depths and widths, patch 2 and 4, the v2 configs' SS2D (v05_noz, d_state 1,
ssm_ratio 2, 3x3 conv without bias, mlp_ratio 4).

FLOP counting: in_proj/out_proj/conv/the einsum projections are seen by FlopCounterMode; the scan is
declared (extra_macs) as 3 MACs per state element and direction, as for the Mamba mixer.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from .dit import DIT_CONFIGS, DiT
from .layers import Mlp, modulate
from .mamba import init_dt_, s4d_real_a_log, selective_scan
from .registry import register_family

FORWARD_TYPES = ("v0", "v05_noz")
K_GROUP = 4  # scan directions


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    hw_wh = torch.stack([rows, cols], dim=1)
    return torch.cat([hw_wh, hw_wh.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, D, H*W) per-direction outputs -> (B, D, H*W) in row-major order, summed over directions."""
    batch, _, dim, length = ys.shape
    fwd = ys[:, 0:2] + ys[:, 2:4].flip(-1)               # undo the reversal
    cols = fwd[:, 1].view(batch, dim, width, height).transpose(2, 3).reshape(batch, dim, length)
    return fwd[:, 0] + cols


class SS2D(nn.Module):
    """The authors' SS2D (module docstring): (B, H, W, C) -> (B, H, W, C), or channel-first."""

    def __init__(self, d_model: int = 96, d_state: int = 16, ssm_ratio: float = 2.0, dt_rank="auto",
                 act_layer=nn.SiLU, d_conv: int = 3, conv_bias: bool = True, dropout: float = 0.0, bias: bool = False,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, initialize: str = "v0", forward_type: str = "v05_noz",
                 channel_first: bool = False, **kwargs):
        super().__init__()
        if forward_type not in FORWARD_TYPES:
            hint = " (the authors' nominal default 'v2' does not run at their HEAD)" if forward_type == "v2" else ""
            raise ValueError(f"forward_type must be one of {FORWARD_TYPES}, got {forward_type!r}{hint}")
        if forward_type == "v0":
            fixed = dict(d_conv=3, conv_bias=True, bias=False, channel_first=False, initialize="v0", dt_min=0.001,
                         dt_max=0.1, dt_init="random", dt_scale=1.0, dt_init_floor=1e-4)
            given = dict(d_conv=d_conv, conv_bias=conv_bias, bias=bias, channel_first=channel_first,
                         initialize=initialize, dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale,
                         dt_init_floor=dt_init_floor)
            wrong = {k: v for k, v in given.items() if v != fixed[k]}
            if wrong:
                raise ValueError(f"SS2D forward_type 'v0' hard-codes {fixed} in the authors' code; got {wrong}")
        self.forward_type, self.channel_first = forward_type, channel_first
        self.with_z = forward_type == "v0"
        self.d_model, self.d_state = int(d_model), int(d_state)
        self.d_inner = int(ssm_ratio * d_model)
        self.dt_rank = int(math.ceil(self.d_model / 16) if dt_rank == "auto" else dt_rank)
        d_in, n, r, k = self.d_inner, self.d_state, self.dt_rank, K_GROUP

        self.in_proj = nn.Linear(self.d_model, d_in * (2 if self.with_z else 1), bias=bias)
        self.act = act_layer()
        self.conv2d = (nn.Conv2d(d_in, d_in, kernel_size=d_conv, groups=d_in, bias=conv_bias,
                                 padding=(d_conv - 1) // 2) if d_conv > 1 else None)
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d_in))    # (K, R + 2N, D)
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_in, r))          # (K, D, R)
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_in))
        self.A_logs = nn.Parameter(torch.empty(k * d_in, n))
        self.Ds = nn.Parameter(torch.empty(k * d_in))
        self.out_norm = nn.LayerNorm(d_in)
        self.out_proj = nn.Linear(d_in, self.d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._dt_init = dict(dt_init=dt_init, dt_scale=dt_scale, dt_min=dt_min, dt_max=dt_max,
                             dt_init_floor=dt_init_floor)
        self.initialize = initialize
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        """The authors' inits of x_proj_weight (nn.Linear's), dt_projs, A_logs, Ds: "v0" is mamba-ssm's."""
        k, d_in = K_GROUP, self.d_inner
        if self.A_logs.device.type == "meta":
            return
        with torch.no_grad():
            bound = 1 / math.sqrt(d_in)  # nn.Linear's default init (the authors stack K Linear weights)
            self.x_proj_weight.uniform_(-bound, bound)
            if self.initialize == "v0":
                init_dt_(self.dt_projs_weight, self.dt_projs_bias, self.dt_rank, **self._dt_init)
                self.A_logs.copy_(s4d_real_a_log(k * d_in, self.d_state))
                self.Ds.fill_(1.0)
            elif self.initialize == "v1":
                self.Ds.fill_(1.0)
                self.A_logs.normal_()
                self.dt_projs_weight.normal_().mul_(0.1)
                self.dt_projs_bias.normal_().mul_(0.1)
            elif self.initialize == "v2":
                self.Ds.fill_(1.0)
                self.A_logs.zero_()
                self.dt_projs_weight.uniform_().mul_(0.1)
                self.dt_projs_bias.uniform_().mul_(0.1)
            else:
                raise ValueError(f"initialize must be 'v0', 'v1' or 'v2', got {self.initialize!r}")
        self.A_logs._no_weight_decay = self.Ds._no_weight_decay = True

    def scan_2d(self, x: torch.Tensor) -> torch.Tensor:
        """The core: (B, D, H, W) after conv and activation -> cross-merged (B, D, H*W), float32."""
        batch, d_in, height, width = x.shape
        k, n, r = K_GROUP, self.d_state, self.dt_rank
        xs = cross_scan(x)                                                           # (B, K, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.to(xs.dtype))
        length = height * width
        ys = selective_scan(xs.reshape(batch, k * d_in, length), dts.reshape(batch, k * d_in, length),
                            -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
                            delta_bias=self.dt_projs_bias.float().view(-1), delta_softplus=True)
        return cross_merge(ys.float().view(batch, k, d_in, length), height, width)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.channel_first:
            x = x.permute(0, 2, 3, 1)
        batch, height, width, _ = x.shape
        x = self.in_proj(x)
        if self.with_z:
            x, z = x.chunk(2, dim=-1)
            z = self.act(z)
        x = x.permute(0, 3, 1, 2)
        if self.conv2d is not None:
            x = self.conv2d(x)
        x = self.act(x)
        y = self.scan_2d(x).transpose(1, 2).reshape(batch, height, width, -1)    # (B, H, W, D)
        y = self.out_norm(y.to(self.out_norm.weight.dtype)).to(x.dtype)
        if self.with_z:
            y = y * z
        out = self.dropout(self.out_proj(y))
        return out.permute(0, 3, 1, 2) if self.channel_first else out

    def scan_macs(self, batch: int, length: int) -> int:
        return 3 * K_GROUP * batch * self.d_inner * length * self.d_state

    def extra_macs(self, inputs, output) -> int:
        x = inputs[0]
        batch, height, width = (x.shape[0], x.shape[2], x.shape[3]) if self.channel_first else x.shape[:3]
        return self.scan_macs(batch, height * width)


class VSSBlock(nn.Module):
    """The VSS block with adaLN-Zero: SS2D branch, then (mlp_ratio > 0) an MLP branch, on (N, T, D)
    tokens of a square row-major grid."""

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0, **ss2d_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.op = SS2D(d_model=hidden_size, **ss2d_kwargs)
        self.mlp = None
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, (6 if self.mlp else 3) * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        side = math.isqrt(t)
        mod = self.adaLN_modulation(c).chunk(6 if self.mlp else 3, dim=1)
        h = modulate(self.norm1(x), mod[0], mod[1]).view(n, side, side, d)
        x = x + mod[2].unsqueeze(1) * self.op(h).view(n, t, d)
        if self.mlp is not None:
            x = x + mod[5].unsqueeze(1) * self.mlp(modulate(self.norm2(x), mod[3], mod[4]))
        return x


class VMamba(DiT):
    """DiT's skeleton with VSS blocks (isotropic); SS2D arguments pass through (forward_type, d_state, ...)."""

    def __init__(self, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 1152,
                 depth: int = 28, num_classes: int = 1000, learn_sigma: bool = True, class_dropout_prob: float = 0.1,
                 mlp_ratio: float = 4.0, forward_type: str = "v05_noz", d_state: int = 1, ssm_ratio: float = 2.0,
                 d_conv: int = 3, conv_bias: bool | None = None, **ss2d_kwargs):
        conv_bias = forward_type == "v0" if conv_bias is None else conv_bias  # v0: always; v2 configs: none
        super().__init__(input_size=input_size, patch_size=patch_size, in_channels=in_channels,
                         hidden_size=hidden_size, depth=depth, num_heads=1, mlp_ratio=mlp_ratio,
                         class_dropout_prob=class_dropout_prob, num_classes=num_classes, learn_sigma=learn_sigma,
                         forward_type=forward_type, d_state=d_state, ssm_ratio=ssm_ratio, d_conv=d_conv,
                         conv_bias=conv_bias, **ss2d_kwargs)

    def make_block(self, hidden_size: int, num_heads: int, mlp_ratio: float, **ss2d_kwargs) -> nn.Module:
        # DiT's init (xavier on every nn.Linear, adaLN-Zero) reaches SS2D's in_proj/out_proj only: its
        # x_proj_weight, dt_projs_*, A_logs and Ds are plain Parameters and keep the authors' init.
        return VSSBlock(hidden_size, mlp_ratio=mlp_ratio, **ss2d_kwargs)


register_family("VMamba", {f"VMamba-{s}/{p}": partial(VMamba, patch_size=p, depth=DIT_CONFIGS[s]["depth"],
                                                      hidden_size=DIT_CONFIGS[s]["hidden_size"])
                           for s in DIT_CONFIGS for p in (2, 4)},
                source=[__file__, str(Path(__file__).with_name("mamba.py")), str(Path(__file__).with_name("dit.py"))])
