"""MoE layer throughput against a dense SwiGLU MLP with the same active parameters.

The DiT-MoE layer at width d (E experts, top-2 of width 4d, a shared expert of width 2d) uses
2 * 12 d^2 + 6 d^2 = 30 d^2 parameters per token; the dense comparator is a SwiGLU of width 10d
(3 * d * 10d = 30 d^2). Both get the same tokens; we time forward and forward+backward.

    .venv/bin/python benchmarks/bench_moe.py                       # CPU, DiT-MoE-S width
    .venv/bin/python benchmarks/bench_moe.py --device cuda --dtype bfloat16 --tokens 32768 --dim 1152

Prints a markdown table (tokens/s, median of --repeats timed runs after one warm-up; CPU runs are
timed in process CPU time, see `timed`).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffzoo.models.dit_moe import SparseMoE, SwiGLU


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds per call: wall time on CUDA, this process's CPU time on CPU (with --threads 1
    that is the compute time, unaffected by other jobs competing for the cores)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(clock() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=1024, help="batch * sequence (256 tokens per 256px image)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable numbers on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    d = args.dim
    layers = {
        f"MoE {args.experts}E top-2 + shared, grouped_mm": SparseMoE(d, 4 * d, args.experts, 2, dispatch="grouped_mm"),
        f"MoE {args.experts}E top-2 + shared, loop over experts": SparseMoE(d, 4 * d, args.experts, 2, dispatch="loop"),
        "dense SwiGLU 10d (same active params)": SwiGLU(d, 10 * d),
    }
    x = torch.randn(args.tokens // 256, 256, d, device=device, dtype=dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}), {args.dtype}, d={d}, {args.tokens} tokens, torch {torch.__version__}\n")
    print("| layer | active params/token | forward tokens/s | fwd+bwd tokens/s |")
    print("|---|---|---|---|")
    for name, layer in layers.items():
        layer = layer.to(device=device, dtype=dtype).train()
        unused = layer.inactive_params() if hasattr(layer, "inactive_params") else 0
        active = sum(p.numel() for p in layer.parameters()) - unused
        xg = x.clone().requires_grad_()

        def fwd(layer=layer):
            with torch.no_grad():
                layer(x)

        def fwd_bwd(layer=layer, xg=xg):
            layer(xg).sum().backward()

        t_f, t_fb = timed(fwd, device, args.repeats), timed(fwd_bwd, device, args.repeats)
        print(f"| {name} | {active / d**2:.1f} d^2 | {args.tokens / t_f:,.0f} | {args.tokens / t_fb:,.0f} |")


if __name__ == "__main__":
    main()
