"""DiffuSSM: Diffusion Models Without Attention (Yan, Gu & Rush, CVPR 2024). No official code exists;
this is our reading of the paper, with every unpublished detail chosen and stated here.

From the paper: no patchify (patch size 1, L = 1024 tokens for a 32x32 latent); repeated layers of a
long-range, gated, bidirectional SSM (BiGS-style, S4D) at full length, wrapped in an "hourglass"
dense network that contracts the sequence by M = 2 around it, so the dense (MLP) work runs at length
L/M while the SSM always sees all L tokens; DiT-style conditioning; XL = 29 layers, D = 1152,
about 673M parameters and 280.3 Gflops at 256px.

One layer (x: (N, L, D) residual stream, c: (N, D) conditioning), M = hourglass_ratio:

    shift, scale, gate = adaLN(c)                      # SiLU - Linear(D, 3D), zero-initialised
    I  = group(modulate(LN(x), shift, scale))          # (N, L/M, M*D): M consecutive tokens concatenated
    U  = ungroup(s(W_up s(W_0 I)))                     # W_0: M*D -> D, W_up: D -> M*D  => (N, L, D)
    Yf, Yb = S4D_fwd(U), flip(S4D_bwd(flip(U)))        # full length, FFT convolution, (N, L, D) each
    I' = s(W_down group([Yf, Yb]))                     # (N, L/M, 2*M*D) -> D
    O  = W_3(s(W_2 I') * s(W_1 I))                     # gated MLP at L/M: W_1: M*D -> E, W_2: D -> E, W_3: E -> M*D
    x  = x + gate * ungroup(O)

s = GELU(tanh). These are the paper's equations (its W^0, W^up_k, W^down_k, W^1, W^2, W^3, with
k in [1, M] the position inside a group of M tokens and D_m = 2D/M = D channels per token at full
length), with these choices where the paper is vague:

* Token grouping: M *consecutive* tokens of the row-major raster (j = floor(l/M), k = l mod M).
  Reason: with an even image width these are always horizontal neighbours in the same row, so
  contracting is a 1 x M patchify local in space, done only inside the MLP; the SSM still sees every
  token. Grouping by concatenation (not pooling) loses nothing and makes W_up/W_down position-aware
  (one matrix slice per k, as the paper's W^up_k, W^down_k).
* Conditioning: DiT's: c = t_embed(t) + y_embed(y) (TimestepEmbedder, LabelEmbedder with the null
  class), one adaLN-Zero (shift, scale, gate) per layer, because the paper has one normalised
  residual branch per layer ("scale, shift" before, "scale" after); DiT's final layer. A fixed
  2-D sin-cos position embedding is added to the input tokens (DiT's, stored as a frozen Parameter):
  the raster scan alone does not tell the SSM where a row ends.
* SSM: S4D-Lin (diagonal, LTI, ZOH discretisation; A = -1/2 + i*pi*n, log dt uniform in
  [log 0.001, log 0.1], C ~ N(0, 1) complex, D skip), d_state = 64 (32 complex modes). The paper
  names S4D but not its initialisation; S4D-Lin is the S4D paper's simplest and its standalone
  code's default. `s4d_init="legs"` gives S4D-LegS instead (A = -1/2 + i w, w the frequencies of
  HiPPO-LegS's normal part, LegS's B diagonalised and folded into C). One kernel per
  direction and channel, convolved by FFT of length 2L (causal kernel for the forward direction, the
  backward kernel placed at negative lags), or, for short sequences in large batches, as a matmul
  with the kernels' Toeplitz matrices (the same convolution; BiS4D.forward says when). Forward
  and backward outputs are kept apart (concatenated)
  and mixed by W_down -- the "gated bidirectional" BiGS combination.
* MLP width E = mlp_ratio * D with mlp_ratio = 1.2: the paper gives no inner widths; 1.2 is chosen so
  that DiffuSSM-XL has the published size (669.9M vs about 673M) and cost (278.2 Gflops of matrix
  products, 289.7 with the SSM's FFT convolution and kernel counted, vs 280.3).
* Smaller sizes (ours, the paper has only XL): S 12/384, B 12/768, L 24/1024 (DiT's widths and depths),
  XL 29/1152.

FLOP counting: linear layers by FlopCounterMode; the S4D layer declares (extra_macs) its FFT
convolution and kernel: a real FFT of length n costs 2.5 n log2 n flops = 1.25 n log2 n MACs (one rfft
of the input per channel, one rfft per kernel, one irfft per direction and channel), the pointwise
complex product 3 MACs per frequency, the D skip 1 MAC per output. The kernel's Vandermonde sum is a
complex matmul (4 real MACs per mode, token and kernel), which FlopCounterMode counts as 1: the
module declares the other 3. exp and other elementwise work are not counted.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dit import DiT
from .layers import modulate
from .registry import register_family

DIFFUSSM_CONFIGS = {
    "S": dict(depth=12, hidden_size=384),
    "B": dict(depth=12, hidden_size=768),
    "L": dict(depth=24, hidden_size=1024),
    "XL": dict(depth=29, hidden_size=1152),
}


def _fft_macs(n: int) -> float:
    """Multiply-accumulates of one real FFT (or inverse) of length n: 2.5 n log2 n flops / 2."""
    return 1.25 * n * math.log2(n)


S4D_INITS = ("lin", "legs")


def _cexp(z: torch.Tensor) -> torch.Tensor:
    """exp of a complex tensor as exp(re) (cos im + i sin im): the same values (1e-6), in vectorised
    real kernels (torch.exp of complex64 runs element by element on CPU, 3.5x slower here)."""
    return torch.polar(torch.exp(z.real), z.imag)


def s4d_legs_modes(n: int, b_clip: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-LegS as state-spaces/s4 builds it (hippo.nplr('legs', N, B_clip=2.0), used by its S4D
    kernels at e757cef): the diagonal of HiPPO-LegS's normal part. LegS's A (A_nk = -sqrt(2n+1) sqrt(2k+1)
    for n > k, -(n+1) on the diagonal) plus the rank-1 P P^T (P_n = sqrt(n + 1/2)) is -1/2 I + a skew
    matrix S_nk = sign(k - n) sqrt(2n+1) sqrt(2k+1) / 2, so its eigenvalues are -1/2 + i w; the
    eigenvectors V come from eigh of the Hermitian -i S (their phases are LAPACK's, as there), B = V^* B_legs
    (B_legs,n = sqrt(2n+1)) on the half with w < 0, and B's imaginary part clipped to [-b_clip, b_clip]
    (without the clip |B|^2 sums to 2048 at N = 64, with it to about 75). Returned in our convention,
    the conjugate modes (w > 0, conj B: the same real kernel), in the official order."""
    q = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    sign = torch.triu(torch.ones(n, n, dtype=torch.float64), 1) - torch.tril(torch.ones(n, n, dtype=torch.float64), -1)
    normal = -0.5 * torch.eye(n, dtype=torch.float64) + 0.5 * sign * torch.outer(q, q)
    w_im, vectors = torch.linalg.eigh(normal * -1j)
    order = torch.argsort(w_im)[: n // 2]  # the negative halves of the conjugate pairs, as there
    b = vectors[:, order].conj().transpose(0, 1) @ q.to(torch.complex128)
    b = torch.complex(b.real, b.imag.clamp(-b_clip, b_clip))
    return -w_im[order], b.conj()


class _BatchedMatmul(torch.autograd.Function):
    """torch.bmm whose backward makes the incoming gradient and the transposed operands contiguous
    first (three copies of the whole batch). The gradient reaches it through the (N, L, 2, H)
    permutation, and torch's CPU bmm copies each matrix of a batch with no unit stride one by one:
    128 small copies per call, a third of the direct convolution's time at the default's size."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return torch.bmm(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad = grad.contiguous()
        grad_a = torch.bmm(grad, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_b = torch.bmm(a.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class BiS4D(nn.Module):
    """Bidirectional S4D over (N, L, H): returns both directions stacked, (N, L, 2, H) float32.

    forward_out[l] = sum_{m<=l} K_f[l-m] u[m] + D_f u[l];  backward_out[l] = sum_{m>=l} K_b[m-l] u[m] + D_b u[l],
    with K[l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l)) (S4D, ZOH).
    """

    def __init__(self, channels: int, d_state: int = 64, dt_min: float = 0.001, dt_max: float = 0.1,
                 init: str = "lin"):
        super().__init__()
        if init not in S4D_INITS:
            raise ValueError(f"S4D init must be one of {S4D_INITS}, got {init!r}")
        modes = d_state // 2
        self.channels, self.modes, self.init = channels, modes, init
        log_dt = torch.rand(2, channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.full((2, channels, modes), math.log(0.5)))
        c = torch.randn(2, channels, modes, 2) * math.sqrt(0.5)  # complex N(0, 1) as (re, im)
        if init == "lin":
            imag = math.pi * torch.arange(modes, dtype=torch.float32)
        else:  # LegS: B (= V^-1 B_legs) is folded into C, as the kernel only ever uses the product C B
            imag, b = s4d_legs_modes(2 * modes)
            c = torch.view_as_real(torch.view_as_complex(c) * b.to(torch.complex64))
        self.A_imag = nn.Parameter(imag.float().repeat(2, channels, 1))
        self.C = nn.Parameter(c)
        self.D = nn.Parameter(torch.randn(2, channels))

    @staticmethod
    def _blocks(length: int) -> tuple[int, int]:
        """Token l = q*i + j with j < q, i < p: the Vandermonde matrix factorises into two of size ~sqrt(L)."""
        q = max(1, math.isqrt(length - 1) + 1) if length > 1 else 1
        return -(-length // q), q

    def kernel(self, length: int) -> torch.Tensor:
        """(2, H, L) real convolution kernels (forward, backward), float32.

        exp(dtA * (q*i + j)) = exp(dtA*q*i) * exp(dtA*j), so the sum over modes is one batched complex
        matmul (p x modes) @ (modes x q) per channel: no (modes x L) tensor and only 2*sqrt(L) exps.
        """
        dt = torch.exp(self.log_dt.float()).unsqueeze(-1)                                   # (2, H, 1)
        A = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())        # (2, H, n)
        dtA = A * dt
        C = torch.view_as_complex(self.C.float().contiguous()) * (_cexp(dtA) - 1.0) / A
        p, q = self._blocks(length)
        steps = torch.arange(max(p, q), device=dt.device, dtype=torch.float32)
        inner = _cexp(dtA.unsqueeze(-1) * steps[:q])                                       # (2, H, n, q)
        outer = _cexp(dtA.unsqueeze(-1) * (q * steps[:p])) * C.unsqueeze(-1)               # (2, H, n, p)
        k = 2 * (outer.transpose(-1, -2) @ inner).real                                     # (2, H, p, q)
        return k.reshape(2, self.channels, p * q)[..., :length]

    # Short sequences in large batches run the convolution as one batched matmul with the kernels'
    # Toeplitz matrices (causal for the forward direction, anti-causal for the backward one): 2L^2
    # MACs per channel and image instead of FFTs of length 2L, in one dense GEMM, plus building the
    # (2H, L, L) matrices once per batch. Measured on CPU (benchmarks/bench_diffussm.py) it wins where
    # the batch is at least the length: 0.66x the FFT's time (forward + backward) at the default's
    # L = 64, batch 64; 0.54x at batch 250; 1.1x at batch 16, 9x at L = 256, batch 8. ImageNet's
    # L = 1024 always takes the FFT. Both compute
    # the same convolution (tested against the recurrence); the FLOPs counted are the FFT's
    # (extra_macs), the model's cost as the paper defines it, whichever way it runs.
    DIRECT_MAX_LENGTH = 256
    conv = "auto"  # auto (the rule above) | fft | direct

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(N, L, 2, H) float32: [..., 0, :] the forward direction, [..., 1, :] the backward one."""
        length = u.shape[1]
        k_fwd, k_bwd = self.kernel(length)
        direct = self.conv == "direct" or (self.conv == "auto" and length <= min(self.DIRECT_MAX_LENGTH, u.shape[0]))
        return self._direct(u, k_fwd, k_bwd) if direct else self._fft(u, k_fwd, k_bwd)

    def _direct(self, u, k_fwd, k_bwd):
        """With k padded by L-1 zeros in front, H[a, b] = k[a + b] is a Hankel matrix (a strided view):
        y_fwd[l] = sum_m k_f[l - m] u[m] = (H_f @ flip(u))[l] and y_bwd[l] = sum_m k_b[m - l] u[m]
        = (H_b @ u)[L-1-l], so y_bwd = flip_rows(H_b) @ u. The D skip sits at lag 0."""
        length, h = u.shape[1], self.channels
        k = torch.stack([k_fwd, k_bwd])                                                      # (2, H, L)
        k = torch.cat([k.new_zeros(2, h, length - 1), k[..., :1] + self.D.float()[..., None], k[..., 1:]], dim=-1)
        hankel = k.unfold(-1, length, 1)                                                     # (2, H, L, L)
        a = torch.cat([hankel[0], hankel[1].flip(-2)])                                     # (2H, L, L)
        x = u.float().permute(2, 1, 0)                                                       # (H, L, N)
        y = _BatchedMatmul.apply(a, torch.cat([x.flip(-2), x]))                              # (2H, L, N)
        return y.view(2, h, length, -1).permute(3, 2, 0, 1)                                  # (N, L, 2, H)

    def _fft(self, u, k_fwd, k_bwd):
        length = u.shape[1]
        n = 2 * length
        # Backward kernel at lags 0, -1, ..., -(L-1): index 0 and n-m of the length-2L circular kernel.
        k_bwd = torch.cat([k_bwd[:, :1], k_bwd.new_zeros(self.channels, length), k_bwd[:, 1:].flip(-1)], dim=-1)
        k_f = torch.fft.rfft(torch.stack([F.pad(k_fwd, (0, length)), k_bwd]), n=n)  # (2, H, L+1)
        x = u.float().transpose(1, 2)                                                      # (N, H, L)
        u_f = torch.fft.rfft(x, n=n)
        y = torch.fft.irfft(u_f.unsqueeze(1) * k_f, n=n)[..., :length]                    # (N, 2, H, L)
        y = y + x.unsqueeze(1) * self.D.float().unsqueeze(-1)
        return y.permute(0, 3, 1, 2)                                                        # (N, L, 2, H)

    def extra_macs(self, inputs, output) -> int:
        batch, length, h = inputs[0].shape
        n = 2 * length
        p, q = self._blocks(length)
        # The kernel's complex matmul is seen by FlopCounterMode as 1 MAC per complex MAC: add 3 more.
        kernel = 3 * 2 * h * self.modes * p * q + 2 * h * _fft_macs(n)
        conv = batch * h * _fft_macs(n) + batch * 2 * h * (3 * (n // 2 + 1) + _fft_macs(n) + length)
        return int(kernel + conv)


class DiffuSSMBlock(nn.Module):
    """LN + adaLN, hourglass dense around the full-length bidirectional S4D, gated MLP at length L/M."""

    def __init__(self, hidden_size: int, hourglass_ratio: int = 2, mlp_ratio: float = 1.2, d_state: int = 64,
                 s4d_init: str = "lin"):
        super().__init__()
        d, m = hidden_size, hourglass_ratio
        e = int(round(mlp_ratio * d))
        self.ratio = m
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.w0 = nn.Linear(m * d, d)
        self.w_up = nn.Linear(d, m * d)
        self.ssm = BiS4D(d, d_state=d_state, init=s4d_init)
        self.w_down = nn.Linear(2 * m * d, d)
        self.w1 = nn.Linear(m * d, e)
        self.w2 = nn.Linear(d, e)
        self.w3 = nn.Linear(e, m * d)
        self.act = nn.GELU(approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 3 * d, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        if length % self.ratio:
            raise ValueError(f"sequence length {length} is not divisible by the hourglass ratio {self.ratio}")
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=1)
        grouped = modulate(self.norm(x), shift, scale).reshape(n, length // self.ratio, self.ratio * d)
        u = self.act(self.w_up(self.act(self.w0(grouped)))).reshape(n, length, d)
        y = self.ssm(u).to(u.dtype).reshape(n, length // self.ratio, self.ratio * 2 * d)  # [fwd, bwd]
        inner = self.act(self.w_down(y))
        out = self.w3(self.act(self.w2(inner)) * self.act(self.w1(grouped)))
        return x + gate.unsqueeze(1) * out.reshape(n, length, d)


class DiffuSSM(DiT):
    """Attention-free diffusion backbone on unpatchified latents (patch_size 1 by default).

    DiT's embedders, position embedding, final layer, initialisation and forward, with DiffuSSM layers
    in place of the transformer blocks.
    """

    def __init__(self, input_size: int = 32, patch_size: int = 1, in_channels: int = 4, hidden_size: int = 1152,
                 depth: int = 29, num_classes: int = 1000, learn_sigma: bool = True, class_dropout_prob: float = 0.1,
                 hourglass_ratio: int = 2, mlp_ratio: float = 1.2, d_state: int = 64, s4d_init: str = "lin"):
        super().__init__(input_size=input_size, patch_size=patch_size, in_channels=in_channels,
                         hidden_size=hidden_size, depth=depth, num_heads=1, mlp_ratio=mlp_ratio,
                         class_dropout_prob=class_dropout_prob, num_classes=num_classes, learn_sigma=learn_sigma,
                         hourglass_ratio=hourglass_ratio, d_state=d_state, s4d_init=s4d_init)

    def make_block(self, hidden_size: int, num_heads: int, mlp_ratio: float, **block_kwargs) -> nn.Module:
        return DiffuSSMBlock(hidden_size, mlp_ratio=mlp_ratio, **block_kwargs)


# functools.partial: keyword overrides given to create_model replace the variant's defaults. The
# initialisation is DiT's (dit.py), so that file is part of this family's source too.
register_family("DiffuSSM", {f"DiffuSSM-{s}": partial(DiffuSSM, **DIFFUSSM_CONFIGS[s]) for s in DIFFUSSM_CONFIGS},
                source=[__file__, str(Path(__file__).with_name("dit.py"))])
