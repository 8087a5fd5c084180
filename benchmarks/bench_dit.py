"""Training throughput of DiT: forward + backward + AdamW step, images/s and model FLOP utilisation.

    python benchmarks/bench_dit.py                      # DiT-S/2 on CPU (batch 8, 256px latents)
    python benchmarks/bench_dit.py --model DiT-XL/2 --device cuda --dtype bf16 --batch 64 --peak-tflops 989

MFU = 3 x 2 x MACs x images/s / peak (the DiT paper's training-compute estimate: a backward costs two
forwards). Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from diffzoo.diffusion import create_diffusion
from diffzoo.flops import model_cost
from diffzoo.models import create_model


def bench(model_name: str, device: str, dtype: str, batch: int, steps: int, warmup: int, input_size: int,
          compile_model: bool) -> dict:
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = create_model(model_name, input_size=input_size).to(dev)
    net = torch.compile(model) if compile_model else model
    diffusion = create_diffusion("")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    x = torch.randn(batch, 4, input_size, input_size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        t = torch.randint(0, 1000, (batch,), device=dev)
        with autocast:
            loss = diffusion.training_losses(net, x, t, {"y": y})["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    ips = batch * steps / seconds
    macs = model_cost(model_name, input_size=input_size)["gflops"] * 1e9
    return {"model": model_name, "device": device, "dtype": dtype, "batch": batch, "images_per_s": round(ips, 2),
            "train_tflops": round(6 * macs * ips / 1e12, 3), "threads": torch.get_num_threads(),
            "machine": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                        else platform.processor() or platform.machine())}


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
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for this dtype (MFU)")
    args = p.parse_args()
    r = bench(args.model, args.device, args.dtype, args.batch, args.steps, args.warmup, args.input_size, args.compile)
    if args.peak_tflops:
        r["mfu"] = round(r["train_tflops"] / args.peak_tflops, 4)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
