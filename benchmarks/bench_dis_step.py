"""DiS training step against DiT's at equal width, depth and tokens (CPU, issue 13.5).

One step = forward, MSE loss, backward, AdamW step, batch --batch, patch 2, 4 input channels. The
two models step alternately in this process (one intra-op thread), --repeats times after a warm-up;
the figure is the median of the per-pair ratios DiS / DiT, which is robust on a shared machine even
where the absolute milliseconds are not. Settings: the default's DiS (d_state 4, expand 1, as in
params.yaml) and the DiS paper's (d_state 16, expand 2).

    .venv/bin/python benchmarks/bench_dis_step.py                  # the table
    .venv/bin/python benchmarks/bench_dis_step.py --profile        # plus the top ops of a DiS step
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from diffzoo.models import create_model

SETTINGS = {"default (d_state 4, expand 1)": dict(d_state=4, expand=1),
            "paper (d_state 16, expand 2)": dict(d_state=16, expand=2)}


def make_step(model, batch: int, size: int):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def step():
        loss = (model(x, t, y)[:, :4] - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def models(width: int, depth: int, size: int, mixer: dict):
    common = dict(input_size=size, in_channels=4, num_classes=10, hidden_size=width, depth=depth)
    dit = create_model("DiT-S/2", num_heads=4, **common)
    dis = create_model("DiS-S/2", drop_path_rate=0.0, **mixer, **common)
    return dit, dis


def compare(width, depth, size, batch, mixer, repeats) -> dict:
    torch.manual_seed(0)
    dit, dis = models(width, depth, size, mixer)
    steps = {"DiT": make_step(dit, batch, size), "DiS": make_step(dis, batch, size)}
    times = {k: [] for k in steps}
    for i in range(repeats + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    ratios = [s / d for s, d in zip(times["DiS"], times["DiT"], strict=True)]
    return {"dit_ms": 1e3 * statistics.median(times["DiT"]), "dis_ms": 1e3 * statistics.median(times["DiS"]),
            "ratio": statistics.median(ratios), "ratio_range": (min(ratios), max(ratios))}


def profile(width, depth, size, batch, mixer, rows: int = 25) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    _, dis = models(width, depth, size, mixer)
    step = make_step(dis, batch, size)
    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32], help="latent sides (tokens = (side/2)^2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"width {args.width}, depth {args.depth}, batch {args.batch}, patch 2; cpu "
          f"({platform.processor() or platform.machine()}, {args.threads} thread), torch {torch.__version__}; "
          f"median of {args.repeats} alternating steps\n")
    print("| DiS settings | tokens | DiT step | DiS step | DiS / DiT (range) |")
    print("|---|---|---|---|---|")
    for label, mixer in SETTINGS.items():
        for size in args.sizes:
            r = compare(args.width, args.depth, size, args.batch, mixer, args.repeats)
            print(f"| {label} | {(size // 2) ** 2} | {r['dit_ms']:.0f} ms | {r['dis_ms']:.0f} ms | "
                  f"**{r['ratio']:.2f}** ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}) |", flush=True)
    if args.profile:
        for label, mixer in SETTINGS.items():
            print(f"\nDiS step, {label}, {(args.sizes[0] // 2) ** 2} tokens:")
            profile(args.width, args.depth, args.sizes[0], args.batch, mixer)


if __name__ == "__main__":
    main()
