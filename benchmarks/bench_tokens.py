"""Time and memory per training step against the number of tokens for every backbone at equal
width/depth: DiT, DiS, DiffuSSM and the Mamba family (DiS with Vim's layout, MoE-Mamba, VMamba's SS2D,
the Block-State Transformer).

Every model runs on unpatchified latents (patch size 1), so tokens = input_size**2 (64 ... 4096);
one step = forward, MSE loss, backward, AdamW step, at batch size --batch. Memory is the step's peak
above what was allocated before it: on CUDA torch.cuda.max_memory_allocated, on CPU the bytes the C
heap holds (glibc's mallinfo2), sampled after every aten op of the step by a dispatch mode, less the
heap before the step (it includes what the libraries allocate besides tensors, e.g. BLAS and FFT
workspaces). Also times our
parallel selective scan against the sequential loop of selective_scan_ref (forward + backward, 1024
tokens).

    .venv/bin/python benchmarks/bench_tokens.py        # CPU (1 intra-op thread): RESULTS_tokens.md + tokens.png
    .venv/bin/python benchmarks/bench_tokens.py --device cuda   # GPU; DiS uses mamba-ssm's kernels if they import

On CPU the SSM backbones run our PyTorch scan / FFT convolution; their cost grows linearly in the
number of tokens while DiT's attention grows quadratically, so the curves cross at some length.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the sequential reference loop lives with the tests

from diffzoo.models import create_model  # noqa: E402
from diffzoo.models.mamba import cuda_selective_scan, kernels_built  # noqa: E402

MODELS = {  # name -> (registered variant, overrides); width and depth are set from the command line
    "DiT": ("DiT-S/2", dict(patch_size=1, num_heads=4)),
    "DiS": ("DiS-S/2", dict(patch_size=1, drop_path_rate=0.0)),
    "DiffuSSM": ("DiffuSSM-S", dict()),
    "DiS-Vim": ("DiS-S/2", dict(patch_size=1, drop_path_rate=0.0, token_position="middle", divide_out=True)),
    "MoE-Mamba": ("MoE-Mamba-S/2", dict(patch_size=1)),
    "VMamba": ("VMamba-S/2", dict(patch_size=1)),
    "BST": ("BST-S/2", dict(patch_size=1, num_heads=4, block_size=64)),
}


def build(family: str, size: int, width: int, depth: int, device: str):
    variant, extra = MODELS[family]
    return create_model(variant, input_size=size, in_channels=4, num_classes=10, hidden_size=width, depth=depth,
                        **extra).to(device)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_bytes() -> int:
    """Bytes the C heap holds now (glibc's mallinfo2: in-use arena chunks plus mmapped blocks)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


class _PeakHeap(TorchDispatchMode):
    """Samples the heap after every aten op (forward, backward, optimizer): the step's peak."""

    def __init__(self):
        super().__init__()
        self.peak = _heap_bytes()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, _heap_bytes())
        return out


