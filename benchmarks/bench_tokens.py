"""Time per training step against the number of tokens for DiT, DiS and DiffuSSM at equal width/depth.

Every model runs on unpatchified latents (patch size 1), so tokens = input_size**2 (64 ... 4096);
one step = forward, MSE loss, backward, AdamW step, at batch size --batch. Also times our parallel
selective scan against the sequential loop of selective_scan_ref (forward + backward, 1024 tokens).

    .venv/bin/python benchmarks/bench_tokens.py        # CPU (1 intra-op thread): RESULTS_tokens.md + tokens.png
    .venv/bin/python benchmarks/bench_tokens.py --device cuda   # GPU; DiS uses mamba-ssm's kernels if they import

On CPU the SSM backbones run our PyTorch scan / FFT convolution; their cost grows linearly in the
number of tokens while DiT's attention grows quadratically, so the curves cross at some length.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the sequential reference loop lives with the tests

from diffzoo.models import create_model  # noqa: E402
from diffzoo.models.mamba import cuda_selective_scan, kernels_built  # noqa: E402

MODELS = {  # name -> (registered variant, overrides); width and depth are set from the command line
    "DiT": ("DiT-S/2", dict(patch_size=1, num_heads=4)),
    "DiS": ("DiS-S/2", dict(patch_size=1, drop_path_rate=0.0)),
    "DiffuSSM": ("DiffuSSM-S", dict()),
}


def time_step(model, batch: int, size: int, device: str, repeats: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 4, size, size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    best = float("inf")
    for i in range(repeats + 1):  # first step is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = (model(x, t, y)[:, :4] - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    return best


def scan_speedup(device: str) -> dict:
    from test_ssm_scan import _inputs, time_scan_against_loop

    loop, ours = time_scan_against_loop({k: v.to(device) for k, v in _inputs(1024, 1, 32, 16).items()})
    return {"shape": "batch 1, d_inner 32, d_state 16, 1024 tokens, forward+backward",
            "sequential_s": loop, "parallel_s": ours, "speedup": loop / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64], help="latent sizes (tokens = size^2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (shared machines: 1)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for size in args.sizes:
        for family, (variant, extra) in MODELS.items():
            model = create_model(variant, input_size=size, in_channels=4, num_classes=10, hidden_size=args.width,
                                 depth=args.depth, **extra).to(args.device)
            seconds = time_step(model, args.batch, size, args.device, args.repeats)
            rows.append({"model": family, "tokens": size * size, "step_s": seconds})
            print(f"{family:9s} tokens {size * size:5d}  {seconds * 1e3:9.1f} ms/step", flush=True)
    speed = scan_speedup(args.device)
    print(f"scan: sequential {speed['sequential_s']:.3f} s, parallel {speed['parallel_s']:.4f} s, "
          f"speedup {speed['speedup']:.0f}x")

    scan_kernel = ("mamba-ssm CUDA" if args.device == "cuda" and cuda_selective_scan() else
                   "diffzoo fused C kernel" if args.device == "cpu" and kernels_built() else "diffzoo PyTorch")
    meta = {"device": args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}, "
            f"{args.threads} thread)", "torch": torch.__version__, "width": args.width, "depth": args.depth,
            "batch": args.batch, "selective_scan": scan_kernel}
    tag = "" if args.device == "cpu" else f"_{args.device}"
    write_markdown(args.out / f"RESULTS_tokens{tag}.md", meta, rows, speed)
    plot(args.out / f"tokens{tag}.png", meta, rows)


def write_markdown(path: Path, meta: dict, rows: list, speed: dict) -> None:
    tokens = sorted({r["tokens"] for r in rows})
    table = {(r["model"], r["tokens"]): r["step_s"] for r in rows}
    lines = [f"# Training-step time against tokens ({meta['device']})", "",
             f"width {meta['width']}, depth {meta['depth']} (DiS: {meta['depth']} + 1 mid block), batch "
             f"{meta['batch']}, patch size 1, AdamW step included; selective scan: {meta['selective_scan']}; "
             f"torch {meta['torch']}. Generated by benchmarks/bench_tokens.py.", "",
             "| model | " + " | ".join(f"{t} tokens" for t in tokens) + " | growth 1024->4096 |",
             "|---|" + "---|" * (len(tokens) + 1)]
    for family in MODELS:
        cells = [f"{table[(family, t)] * 1e3:.1f} ms" for t in tokens]
        growth = (f"{table[(family, 4096)] / table[(family, 1024)]:.1f}x"
                  if (family, 4096) in table and (family, 1024) in table else "")
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {growth} |")
    lines += ["", "Linear cost would grow 4x per 4x tokens, quadratic 16x. Best of --repeats steps after a "
              "warm-up; on a "
              "shared CPU the absolute numbers move by tens of percent between runs, the growth factors much less. "
              "The DiS scan runs in our fused C kernel on CPU (its state in cache, as mamba-ssm's CUDA kernel "
              "keeps it on-chip); without a C compiler, in PyTorch, materialising (batch, 2*width, chunk, d_state) "
              "scan states.", "",
              f"Selective scan at 1024 tokens ({speed['shape']}): sequential loop (selective_scan_ref's "
              f"structure) {speed['sequential_s'] * 1e3:.0f} ms, our scan ({meta['selective_scan']}) "
              f"{speed['parallel_s'] * 1e3:.1f} ms: "
              f"**{speed['speedup']:.0f}x** faster.", "", "![step time against tokens](tokens.png)", ""]
    path.write_text("\n".join(lines))


def plot(path: Path, meta: dict, rows: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for family in MODELS:
        pts = sorted((r["tokens"], r["step_s"]) for r in rows if r["model"] == family)
        ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], marker="o", label=family)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("ms per training step")
    ax.set_title(f"width {meta['width']}, depth {meta['depth']}, batch {meta['batch']}, {meta['device']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
