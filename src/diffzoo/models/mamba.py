"""Selective state space (Mamba) mixers with a CPU path of our own.

mamba-ssm's selective scan is CUDA-only and its pure-PyTorch `selective_scan_ref` is a Python loop
over time. This module provides:

* `selective_scan`: mamba-ssm's `selective_scan_fn` signature and semantics. It runs mamba-ssm's CUDA
  kernel when `mamba_ssm` imports and the input is on a CUDA device; otherwise our scan
  (`selective_scan_torch`), which computes exactly what `selective_scan_ref` computes:
  delta <- softplus(delta + delta_bias) (each optional), deltaA = exp(delta * A),
  deltaB_u = delta * B * u, x_t = deltaA_t * x_{t-1} + deltaB_u_t, y_t = C_t . x_t, y += D * u,
  y *= silu(z); float32 inside, output in the input's dtype.
* On CPU tensors, the fused C kernels of scan_kernel.py (selective_scan_cpu.c, built on first use
  with the system compiler) run it: one pass over time per batch row with the (d_inner, N) state in
  cache, 3-7x faster than the PyTorch scan below, which runs where no C compiler is found (or
  DIFFZOO_SCAN_KERNEL=0), under FLOP counting and under torch.compile's tracing. The `Mamba` mixer
  then also runs its depthwise conv + SiLU in a kernel and keeps everything channel-last; its
  backward direction steps through time backwards instead of flipping the sequence.
* The PyTorch scan, h_t = a_t * h_{t-1} + b_t (`_scan`, differentiable as `linear_recurrence`),
  is a parallel scan: odd-even (Blelloch-style) reduction halving the sequence log2(L/16) times (an
  odd length peels one step), a Hillis-Steele scan on the remaining chunk of at most 16 steps, and
  the expansion back (about 4 passes over the data, any length). It works in the linear domain:
  every factor is a decay in (0, 1], so products can only underflow towards their true value 0,
  never overflow (no exp of cumulative sums). The reverse recurrence g_t = dh_t + a_{t+1} g_{t+1}
  of the backward runs through the same code.
* `selective_scan_torch` cuts time into chunks whose (batch, dim, chunk, N) tensors fit in cache
  (CHUNK_ELEMENTS), scans each chunk from the state the previous one left, and keeps only the chunk
  boundary states for its hand-written backward (recompute a chunk, reverse scan, carry dL/dx to
  the previous chunk): memory O(batch dim (L + chunk N)) instead of O(batch dim L N), and no
  Python loop over time steps.
* `Mamba`: mamba-ssm's `Mamba` mixer with its constructor arguments, initialisation and state_dict
  names (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj), plus Vision Mamba's bidirectional
  "v2" variant (`bimamba_type="v2"`: conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b run on the flipped
  sequence, in_proj/out_proj shared). Weights move unchanged between this module, mamba-ssm's
  `Mamba` and Vim/DiS's fork of it.

Numerical safety: the scan is always evaluated in float32 (also under bf16/fp16 autocast), and the
two directions of the v2 mixer are added in float32 before out_proj. Summing doubles the output
magnitude at every layer, which is what made Vim/DiS overflow to NaN in fp16 mixed precision;
`divide_out=True` (Vim's `if_devide_out`) averages the directions instead. DiS sums (the default).

FLOP counting (diffzoo.flops.count_macs): the projections and the depthwise conv are matmuls and
convolutions that FlopCounterMode counts. The scan is not; the mixer declares it (`extra_macs`) as
3 multiply-accumulates per state element (channel x state x token) and direction: deltaB_u =
(delta*u) * B, x = deltaA * x + deltaB_u, y += C . x. exp(delta*A), softplus, the D skip and the
silu(z) gate are elementwise and not counted, like every other elementwise op in the DiT-style count.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .scan_kernel import available as kernels_built
from .scan_kernel import fused_conv_silu, fused_selective_scan

SCAN_BASE = 16  # length below which the odd-even reduction hands over to a Hillis-Steele scan


# --------------------------------------------------------------------------------------------- scan
def _prefix_scan(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hillis-Steele scan along dim -2 of (..., T, N): returns (prod_{s<=t} a_s, h_t) with h_{-1} = 0.

    log2(T) steps; in step k every position t >= 2^k absorbs the partial result ending at t - 2^k.
    """
    decay, state = a.clone(), b.clone()
    length = a.shape[-2]
    offset = 1
    while offset < length:
        # Right-hand sides are evaluated into fresh tensors before the (overlapping) write.
        state[..., offset:, :] += decay[..., offset:, :] * state[..., :-offset, :]
        decay[..., offset:, :] = decay[..., offset:, :] * decay[..., :-offset, :]
        offset *= 2
    return decay, state


