"""Selective scan forward + backward on CPU: the fused C kernel against our PyTorch scan and mambapy.

Three implementations of selective_scan_ref's semantics (softplus(delta + bias), D skip, silu(z)
gate) at batch --batch, d_inner --dim, d_state --state and L = --lengths, one intra-op thread, run
alternately in this process (--repeats rounds after a warm-up); the figures are medians of per-round
ratios. "pytorch" is mamba.py's chunked parallel scan (the fallback without a C compiler, and the
default before the kernel); mambapy (MIT, pure torch; `pip install mambapy`) runs its pscan on the
(batch, L, dim, N) tensors it materialises, as its Mamba does; it is skipped where not importable.

    .venv/bin/python benchmarks/bench_scan.py
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from diffzoo.models import mamba


def inputs(batch, dim, n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length) * 0.5, A=-torch.exp(r(dim, n)),
                B=r(batch, n, length), C=r(batch, n, length), D=r(dim), z=r(batch, dim, length),
                delta_bias=r(dim) * 0.5)


def ours(fused: bool):
    def run(u, delta, A, B, C, D, z, delta_bias):
        saved = mamba.use_fused_kernel
        if not fused:
            mamba.use_fused_kernel = lambda u: False
        try:
            return mamba.selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
        finally:
            mamba.use_fused_kernel = saved
    return run


def mambapy_scan():
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def run(u, delta, A, B, C, D, z, delta_bias):  # mambapy's MambaBlock.selective_scan, channel-last
        x, z_ = u.transpose(1, 2), z.transpose(1, 2)
        dl = F.softplus(delta.transpose(1, 2) + delta_bias)
        delta_a = torch.exp(dl.unsqueeze(-1) * A)
        bx = dl.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * x.unsqueeze(-1)
        hs = pscan(delta_a, bx)
        y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(3) + D * x
        return (y * F.silu(z_)).transpose(1, 2)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    impls = {"fused": ours(True), "pytorch": ours(False)}
    if (peer := mambapy_scan()) is not None:
        impls["mambapy"] = peer
    print(f"batch {args.batch}, d_inner {args.dim}, d_state {args.state}, forward + backward, cpu "
          f"({platform.processor() or platform.machine()}, 1 thread), torch {torch.__version__}, kernel "
          f"{'built' if mamba.kernels_built() else 'NOT built'}; median of {args.repeats} alternating rounds\n")
    head = " | ".join(impls)
    print(f"| L | {head} | fused / pytorch | fused / mambapy |")
    print("|---|" + "---|" * (len(impls) + 2))
    for length in args.lengths:
        inp = inputs(args.batch, args.dim, args.state, length)
        times = {k: [] for k in impls}
        for i in range(args.repeats + 1):
            for name, fn in impls.items():
                leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
                start = time.perf_counter()
                fn(**leaves).sum().backward()
                if i:
                    times[name].append(time.perf_counter() - start)
        ratio = {k: statistics.median(f / o for f, o in zip(times["fused"], times[k], strict=True)) for k in impls}
        cells = " | ".join(f"{1e3 * statistics.median(times[k]):.1f} ms" for k in impls)
        vs_peer = f"**{ratio['mambapy']:.2f}**" if "mambapy" in impls else "-"
        print(f"| {length} | {cells} | **{ratio['pytorch']:.2f}** | {vs_peer} |", flush=True)


if __name__ == "__main__":
    main()
