"""The fused CPU selective scan (selective_scan_cpu.c): built on first use, called through ctypes.

`fused_selective_scan` computes, on channel-last float32 tensors, what selective_scan_ref computes:
delta <- softplus(delta + delta_bias) (each optional), h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t,
y_t = C_t . h_t + D u_t, out_t = y_t * silu(z_t), with time run backwards when `reverse` (the backward branch of a
bidirectional mixer, without flipping anything). Its backward is the kernel's own: a chunk's states
are recomputed from the state stored at its start, then the reverse recurrence runs through it.

The library is compiled once per source and machine type with the system C compiler ($CC, else cc)
into $DIFFZOO_KERNEL_DIR (default ~/.cache/diffzoo/kernels), written under a temporary name and
renamed, so concurrent jobs never load a half-written file. Where there is no compiler or the build
fails, `available()` is False and mamba.py uses its PyTorch scan (same values; tests cover both).
DIFFZOO_SCAN_KERNEL=0 turns the kernel off. The kernel is single-threaded per batch row; batch
slices run in torch.get_num_threads() Python threads (ctypes releases the GIL).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("selective_scan_cpu.c")
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC"]


class _ScanArgs(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_int64) for name in ("batch", "length", "dim", "n")]
                + [(name, ctypes.c_void_p) for name in ("u", "delta", "a_t", "b", "c", "d_skip", "z", "delta_bias")]
                + [(name, ctypes.c_int64) for name in ("su_b", "su_t", "sd_b", "sd_t", "sz_b", "sz_t", "sb_b",
                                                       "sb_t", "sb_n", "sc_b", "sc_t", "sc_n")]
                + [("reverse", ctypes.c_int), ("softplus", ctypes.c_int)])


def _kernel_dir() -> Path:
    return Path(os.environ.get("DIFFZOO_KERNEL_DIR") or Path.home() / ".cache" / "diffzoo" / "kernels")


def _build() -> Path:
    compiler = os.environ.get("CC", "cc")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(CFLAGS), version, platform.machine()])
                         .encode()).hexdigest()[:16]
    target = _kernel_dir() / f"selective_scan_cpu-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                           check=True)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=1)
def library():
    """The loaded kernel library, or None (no compiler, build failure, or DIFFZOO_SCAN_KERNEL=0)."""
    if os.environ.get("DIFFZOO_SCAN_KERNEL", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        warnings.warn(f"fused CPU selective scan unavailable, using the PyTorch scan: {detail.strip()[:300]}",
                      stacklevel=2)
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.scan_forward.argtypes = [ctypes.POINTER(_ScanArgs), ptr, ptr, i64, i64]
    lib.scan_backward.argtypes = [ctypes.POINTER(_ScanArgs), ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr,
                                  ptr, i64, i64]
    lib.scan_chunk.restype = ctypes.c_int
    lib.conv_silu_forward.argtypes = [i64, i64, i64, ptr, i64, i64, ptr, ptr, ctypes.c_int, ptr, i64, i64]
    lib.conv_silu_backward.argtypes = [i64, i64, i64, ptr, i64, i64, ptr, ptr, ctypes.c_int, ptr, ptr, ptr, ptr, i64,
                                       i64]
    return lib


def available() -> bool:
    return library() is not None


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="diffzoo-scan")


def _over_batch(fn, batch: int) -> list:
    """fn(b0, b1, slot) over slices of the batch, in up to torch.get_num_threads() threads."""
    workers = max(1, min(torch.get_num_threads(), batch))
    bounds = [batch * i // workers for i in range(workers + 1)]
    if workers == 1:
        return [fn(0, batch, 0)]
    futures = [_pool().submit(fn, bounds[i], bounds[i + 1], i) for i in range(workers)]
    return [f.result() for f in futures]


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _args(u, delta, a_t, b, c, d_skip, z, delta_bias, reverse, softplus) -> _ScanArgs:
    batch, length, dim = u.shape
    zs = z.stride() if z is not None else (0, 0, 1)
    return _ScanArgs(batch, length, dim, a_t.shape[0], _ptr(u), _ptr(delta), _ptr(a_t), _ptr(b), _ptr(c),
                     _ptr(d_skip), _ptr(z), _ptr(delta_bias), u.stride(0), u.stride(1), delta.stride(0),
                     delta.stride(1), zs[0], zs[1], *b.stride(), *c.stride(), int(reverse), int(softplus))


def _unit_inner(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _check(*tensors) -> None:
    """The kernels read raw float32 CPU memory: refuse anything else rather than read garbage."""
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise TypeError(f"the fused CPU kernels take float32 CPU tensors, got {t.dtype} on {t.device}")


class _FusedSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, reverse, softplus):
        _check(u, delta, A, B, C, D, z, delta_bias)
        u, delta, z = _unit_inner(u), _unit_inner(delta), _unit_inner(z)
        a_t = A.t().contiguous()
        batch, length, dim = u.shape
        out = u.new_empty(batch, length, dim)
        lib = library()
        chunk_states = u.new_empty(batch, -(-length // lib.scan_chunk()), a_t.shape[0], dim)  # state per chunk
        args = _args(u, delta, a_t, B, C, D, z, delta_bias, reverse, softplus)
        _over_batch(lambda b0, b1, _: lib.scan_forward(ctypes.byref(args), out.data_ptr(), chunk_states.data_ptr(),
                                                       b0, b1), batch)
        ctx.save_for_backward(u, delta, a_t, B, C, D, z, delta_bias, chunk_states)
        ctx.reverse, ctx.softplus = reverse, softplus
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        u, delta, a_t, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
        grad_out = _unit_inner(grad_out)
        batch, length, dim = u.shape
        n = a_t.shape[0]
        grad_u, grad_delta = u.new_empty(batch, length, dim), u.new_empty(batch, length, dim)
        grad_z = u.new_empty(batch, length, dim) if z is not None else None
        grad_b, grad_c = u.new_empty(batch, length, n), u.new_empty(batch, length, n)
        workers = max(1, min(torch.get_num_threads(), batch))
        # sums over batch and time: float64 partials per thread (equal results for any thread count)
        grad_a_t = u.new_zeros(workers, n, dim, dtype=torch.float64)
        grad_d = u.new_zeros(workers, dim, dtype=torch.float64)
        grad_bias = u.new_zeros(workers, dim, dtype=torch.float64) if delta_bias is not None else None
        args = _args(u, delta, a_t, B, C, D, z, delta_bias, ctx.reverse, ctx.softplus)
        lib = library()
        _over_batch(lambda b0, b1, i: lib.scan_backward(
            ctypes.byref(args), chunk_states.data_ptr(), grad_out.data_ptr(), grad_out.stride(0), grad_out.stride(1),
            grad_u.data_ptr(), grad_delta.data_ptr(), _ptr(grad_z), grad_b.data_ptr(), grad_c.data_ptr(),
            grad_a_t[i].data_ptr(), grad_d[i].data_ptr(), None if grad_bias is None else grad_bias[i].data_ptr(),
            b0, b1), batch)
        return (grad_u, grad_delta, grad_a_t.sum(0).t().float(), grad_b, grad_c,
                grad_d.sum(0).float() if D is not None else None, grad_z,
                grad_bias.sum(0).float() if grad_bias is not None else None, None, None)


def fused_selective_scan(u, delta, A, B, C, D=None, z=None, reverse: bool = False, delta_bias=None,
                         delta_softplus: bool = False) -> torch.Tensor:
    """u, delta, z: (batch, L, dim); A: (dim, N); B, C: (batch, L, N); D, delta_bias: (dim,). All
    float32 on the CPU. Returns (batch, L, dim) float32."""
    return _FusedSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, bool(reverse), bool(delta_softplus))


class _FusedConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, reverse):
        _check(x, weight, bias)
        x = _unit_inner(x)
        batch, length, dim = x.shape
        w_t = weight.reshape(dim, -1).t().contiguous()                              # (K, dim)
        out = x.new_empty(batch, length, dim)
        lib = library()
        _over_batch(lambda b0, b1, _: lib.conv_silu_forward(
            length, dim, w_t.shape[0], x.data_ptr(), x.stride(0), x.stride(1), w_t.data_ptr(), _ptr(bias),
            int(reverse), out.data_ptr(), b0, b1), batch)
        ctx.save_for_backward(x, w_t, bias)
        ctx.reverse, ctx.weight_shape = reverse, weight.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, w_t, bias = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        batch, length, dim = x.shape
        workers = max(1, min(torch.get_num_threads(), batch))
        grad_x = x.new_empty(batch, length, dim)
        grad_w_t = x.new_zeros(workers, *w_t.shape, dtype=torch.float64)
        grad_b = x.new_zeros(workers, dim, dtype=torch.float64) if bias is not None else None
        lib = library()
        _over_batch(lambda b0, b1, i: lib.conv_silu_backward(
            length, dim, w_t.shape[0], x.data_ptr(), x.stride(0), x.stride(1), w_t.data_ptr(), _ptr(bias),
            int(ctx.reverse), grad_out.data_ptr(), grad_x.data_ptr(), grad_w_t[i].data_ptr(),
            None if grad_b is None else grad_b[i].data_ptr(), b0, b1), batch)
        grad_w = grad_w_t.sum(0).t().float().reshape(ctx.weight_shape)
        return grad_x, grad_w, None if grad_b is None else grad_b.sum(0).float(), None


def fused_conv_silu(x, weight, bias=None, reverse: bool = False) -> torch.Tensor:
    """silu(depthwise causal conv1d(x)) on channel-last float32 x (batch, L, dim), with nn.Conv1d's
    weight (dim, 1, K) and bias (dim,); `reverse` convolves in reversed time (the flipped sequence's
    causal conv, unflipped). Returns (batch, L, dim) float32."""
    return _FusedConvSilu.apply(x, weight, bias, bool(reverse))
