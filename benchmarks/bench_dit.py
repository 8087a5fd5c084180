"""Training throughput of DiT (or any backbone): forward + backward + AdamW (+ EMA), images/s and MFU.

    python benchmarks/bench_dit.py                      # DiT-S/2 on CPU (batch 8, 256px latents)
    python benchmarks/bench_dit.py --model DiT-XL/2 --device cuda --dtype bf16 --batch 64 --peak-tflops 790
    python benchmarks/bench_dit.py --model DiT-XL/2 --device cuda --dtype bf16 --batch 64 --peak-tflops 790 \
        --compile --fused-adamw --ema foreach --sdpa flash --profile results/gpu/dit_profile.txt

MFU = 3 x 2 x MACs x images/s / peak (the DiT paper's training-compute estimate: a backward costs two
forwards). The timed steps run back to back with no host synchronisation in between (CUDA: one
synchronize before and after the window), like the training loop. --ema loop is training.py's
update_ema; foreach is the same update as one torch._foreach_lerp_. --sdpa flash makes attention
fail rather than fall back when the flash kernel cannot run. --grad-checkpointing is the model's
activation checkpointing (training.grad_checkpointing). --profile writes the top ops of 3 profiled
steps. --model takes any registered backbone (DiS-H/2, DiffuSSM-XL: their declared scan MACs count);
--scan ours forces our PyTorch scan on CUDA, mamba-ssm requires mamba-ssm's kernels (an error where
they do not import). losses_finite / params_finite check every timed step (bf16 stability: --steps
100). Prints one JSON line per run (peak memory on CUDA).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch

from diffzoo.diffusion import create_diffusion
from diffzoo.flops import model_cost
from diffzoo.models import create_model, mamba
from diffzoo.training import update_ema


def ema_update(kind: str, ema, model, decay: float = 0.9999):
    if kind == "loop":
        return lambda: update_ema(ema, model, decay)
    if kind == "foreach":
        pe, pm = list(ema.parameters()), list(model.parameters())
        return lambda: torch._foreach_lerp_(pe, pm, 1 - decay)
    return lambda: None


def sdpa_context(kind: str):
    if kind == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "math": SDPBackend.MATH}[kind])


def select_scan(kind: str, device: torch.device) -> str:
    """Which selective scan Mamba layers run: on CUDA mamba-ssm's kernels or our PyTorch scan (--scan
    ours), on CPU our fused C kernel where it builds, else our PyTorch scan."""
    if kind == "ours":
        mamba.cuda_selective_scan = lambda: None
    elif kind == "mamba-ssm" and (device.type != "cuda" or mamba.cuda_selective_scan() is None):
        raise SystemExit(json.dumps({"error": "mamba_ssm's selective_scan_fn does not import here"}))
    if device.type == "cuda":
        return "mamba-ssm" if mamba.cuda_selective_scan() is not None else "diffzoo PyTorch"
    return "diffzoo fused C" if mamba.kernels_built() else "diffzoo PyTorch"


def bench(args) -> dict:
    dev = torch.device(args.device)
    scan = select_scan(args.scan, dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = create_model(args.model, input_size=args.input_size).to(dev)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    ema = create_model(args.model, input_size=args.input_size).to(dev).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    net = torch.compile(model) if args.compile else model
    diffusion = create_diffusion("")
    fused = {"fused": True} if args.fused_adamw else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0, **fused)
    ema_step = ema_update(args.ema, ema, model)
    x = torch.randn(args.batch, 4, args.input_size, args.input_size, device=dev)
    y = torch.randint(0, 1000, (args.batch,), device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def step():
        t = torch.randint(0, 1000, (args.batch,), device=dev)
        with sdpa_context(args.sdpa):  # around the backward too: checkpointing recomputes attention there
            with autocast:
                loss = diffusion.training_losses(net, x, t, {"y": y})["loss"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        ema_step()
        return loss.detach()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    losses = []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    sync()
    seconds = time.perf_counter() - t0
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    ips = args.batch * args.steps / seconds
    macs = model_cost(args.model, input_size=args.input_size)["gflops"] * 1e9
    result = {"model": args.model, "device": args.device, "dtype": args.dtype, "batch": args.batch,
              "compile": args.compile, "fused_adamw": args.fused_adamw, "ema": args.ema, "sdpa": args.sdpa,
              "grad_checkpointing": args.grad_checkpointing, "scan": scan, "steps": args.steps,
              "warmup_s": round(warmup_s, 1),
              "step_ms": round(1e3 * seconds / args.steps, 2), "images_per_s": round(ips, 2),
              "train_tflops": round(6 * macs * ips / 1e12, 3), "losses_finite": finite,
              "params_finite": all(bool(torch.isfinite(q).all()) for q in model.parameters()),
              "threads": torch.get_num_threads(),
              "machine": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                          else platform.processor() or platform.machine())}
    if dev.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    if args.peak_tflops:
        result["mfu"] = round(result["train_tflops"] / args.peak_tflops, 4)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            sync()
        sort = "cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        with open(args.profile, "w") as f:
            f.write(json.dumps(result) + "\n")
            f.write(prof.key_averages().table(sort_by=sort, row_limit=30))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="DiT-S/2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--fused-adamw", action="store_true")
    p.add_argument("--ema", choices=("none", "loop", "foreach"), default="none")
    p.add_argument("--sdpa", choices=("auto", "flash", "efficient", "math"), default="auto")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--scan", choices=("auto", "ours", "mamba-ssm"), default="auto", help="Mamba layers on CUDA")
    p.add_argument("--profile", default=None, help="write the top ops of 3 profiled steps to this file")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for this dtype (MFU)")
    print(json.dumps(bench(p.parse_args())))


if __name__ == "__main__":
    main()