def step_memory(family: str, size: int, args) -> float:
    """Peak bytes of one training step above what was held before it (module docstring)."""
    model = build(family, size, args.width, args.depth, args.device)
    time_step(model, args.batch, size, args.device, 0)  # warm-up: AdamW state, kernels, plans
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        time_step(model, args.batch, size, "cuda", 0)
        return float(torch.cuda.max_memory_allocated() - before)
    before = _heap_bytes()
    with _PeakHeap() as heap:
        time_step(model, args.batch, size, args.device, 0)
    return float(heap.peak - before)


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
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--max-tokens", type=str, nargs="*", default=[],
                        help="FAMILY=TOKENS: skip larger sizes for that family (too slow on this machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    limits = {k: int(v) for k, v in (item.split("=") for item in args.max_tokens)}

    rows = []
    for size in args.sizes:
        for family in args.models:
            if size * size > limits.get(family, 1 << 30):
                continue
            model = build(family, size, args.width, args.depth, args.device)
            seconds = time_step(model, args.batch, size, args.device, args.repeats)
            del model
            memory = step_memory(family, size, args)
            rows.append({"model": family, "tokens": size * size, "step_s": seconds, "mem_bytes": memory})
            print(f"{family:9s} tokens {size * size:5d}  {seconds * 1e3:9.1f} ms/step  {memory / 2**20:8.1f} MiB",
                  flush=True)
    speed = scan_speedup(args.device)
    print(f"scan: sequential {speed['sequential_s']:.3f} s, parallel {speed['parallel_s']:.4f} s, "
          f"speedup {speed['speedup']:.0f}x")

    scan_kernel = ("mamba-ssm CUDA" if args.device == "cuda" and cuda_selective_scan() else
                   "diffzoo fused C kernel" if args.device == "cpu" and kernels_built() else "diffzoo PyTorch")
    meta = {"device": args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}, "
            f"{args.threads} thread)", "torch": torch.__version__, "width": args.width, "depth": args.depth,
            "batch": args.batch, "selective_scan": scan_kernel}
    tag = "" if args.device == "cpu" else f"_{args.device}"
    meta["models"] = args.models
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / f"RESULTS_tokens{tag}.md", meta, rows, speed)
    plot(args.out / f"tokens{tag}.png", meta, rows)
    (args.out / f"RESULTS_tokens{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


def growth(table: dict, family: str, tokens: list[int], mean: bool = True) -> str:
    """Growth per 4x tokens: the geometric mean over the measured sizes (`mean`), and the last 4x step."""
    have = [t for t in tokens if (family, t) in table and table[(family, t)] > 0]
    if len(have) < 2:
        return "-"
    last = f"{table[(family, have[-1])] / table[(family, have[-2])]:.1f}x" if have[-1] == 4 * have[-2] else "-"
    if not mean:
        return last
    per4 = (table[(family, have[-1])] / table[(family, have[0])]) ** (math.log(4) / math.log(have[-1] / have[0]))
    return f"{per4:.1f}x, {last}"


def write_markdown(path: Path, meta: dict, rows: list, speed: dict) -> None:
    tokens = sorted({r["tokens"] for r in rows})
    time_of = {(r["model"], r["tokens"]): r["step_s"] for r in rows}
    mem_of = {(r["model"], r["tokens"]): r["mem_bytes"] for r in rows}
    head = "| model | " + " | ".join(f"{t} tokens" for t in tokens) + " | growth per 4x (mean, last 4x) |"
    rule = "|---|" + "---|" * (len(tokens) + 1)
    lines = [f"# Training-step time and memory against tokens ({meta['device']})", "",
             f"width {meta['width']}, depth {meta['depth']} (DiS: {meta['depth']} + 1 mid block), batch "
             f"{meta['batch']}, patch size 1, AdamW step included; selective scan: {meta['selective_scan']}; "
             f"torch {meta['torch']}. Generated by benchmarks/bench_tokens.py.", "", "Time per step:", "", head, rule]
    for family in meta["models"]:
        cells = [f"{time_of[(family, t)] * 1e3:.1f} ms" if (family, t) in time_of else "-" for t in tokens]
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {growth(time_of, family, tokens)} |")
    lines += ["", "Step memory (peak above what the step started with; module docstring):", "", head, rule]
    for family in meta["models"]:
        cells = [f"{mem_of[(family, t)] / 2**20:.1f} MiB" if (family, t) in mem_of else "-" for t in tokens]
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {growth(mem_of, family, tokens)} |")
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

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, scale, label in ((axes[0], "step_s", 1e3, "ms per training step"),
                                  (axes[1], "mem_bytes", 2.0**-20, "step memory (MiB)")):
        for family in meta["models"]:
            pts = sorted((r["tokens"], r[key]) for r in rows if r["model"] == family and r[key] > 0)
            ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], marker="o", label=family)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(f"width {meta['width']}, depth {meta['depth']}, batch {meta['batch']}, {meta['device']}",
                      fontsize=9)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