def _base_scan(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, reverse: bool) -> None:
    if not reverse:
        out.copy_(_prefix_scan(a, b)[1])
        return
    # g_t = b_t + a_{t+1} g_{t+1}: in flipped time the link into step s is a_{T-s} (roll by one).
    out.copy_(_prefix_scan(torch.roll(a.flip(-2), 1, dims=-2), b.flip(-2))[1].flip(-2))


def _pairwise_scan(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, reverse: bool) -> None:
    """Odd-even reduction (work-efficient parallel scan) along dim -2 of (..., L, N), written to `out`.

    Forward: h_t = a_t h_{t-1} + b_t. Reverse: g_t = b_t + a_{t+1} g_{t+1} (the link between t and
    t+1 is a_{t+1} in both directions, so the backward pass reuses a unchanged). Pairs (2i, 2i+1)
    compose into one step; the half-length problem gives one state per pair (written straight into
    out), and one more fused multiply-add fills the other. Total work is about 4 passes over the
    input whatever L; odd lengths peel one step, short ones go to a Hillis-Steele scan.
    """
    length, n = a.shape[-2], a.shape[-1]
    if length <= SCAN_BASE:
        _base_scan(a, b, out, reverse)
        return
    if length % 2:  # peel the step that depends on the rest
        if reverse:
            _pairwise_scan(a[..., 1:, :], b[..., 1:, :], out[..., 1:, :], reverse)
            torch.addcmul(b[..., 0, :], a[..., 1, :], out[..., 1, :], out=out[..., 0, :])
        else:
            _pairwise_scan(a[..., :-1, :], b[..., :-1, :], out[..., :-1, :], reverse)
            torch.addcmul(b[..., -1, :], a[..., -1, :], out[..., -2, :], out=out[..., -1, :])
        return
    shape = (*a.shape[:-2], length // 2, 2, n)
    a2, b2, out2 = a.view(shape), b.view(shape), out.view(shape)
    a_even, a_odd, b_even, b_odd = a2[..., 0, :], a2[..., 1, :], b2[..., 0, :], b2[..., 1, :]
    if not reverse:  # state at the odd position of each pair, then the even ones
        _pairwise_scan(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even), out2[..., 1, :], reverse)
        out2[..., 0, 0, :] = b_even[..., 0, :]
        torch.addcmul(b_even[..., 1:, :], a_even[..., 1:, :], out2[..., :-1, 1, :], out=out2[..., 1:, 0, :])
    else:  # state at the even position of each pair; pairs i, i+1 are linked by a_{2i+1} a_{2i+2}
        links = torch.empty_like(a_even)
        links[..., 0, :] = 1.0
        torch.mul(a_odd[..., :-1, :], a_even[..., 1:, :], out=links[..., 1:, :])
        _pairwise_scan(links, torch.addcmul(b_even, a_odd, b_odd), out2[..., 0, :], reverse)
        out2[..., -1, 1, :] = b_odd[..., -1, :]
        torch.addcmul(b_odd[..., :-1, :], a_even[..., 1:, :], out2[..., 1:, 0, :], out=out2[..., :-1, 1, :])


