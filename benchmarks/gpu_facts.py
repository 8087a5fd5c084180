"""Facts about the machine the GPU figures come from, as one JSON object (a `doctor` for the suite).

Versions (torch, CUDA, cuDNN, NCCL, triton, diffusers, torch-fidelity, mamba-ssm), the GPU (name,
memory, compute capability, bf16), whether the flash SDPA kernel runs a DiT-XL-sized attention in
bf16 (forced, no fallback), whether torch.compile compiles and runs a small function on the GPU,
whether diffzoo's fused CPU scan kernel builds here, and CPU / memory / disk. Every probe records its error
instead of stopping the others.

    python benchmarks/gpu_facts.py > facts.json
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import time

import torch


def probe(fn):
    try:
        return fn()
    except Exception as err:  # a fact, not a failure of the script
        return {"error": f"{type(err).__name__}: {err}"[:500]}


def version(module: str):
    def get():
        return getattr(importlib.import_module(module), "__version__", "imported")
    return probe(get)


def flash_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(8, 16, 256, 72, device="cuda", dtype=torch.bfloat16)  # DiT-XL/2: 16 heads of 72, 256 tokens
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    return {"ran": bool(torch.isfinite(out).all())}


def compile_smoke():
    start = time.perf_counter()
    fn = torch.compile(lambda a: torch.nn.functional.gelu(a @ a.T) * 2)
    fn(torch.randn(256, 256, device="cuda"))
    torch.cuda.synchronize()
    return {"ran": True, "seconds": round(time.perf_counter() - start, 1)}


def gpu():
    if not torch.cuda.is_available():
        return {"available": False}
    p = torch.cuda.get_device_properties(0)
    return {"available": True, "count": torch.cuda.device_count(), "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count, "bf16": torch.cuda.is_bf16_supported(),
            "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
            "flash_attention_bf16": probe(flash_attention), "torch_compile": probe(compile_smoke)}


def cpu_kernel():
    from diffzoo.models import scan_kernel

    return {"built": scan_kernel.available(), "compiler": shutil.which(os.environ.get("CC", "cc"))}


def main() -> None:
    disk = shutil.disk_usage(".")
    facts = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "nccl": probe(lambda: ".".join(map(str, torch.cuda.nccl.version()))),
        "triton": version("triton"), "diffusers": version("diffusers"), "torch_fidelity": version("torch_fidelity"),
        "mamba_ssm": version("mamba_ssm"), "causal_conv1d": version("causal_conv1d"),
        "mamba_ssm_selective_scan": probe(lambda: __import__("diffzoo.models.mamba", fromlist=["x"])
                                          .cuda_selective_scan() is not None),
        "gpu": gpu(), "diffzoo_cpu_scan_kernel": probe(cpu_kernel),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "memory_gib": probe(lambda: round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)),
        "disk_free_gib": round(disk.free / 2**30, 1),
        "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NCCL_P2P_DISABLE", "TORCH_HOME", "HF_HOME")},
    }
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
