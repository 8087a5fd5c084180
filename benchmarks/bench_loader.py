"""Does the latent loader keep a GPU fed? Times the training loop's data path per step on one process:
the global batch's indices, the per-sample generators, `LatentDataset.batch` (memory-mapped float16
mean/std of both flips, a fresh posterior sample, the flip) and the label dropout.

    python benchmarks/bench_loader.py                      # 256px latents (4x32x32), per-GPU batch 32 and 256
    python benchmarks/bench_loader.py --images 100000 --batch 32 64

The shards are synthetic (random float16 in the latents stage's layout, written to a temp folder);
the loader's cost does not depend on the values. The loop runs this on the CPU while the GPU works
on the previous step (no host sync per step), so it keeps up when its images/s exceed the GPU's
training images/s per process (stock DiT-XL/2: about 26 img/s per A100; fast-DiT: about 107).
Prints one JSON line per batch size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffzoo.latents import LatentDataset
from diffzoo.training import drop_labels, global_batch_indices, step_generators
from diffzoo.utils import write_json


def make_shards(folder: Path, images: int, shape: tuple[int, ...], shard_size: int) -> None:
    """Random latents in the layout of `diffzoo latents` (flips on), 1000 classes."""
    rng = np.random.default_rng(0)
    shards = []
    for i, start in enumerate(range(0, images, shard_size)):
        n = min(shard_size, images - start)
        d = folder / f"shard-{i:05d}"
        d.mkdir(parents=True)
        for key in ("mean", "std", "mean_flip", "std_flip"):
            np.save(d / f"{key}.npy", rng.standard_normal((n, *shape), dtype=np.float32).astype(np.float16))
        np.save(d / "labels.npy", rng.integers(0, 1000, n))
        shards.append(d.name)
    write_json(folder / "index.json", {"vae": "stabilityai/sd-vae-ft-ema", "data_scale": 0.18215, "flips": True,
                                       "shape": list(shape), "num_images": images, "resolution": shape[-1] * 8,
                                       "classes": [f"n{i:08d}" for i in range(1000)], "shards": shards})


def bench(data: LatentDataset, batch: int, steps: int) -> float:
    def step(k: int):
        idx = global_batch_indices(k, batch, len(data), 0)
        gens = step_generators(0, k, range(batch))
        x, y = data.batch(idx, gens)
        return x, drop_labels(y, gens, 0.1, 1000)

    step(0)
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        step(k)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=32, help="latent side (256px images: 32)")
    p.add_argument("--batch", type=int, nargs="+", default=[32, 256], help="per-process batch sizes")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_shards(Path(tmp), args.images, (4, args.size, args.size), shard_size=10000)
        data = LatentDataset(Path(tmp))
        for batch in args.batch:
            ips = bench(data, batch, args.steps)
            print(json.dumps({"batch": batch, "latent_shape": [4, args.size, args.size], "images": args.images,
                              "images_per_s": round(ips, 1), "ms_per_step": round(1000 * batch / ips, 2),
                              "threads": torch.get_num_threads(), "load_1min": round(os.getloadavg()[0], 2),
                              "machine": platform.machine()}), flush=True)


if __name__ == "__main__":
    main()