def _scan(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """The linear recurrence along dim -2 of (..., L, N) with zero initial state, without autograd."""
    out = torch.empty_like(b)
    _pairwise_scan(a.contiguous(), b.contiguous(), out, reverse)
    return out


class _LinearRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = _scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        a, h = ctx.saved_tensors
        # g_t = dL/dh_t (total) = grad_h_t + a_{t+1} g_{t+1}: the same recurrence run backwards in time.
        g = _scan(a, grad_h, reverse=True)
        grad_a = torch.empty_like(a)
        grad_a[..., 0, :] = 0.0  # h_{-1} = 0
        torch.mul(g[..., 1:, :], h[..., :-1, :], out=grad_a[..., 1:, :])
        return grad_a, g


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim -2 of (..., L, N) with h_{-1} = 0 (differentiable)."""
    return _LinearRecurrence.apply(a.contiguous(), b.contiguous())


CHUNK_ELEMENTS = 1 << 18  # states per time chunk (batch x dim x chunk x N): ~1 MB, stays in cache
MIN_CHUNK = 64
KEEP_ELEMENTS = 1 << 23  # up to this many states (32 MB) the forward's are kept for the backward


def _chunk_length(batch: int, dim: int, length: int, n: int) -> int:
    """Steps per time chunk: about CHUNK_ELEMENTS states, at least MIN_CHUNK steps (Python overhead per
    chunk), equal chunks (no short tail)."""
    target = max(MIN_CHUNK, CHUNK_ELEMENTS // max(1, batch * dim * n))
    n_chunks = -(-length // target)
    return -(-length // n_chunks)


class _ChunkedSelectiveScan(torch.autograd.Function):
    """y_t = C_t . x_t, x_t = exp(delta_t A) x_{t-1} + delta_t u_t B_t (float32, (b, d, L) out).

    B and C are (b, G, N, L): channel block g (of d / G channels) reads group g's B and C, as
    mamba-ssm's grouped ("variable B with groups") scan; G = 1 is the plain Mamba case.
    Time is cut into chunks whose (b, d, chunk, N) tensors fit in cache; each chunk is scanned in
    parallel (_scan) from the state the previous chunk left, and only those boundary states are kept
    for the backward, which recomputes each chunk's states (unless the whole problem is at most
    KEEP_ELEMENTS states, then they are kept) and runs the reverse scan, chunk by chunk from the end,
    carrying dL/dx across chunk boundaries. Memory is O(b d (L + chunk N)), not O(b d L N).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        batch, dim, length = u.shape
        groups, n = B.shape[1], A.shape[1]
        shape = (batch, groups, dim // groups, length)  # channels split by group
        u, delta, A = u.view(shape), delta.view(shape), A.view(groups, dim // groups, n)
        chunk = _chunk_length(batch, dim, length, n)
        du = delta * u
        y = torch.empty_like(u)
        state = u.new_zeros(*shape[:3], n)
        starts = list(range(0, length, chunk))
        boundary = u.new_empty(len(starts), *shape[:3], n)  # state entering each chunk
        keep = batch * dim * length * n <= KEEP_ELEMENTS   # small problems: keep states, skip recompute
        ctx.kept = []
        for i, s in enumerate(starts):
            e = min(s + chunk, length)
            boundary[i] = state
            decay = torch.exp(delta[..., s:e, None] * A[:, :, None, :])
            drive = du[..., s:e, None] * B[:, :, None, :, s:e].transpose(-1, -2)
            drive[..., 0, :].addcmul_(decay[..., 0, :], state)
            states = _scan(decay, drive)
            y[..., s:e] = (states * C[:, :, None, :, s:e].transpose(-1, -2)).sum(-1)
            state = states[..., -1, :]
            if keep:
                ctx.kept.append((decay, states))
        ctx.save_for_backward(u, delta, A, B, C, boundary)
        ctx.chunk = chunk
        return y.view(batch, dim, length)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        u, delta, A, B, C, boundary = ctx.saved_tensors
        grad_y = grad_y.contiguous().view(u.shape)
        length, chunk = u.shape[-1], ctx.chunk
        du = delta * u
        grad_du, grad_delta = torch.empty_like(u), torch.empty_like(u)
        grad_b, grad_c = torch.empty_like(B), torch.empty_like(C)
        grad_a = torch.zeros_like(A)
        carry = None  # dL/dx at the last step of this chunk coming from later chunks (a_{e} g_{e})
        for i in reversed(range(boundary.shape[0])):
            s = i * chunk
            e = min(s + chunk, length)
            b_t = B[:, :, None, :, s:e].transpose(-1, -2)
            if ctx.kept:
                decay, states = ctx.kept.pop()
            else:
                decay = torch.exp(delta[..., s:e, None] * A[:, :, None, :])
                drive = du[..., s:e, None] * b_t
                drive[..., 0, :].addcmul_(decay[..., 0, :], boundary[i])
                states = _scan(decay, drive)
            grad_c[..., s:e] = (states * grad_y[..., s:e, None]).sum(2).transpose(-1, -2)
            seed = grad_y[..., s:e, None] * C[:, :, None, :, s:e].transpose(-1, -2)
            if carry is not None:
                seed[..., -1, :] += carry
            g = _scan(decay, seed, reverse=True)                      # total dL/dx_t within the chunk
            carry = decay[..., 0, :] * g[..., 0, :]
            grad_du[..., s:e] = (g * b_t).sum(-1)
            grad_b[..., s:e] = (g * du[..., s:e, None]).sum(2).transpose(-1, -2)
            # d/d(delta*A): g_t x_{t-1} decay_t, with x_{s-1} the boundary state (in place over g).
            g[..., 1:, :] *= states[..., :-1, :]
            g[..., 0, :] *= boundary[i]
            g *= decay
            grad_delta[..., s:e] = (g * A[:, :, None, :]).sum(-1)
            grad_a += (g * delta[..., s:e, None]).sum((0, 3))
        grad_delta += grad_du * u
        flat = (u.shape[0], -1, length)
        return ((grad_du * delta).view(flat), grad_delta.view(flat), grad_a.view(-1, A.shape[-1]), grad_b, grad_c)


def _no_autocast(device_type: str):
    # torch.autocast rejects devices without autocast support (the meta device of the FLOP counter)
    return torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") else contextlib.nullcontext()


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Our selective scan: selective_scan_ref's semantics, computed by a chunked parallel scan.

    u, delta, z: (batch, dim, L); A: (dim, N) real; B, C: (batch, N, L) (input-dependent), or
    (batch, G, N, L): G groups of dim / G consecutive channels, each with its own B and C (mamba-ssm's
    grouped form, which VMamba's SS2D uses for its four scan directions); D, delta_bias: (dim,).
    Returns (batch, dim, L) in u's dtype.
    """
    if B.dim() not in (3, 4) or C.shape != B.shape or A.is_complex():
        raise NotImplementedError("the CPU scan supports real A and input-dependent B, C of shape (batch, [G,] N, L)")
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    if u.shape[1] % B.shape[1]:
        raise ValueError(f"{u.shape[1]} channels do not split into {B.shape[1]} groups")
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if B.shape[1] == 1 and use_fused_kernel(u):  # the C kernel takes one B, C for all channels
        with _no_autocast(u.device.type):
            y = fused_selective_scan(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.float(),
                                     B[:, 0].float().transpose(1, 2), C[:, 0].float().transpose(1, 2),
                                     None if D is None else D.float(),
                                     None if z is None else z.float().transpose(1, 2).contiguous(),
                                     delta_bias=None if delta_bias is None else delta_bias.float(),
                                     delta_softplus=delta_softplus)
        return y.transpose(1, 2).to(dtype_in)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    with _no_autocast(u.device.type):  # float32 throughout, also under autocast
        y = _ChunkedSelectiveScan.apply(u.contiguous(), delta.contiguous(), A.float().contiguous(),
                                        B.float().contiguous(), C.float().contiguous())
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def use_fused_kernel(u: torch.Tensor) -> bool:
    """Whether the fused C kernels (scan_kernel.py) run: plain CPU tensors and the kernels built. They
    read raw memory, so not under a dispatch mode (FlopCounterMode, fake tensors) or torch.compile's
    tracing, which see the PyTorch path instead (same values; its ops are what FLOP counting needs)."""
    return (u.device.type == "cpu" and _get_current_dispatch_mode() is None and not torch.compiler.is_compiling()
            and kernels_built())


@functools.lru_cache(maxsize=1)
def cuda_selective_scan():
    """mamba-ssm's CUDA `selective_scan_fn`, or None where mamba_ssm does not import (CPU machines)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or the compiled extension failing to load
        return None
    return selective_scan_fn


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba-ssm's CUDA kernel for CUDA tensors when available, else `selective_scan_torch`."""
    if u.is_cuda:
        kernel = cuda_selective_scan()
        if kernel is not None:
            return kernel(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)


# -------------------------------------------------------------------------------------------- mixer
def init_dt_(weight: torch.Tensor, bias: torch.Tensor, dt_rank: int, dt_init: str = "random",
             dt_scale: float = 1.0, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
    """mamba-ssm's dt projection init, in place: weight uniform in +-dt_rank^-0.5 * dt_scale (or that
    constant), bias such that softplus(bias) is log-uniform in [dt_min, dt_max] (bias = dt + log(1 -
    exp(-dt))). Works on any leading shape (VMamba stacks one projection per scan direction)."""
    std = dt_rank ** -0.5 * dt_scale
    if weight.device.type == "meta":
        return
    with torch.no_grad():
        if dt_init == "constant":
            weight.fill_(std)
        elif dt_init == "random":
            weight.uniform_(-std, std)
        else:
            raise NotImplementedError(dt_init)
        dt = torch.exp(torch.rand(bias.shape, device=bias.device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def s4d_real_a_log(channels: int, d_state: int, device=None) -> torch.Tensor:
    """log of S4D-Real's A = 1, 2, ..., N for every channel, (channels, N) float32 (A = -exp(A_log))."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(channels, 1))


class Mamba(nn.Module):
    """mamba-ssm's Mamba mixer (selective SSM), optionally bidirectional (Vision Mamba's "v2").

    (B, L, d_model) -> (B, L, d_model). Constructor arguments and parameter names follow
    mamba_ssm.modules.mamba_simple.Mamba; `bimamba_type="v2"` adds the backward branch of Vim/DiS and
    `divide_out` (Vim's `if_devide_out`) averages instead of sums the two directions.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2, dt_rank="auto",
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 use_fast_path: bool = True, layer_idx=None, device=None, dtype=None,
                 bimamba_type: str = "none", divide_out: bool = False):
        super().__init__()
        if bimamba_type not in ("none", "v2"):
            raise ValueError(f"bimamba_type must be 'none' or 'v2', got {bimamba_type!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path  # kept for signature compatibility; dispatch is per device
        self.layer_idx = layer_idx
        self.bimamba_type = bimamba_type
        self.divide_out = divide_out

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        suffixes = ("", "_b") if bimamba_type == "v2" else ("",)
        for sfx in suffixes:
            self._make_branch(sfx, conv_bias, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, factory)

    def _make_branch(self, sfx, conv_bias, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, factory):
        di, n = self.d_inner, self.d_state
        conv = nn.Conv1d(di, di, kernel_size=self.d_conv, groups=di, padding=self.d_conv - 1, bias=conv_bias,
                         **factory)
        x_proj = nn.Linear(di, self.dt_rank + 2 * n, bias=False, **factory)
        dt_proj = nn.Linear(self.dt_rank, di, bias=True, **factory)
        self._dt_init = dict(dt_init=dt_init, dt_scale=dt_scale, dt_min=dt_min, dt_max=dt_max,
                             dt_init_floor=dt_init_floor)
        init_dt_(dt_proj.weight, dt_proj.bias, self.dt_rank, **self._dt_init)
        dt_proj.bias._no_reinit = True
        A_log = nn.Parameter(s4d_real_a_log(di, n, device=factory["device"]))
        A_log._no_weight_decay = True
        D = nn.Parameter(torch.ones(di, device=factory["device"]))
        D._no_weight_decay = True
        setattr(self, "conv1d" + sfx, conv)
        setattr(self, "x_proj" + sfx, x_proj)
        setattr(self, "dt_proj" + sfx, dt_proj)
        setattr(self, "A_b_log" if sfx else "A_log", A_log)
        setattr(self, "D" + sfx, D)

    def reset_dt_proj(self) -> None:
        """mamba-ssm's dt_proj initialisation again (for models whose global init, DiT's xavier with
        zero biases, ran over the mixer's Linear layers)."""
        for sfx in ("", "_b") if self.bimamba_type == "v2" else ("",):
            dt_proj = getattr(self, "dt_proj" + sfx)
            init_dt_(dt_proj.weight, dt_proj.bias, self.dt_rank, **self._dt_init)

    def _branch(self, xz: torch.Tensor, sfx: str) -> torch.Tensor:
        """One direction on xz (B, 2*d_inner, L): conv, silu, selective scan gated by z -> (B, d_inner, L)."""
        conv, x_proj, dt_proj = (getattr(self, n + sfx) for n in ("conv1d", "x_proj", "dt_proj"))
        A = -torch.exp((self.A_b_log if sfx else self.A_log).float())
        D = getattr(self, "D" + sfx)
        seqlen = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)
        x = F.silu(conv(x)[..., :seqlen])
        x_dbl = x_proj(x.transpose(1, 2))                                            # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ dt_proj.weight.t()).transpose(1, 2)                               # (B, d_inner, L)
        return selective_scan(x, dt, A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                              D.float(), z=z, delta_bias=dt_proj.bias.float(), delta_softplus=True)

    def _branch_channels_last(self, xz: torch.Tensor, sfx: str, reverse: bool) -> torch.Tensor:
        """`_branch` for the fused CPU kernels on xz (B, L, 2*d_inner), float32 (B, L, d_inner) out. The
        backward direction runs without flips: the conv + SiLU kernel and the scan both step through
        time backwards (the causal conv of the flipped sequence is the anti-causal conv)."""
        conv, x_proj, dt_proj = (getattr(self, n + sfx) for n in ("conv1d", "x_proj", "dt_proj"))
        A = -torch.exp((self.A_b_log if sfx else self.A_log).float())
        D = getattr(self, "D" + sfx)
        x, z = xz.chunk(2, dim=-1)                                                  # (B, L, d_inner) views
        with _no_autocast(xz.device.type):
            x = fused_conv_silu(x.float(), conv.weight.float(),
                                None if conv.bias is None else conv.bias.float(), reverse=reverse)
        dt, B, C = torch.split(x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ dt_proj.weight.t()).float()  # as _branch: the matmul in autocast's dtype
        with _no_autocast(xz.device.type):
            return fused_selective_scan(x.float(), delta, A, B.float(), C.float(), D.float(), z.float(),
                                        reverse=reverse, delta_bias=dt_proj.bias.float(), delta_softplus=True)

    def forward(self, hidden_states: torch.Tensor, inference_params=None) -> torch.Tensor:
        if inference_params is not None:
            raise NotImplementedError("step-wise decoding is not supported")
        if use_fused_kernel(hidden_states):
            xz = self.in_proj(hidden_states)                                        # (B, L, 2*d_inner)
            y = self._branch_channels_last(xz, "", reverse=False)
            if self.bimamba_type == "v2":
                y = y + self._branch_channels_last(xz, "_b", reverse=True)
                if self.divide_out:
                    y = y / 2
            return self.out_proj(y.to(self.out_proj.weight.dtype))
        xz = self.in_proj(hidden_states).transpose(1, 2)                            # (B, 2*d_inner, L)
        y = self._branch(xz, "").float()
        if self.bimamba_type == "v2":
            y = y + self._branch(xz.flip(-1), "_b").float().flip(-1)
            if self.divide_out:
                y = y / 2
        return self.out_proj(y.transpose(1, 2).to(self.out_proj.weight.dtype))

    def scan_macs(self, batch: int, seqlen: int) -> int:
        """The scan's multiply-accumulates (deltaB_u, the recurrence, C . x), which FlopCounterMode does not see."""
        directions = 2 if self.bimamba_type == "v2" else 1
        return 3 * directions * batch * self.d_inner * seqlen * self.d_state

    def extra_macs(self, inputs, output) -> int:
        batch, seqlen, _ = inputs[0].shape
        return self.scan_macs(batch, seqlen)
