"""What this machine can run, in a few lines: `diffzoo doctor` prints them, train and sample log them
at their start (so a log says which kernels and precision produced a result)."""
from __future__ import annotations

import os
import platform
import sys

import torch

from .errors import DiffzooError
from .evaluate.features import resolve_inception_weights
from .hub import split
from .models.mamba import cuda_selective_scan
from .models.scan_kernel import available


def facts(params=None) -> dict[str, str]:
    """torch/CUDA versions, the GPUs, bf16, the selective-scan backend, and (given params) whether
    the VAE and the Inception weights are found without a network."""


    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__ + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)"),
        "gpus": f"{len(gpus)}: {', '.join(gpus)}" if gpus else "none visible",
        "bf16": ("yes" if torch.cuda.is_bf16_supported() else "no") if cuda else "CPU autocast only",
        "selective scan": _scan_fact(cuda, cuda_selective_scan() is not None),
        "cpu threads": str(torch.get_num_threads()),
    }
    if params is not None:
        out["vae"] = _vae_fact(params.latents.vae)
        out["inception weights"] = _inception_fact(params.evaluate.inception_weights)
    return out


def _scan_fact(cuda: bool, mamba_ssm: bool) -> str:
    gpu = "mamba-ssm CUDA kernels on GPU tensors" if cuda and mamba_ssm else (
        "mamba-ssm present, no GPU" if mamba_ssm else "mamba-ssm not importable")
    cpu = "diffzoo's fused C kernel" if available() else "diffzoo's PyTorch scan (no C kernel built)"
    return f"{gpu}; on CPU {cpu}"


def _vae_fact(vae: str) -> str:
    if vae == "identity":
        return "identity (pixel space: none needed)"
    if os.path.isdir(vae):
        return f"{vae} (local folder)"
    from huggingface_hub import try_to_load_from_cache


    repo, revision = split(vae)
    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    found = isinstance(cached, str)
    return f"{vae}: " + ("in the Hugging Face cache" if found else "not cached (downloads on first use)")


def _inception_fact(path: str | None) -> str:
    try:
        return str(resolve_inception_weights(path, allow_download=False))
    except DiffzooError:
        return "not found offline (downloads on first use; needed only with feature_extractor: inception)"


def log_facts(stream=None) -> None:
    """One line of the facts, for the start of a stage's log."""

    print("machine: " + "; ".join(f"{k} {v}" for k, v in facts().items()), file=stream or sys.stderr, flush=True)
