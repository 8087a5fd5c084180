"""N samples of a trained model, in resumable parts, assembled into one ADM-format npz.

Sample i's label and all of its noise come from a generator seeded by (seed, i), so the samples do
not depend on the batch size, the number of GPUs or on resumption. Work is split in parts of
`batch_size` samples, each written atomically to `<parts_dir>/part-NNNNN.npz`; a rerun skips
finished parts, and rank r of W takes parts r, r + W, ... `assemble` writes the final npz (arr_0
uint8 NHWC, labels) atomically.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .diffusion.gaussian_diffusion import randint, randn
from .latents import to_adm_uint8
from .params import SampleConfig
from .runtime import Process
from .training import mix_seed
from .utils import Progress, atomic_path, clean_stale_temps, describe, kill_point, reading, set_aside


def sample_generators(seed: int, indices, device="cpu") -> list[torch.Generator]:
    """One generator per sample, by its index: its noise and label depend on (seed, index) only, not on
    the batch or the process that draws it."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, int(i))) for i in indices]


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample `index` under `sample.seed`: the index itself for seed 0 (as every
    result made so far), else numpy's SeedSequence hash of (seed, index). Not seed * 2^32 + index, as
    it once was: torch's CPU generator keeps only the low 32 bits of a seed, so every sample.seed drew
    seed 0's samples (found when six seeds of one model gave one FID to the last digit)."""
    return index if seed == 0 else mix_seed(seed, index)


def part_path(parts_dir: Path, k: int) -> Path:
    return parts_dir / f"part-{k:05d}.npz"


def sample_parts(model_fn, objective, codec, shape: list[int], num_classes: int, cfg: SampleConfig, parts_dir: Path,
                 proc: Process, name: str = "sample") -> int:
    """Draw this rank's missing parts of cfg.num_samples samples into `parts_dir`; returns the number
    of parts of the whole run."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    n, bs = cfg.num_samples, cfg.batch_size
    n_parts = math.ceil(n / bs)
    if proc.is_main:
        clean_stale_temps(parts_dir)
    todo = [k for k in range(proc.rank, n_parts, proc.world) if not _finished(parts_dir, k, bs if k < n_parts - 1
                                                                              else n - k * bs)]
    left = sum(min(bs, n - k * bs) for k in todo) * proc.world  # rank 0 speaks for all ranks
    progress = Progress(n, name, "samples", initial=max(0, n - left), enabled=proc.is_main)
    for k in todo:
        idx = range(k * bs, min(n, (k + 1) * bs))
        gens = sample_generators(cfg.seed, idx)
        labels = randint(num_classes, (len(gens),), gens)
        noise = randn((len(gens), *shape), gens)
        with torch.no_grad():
            z = objective.sample(model_fn, noise.to(proc.device), {"y": labels.to(proc.device)}, generator=gens)
            images = to_adm_uint8(codec.decode(z))
        with atomic_path(part_path(parts_dir, k)) as tmp, open(tmp, "wb") as f:
            np.savez(f, arr_0=images, labels=labels.numpy())
        kill_point("sample-part")
        progress.update(len(gens) * proc.world)
    progress.close()
    return n_parts


def _finished(parts_dir: Path, k: int, count: int) -> bool:
    """Whether part k is there and whole; a part that cannot be read is moved aside (to be drawn again)."""
    path = part_path(parts_dir, k)
    if not path.exists():
        return False
    try:
        with np.load(path) as part:
            if len(part["arr_0"]) == len(part["labels"]) == count:
                return True
            why = f"holds {len(part['arr_0'])} samples, not {count}"
    except Exception as err:  # truncated, not a zip, missing member: all mean "draw it again"
        why = f"unreadable ({describe(err)})"
    set_aside(path, parts_dir.parent / "aside", f"corrupt sample part: {why}; it is drawn again")
    return False


def assemble(parts_dir: Path, n_parts: int, out: Path) -> np.ndarray:
    """The parts, in order, as one npz (arr_0, labels); returns the images."""
    parts = []
    for k in range(n_parts):
        with reading(part_path(parts_dir, k), "sample part"):
            parts.append(np.load(part_path(parts_dir, k)))
    arr = np.concatenate([q["arr_0"] for q in parts])
    labels = np.concatenate([q["labels"] for q in parts])
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, arr_0=arr, labels=labels)
    return arr
