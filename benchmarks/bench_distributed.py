"""Several training processes through diffzoo's own wrappers (runtime.distribute: DDP or FSDP2).

Run under torchrun; every rank takes GPU LOCAL_RANK % device_count, so 2 processes can share one GPU
(a device check without a second GPU: NCCL refuses two ranks on one device, gloo carries CUDA
tensors through the host). Each rank trains --steps steps of --model on its own random latents
(bf16 autocast on CUDA), AdamW and training.update_ema, like the training loop. Rank 0 prints one
JSON line: step time, global images/s, peak memory per rank, and whether the ranks' weights agree
(DDP: every replica equal; FSDP2: the gathered full state finite). Errors are printed as JSON too.

    torchrun --standalone --nproc_per_node 2 benchmarks/bench_distributed.py --device cpu --model DiT-S/2 \
        --input-size 8 --steps 2                                        # CPU, gloo (a syntax check)
    torchrun --standalone --nproc_per_node 2 benchmarks/bench_distributed.py --backend nccl --parallel fsdp
"""
from __future__ import annotations

import argparse
import json
import os
import time
import traceback

import torch
import torch.distributed as dist

from diffzoo.diffusion import create_diffusion
from diffzoo.models import create_model
from diffzoo.runtime import distribute
from diffzoo.training import full_state, update_ema


def run(args) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.device == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    torch.manual_seed(0)  # equal initial weights on every rank
    model = create_model(args.model, input_size=args.input_size).to(dev)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    ema = create_model(args.model, input_size=args.input_size).to(dev).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    net = distribute(model, ema, world, args.parallel == "fsdp", dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    diffusion = create_diffusion("")
    gen = torch.Generator(device=dev).manual_seed(rank)
    x = torch.randn(args.batch, 4, args.input_size, args.input_size, device=dev, generator=gen)
    y = torch.randint(0, 1000, (args.batch,), device=dev, generator=gen)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step():
        t = torch.randint(0, 1000, (args.batch,), device=dev, generator=gen)
        with autocast:
            loss = diffusion.training_losses(net, x, t, {"y": y})["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(ema, model, 0.9999)
        return loss.detach()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step()
    sync()
    dist.barrier()
    start = time.perf_counter()
    losses = torch.stack([step() for _ in range(args.steps)])
    sync()
    seconds = time.perf_counter() - start
    agree = {}
    if args.parallel == "fsdp":  # the gathered full state (a collective; rank 0 receives it)
        state = full_state(model)
        agree["full_state_finite"] = all(bool(torch.isfinite(v).all()) for v in state.values()) if rank == 0 else None
    else:  # every replica holds all weights: their checksums must be equal
        checksum = torch.tensor([sum(float(q.double().sum()) for q in model.parameters())], dtype=torch.float64,
                                device=dev)
        sums = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(sums, checksum)
        agree["weights_equal_across_ranks"] = len({float(c) for c in sums}) == 1
    peak = torch.tensor([torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else 0.0], device=dev)
    peaks = [torch.zeros_like(peak) for _ in range(world)]
    dist.all_gather(peaks, peak)
    return {"model": args.model, "backend": dist.get_backend(), "parallel": args.parallel, "world": world,
            "device": str(dev), "batch_per_rank": args.batch, "grad_checkpointing": args.grad_checkpointing,
            "step_ms": round(1e3 * seconds / args.steps, 2), "images_per_s": round(world * args.batch * args.steps
                                                                                  / seconds, 2),
            "losses_finite": bool(torch.isfinite(losses).all()), **agree,
            "peak_memory_gib": [round(float(p), 2) for p in peaks]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--backend", default=None, help="nccl | gloo (default: nccl on CUDA, gloo on CPU)")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp")
    p.add_argument("--model", default="DiT-XL/2")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=16, help="per rank")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--grad-checkpointing", action="store_true")
    args = p.parse_args()
    backend = args.backend or ("nccl" if args.device == "cuda" else "gloo")
    try:
        dist.init_process_group(backend)
        result = run(args)
    except Exception as err:  # one JSON line per failing rank: the suite records it and goes on
        print(json.dumps({"error": f"{type(err).__name__}: {err}"[:2000], "backend": backend,
                          "parallel": args.parallel, "rank": os.environ.get("RANK"),
                          "where": traceback.format_exc().splitlines()[-3:]}), flush=True)
        raise SystemExit(1) from None
    if dist.get_rank() == 0:
        print(json.dumps(result), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
