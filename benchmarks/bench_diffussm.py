"""DiffuSSM's S4D convolution on CPU: the direct (Toeplitz matmul) path against the FFT path, and a
DiffuSSM-S training step with each, beside DiT-S/2's step at the same width, depth and batch.

The two paths compute the same convolution (tests/test_ssm_models.py checks both against the
recurrence); BiS4D.conv picks one ("auto" = direct where the batch is at least the length, up to
L = 256). Everything runs alternately in this process, one thread; prints a markdown table.

    .venv/bin/python benchmarks/bench_diffussm.py [--repeats 3] [--steps 20]
"""
from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from diffzoo.models import create_model  # noqa: E402
from diffzoo.models.diffussm import BiS4D  # noqa: E402

torch.set_num_threads(1)


def conv_ms(batch: int, channels: int, length: int, conv: str, reps: int) -> float:
    torch.manual_seed(0)
    ssm = BiS4D(channels, d_state=64)
    ssm.conv = conv
    u = torch.randn(batch, length, channels, requires_grad=True)
    grad = torch.randn(batch, length, 2, channels)
    for _ in range(2):
        ssm(u).backward(grad)
    t0 = time.perf_counter()
    for _ in range(reps):
        ssm(u).backward(grad)
    return (time.perf_counter() - t0) / reps * 1e3


def step_ms(name: str, conv: str | None, steps: int) -> float:
    """A training step (forward, backward, AdamW) of the default's size: width 64, depth 4, 8x8x1, batch 64."""
    torch.manual_seed(0)
    args = dict(hidden_size=64, depth=4, input_size=8, in_channels=1, num_classes=10)
    model = create_model(name, **(dict(args, num_heads=4) if name.startswith("DiT") else args))
    for m in model.modules():
        if isinstance(m, BiS4D) and conv:
            m.conv = conv
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t, y = torch.randn(64, 1, 8, 8), torch.randint(0, 1000, (64,)), torch.randint(0, 10, (64,))

    def step():
        loss = model(x, t, y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    med = statistics.median
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread, median of {args.repeats}\n")
    print("| S4D conv fwd+bwd (batch, channels, length) | direct ms | fft ms | direct / fft |\n|---|---|---|---|")
    for shape in ((64, 64, 64), (250, 64, 64), (16, 64, 64), (64, 64, 128), (256, 64, 128), (8, 64, 256)):
        d, f = [], []
        for _ in range(args.repeats):
            d.append(conv_ms(*shape, "direct", 10))
            f.append(conv_ms(*shape, "fft", 10))
        print(f"| {shape} | {med(d):.1f} | {med(f):.1f} | {med(d) / med(f):.2f} |")
    print("\n| training step, default size | ms | / DiT-S/2 |\n|---|---|---|")
    runs = {"DiffuSSM-S, fft": [], "DiffuSSM-S, auto (direct)": [], "DiT-S/2": []}
    for _ in range(args.repeats):
        runs["DiffuSSM-S, fft"].append(step_ms("DiffuSSM-S", "fft", args.steps))
        runs["DiffuSSM-S, auto (direct)"].append(step_ms("DiffuSSM-S", "auto", args.steps))
        runs["DiT-S/2"].append(step_ms("DiT-S/2", None, args.steps))
    dit = med(runs["DiT-S/2"])
    for name, times in runs.items():
        print(f"| {name} | {med(times):.1f} | {med(times) / dit:.2f} |")


if __name__ == "__main__":
    main()
