"""How much each metric moves with the draw of the generated images: a bootstrap over the samples.

`sample_bootstrap` resamples the n generated images with replacement B times (the reference is held
fixed: it is the data's, not a draw of ours) and recomputes each metric on every replicate:

- FID: the replicate's mean and covariance are the weighted ones (weight = how often an image was
  drawn), against the reference's; Frechet distance as metrics.py computes it.
- Precision: the share of drawn samples inside the reference manifold (each sample's indicator does
  not depend on the others, so it is an exact resample).
- Recall: the share of reference images inside the manifold of the drawn samples, each sample with
  the radius it has in the full set (a duplicate would otherwise be its own nearest neighbour and
  shrink its radius to zero). Only where the reference x samples coverage matrix fits in memory.
- IS and class accuracy: recomputed from the drawn images' logits.

Each metric gets the replicates' standard deviation (the standard error of the metric's sampling
noise) and the 2.5% and 97.5% percentiles. The bootstrap FID sits above the full set's (duplicates
shrink the effective sample, and FID is biased upward in the sample size), so the interval is read
for its width: report/stats.py combines the standard error with the seeds' spread.
"""
from __future__ import annotations

import numpy as np
import torch

from .metrics import (_blocks, _exact_center, frechet_distance, inception_score, manifold_coverage, manifold_radii,
                      squared_distances, strict_float32)

LEVEL = 0.95
MAX_COVERAGE_CELLS = 200_000_000  # reference x samples booleans for the recall bootstrap (200 MB)


def summary(values, level: float = LEVEL) -> dict:
    """Standard deviation and percentile interval of bootstrap replicates."""
    v = np.asarray(values, np.float64)
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return {"se": float(v.std(ddof=1)), "lo": float(lo), "hi": float(hi)}


def weighted_stats(features: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of the multiset that holds row i counts[i] times (float64)."""
    x = np.asarray(features, np.float64)
    n = counts.sum()
    mu = counts @ x / n
    xc = x - mu
    return mu, (xc * counts[:, None]).T @ xc / (n - 1)


def _coverage_matrix(ref: np.ndarray, samples: np.ndarray, sample_radii: np.ndarray, dtype: str,
                     center, device) -> np.ndarray:
    """(n_ref, n_samples) booleans: reference point j inside sample i's ball."""
    fr, fs = torch.as_tensor(ref), torch.as_tensor(samples)
    rs = torch.as_tensor(np.asarray(sample_radii, np.float32)).to(device)
    out = np.zeros((len(ref), len(samples)), bool)
    for r0, r1 in _blocks(len(ref), 4096):
        rows = fr[r0:r1].to(device)
        for c0, c1 in _blocks(len(samples), 4096):
            d = squared_distances(rows, fs[c0:c1].to(device), dtype, center)
            out[r0:r1, c0:c1] = (d <= rs[None, c0:c1]).cpu().numpy()
    return out


def sample_bootstrap(pool: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, *, replicates: int,
                     logits: np.ndarray | None = None, labels: np.ndarray | None = None,
                     ref_pool: np.ndarray | None = None, k: int = 3, dtype: str = "float32",
                     is_split: int = 5000, seed: int = 0, device: str = "cpu") -> dict:
    """Bootstrap of FID (and of precision, recall, IS and class accuracy where their inputs are given)
    over the n samples' pool features `pool` (module docstring). Returns {"replicates", "seed",
    "level", "metrics": {name: {"se", "lo", "hi"}}, "skipped": {name: why}}."""
    n = len(pool)
    rng = np.random.default_rng(seed)
    draws = [np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64) for _ in range(replicates)]
    values: dict[str, list[float]] = {"fid": []}
    skipped = {}
    for counts in draws:
        mu, sigma = weighted_stats(pool, counts)
        values["fid"].append(frechet_distance(mu, sigma, ref_mu, ref_sigma))
    if ref_pool is not None:
        center = torch.from_numpy(_exact_center(ref_pool)).to(device) if dtype == "float32" else None
        opts = dict(dtype=dtype, device=device, center=center)
        with strict_float32():
            ref_radii = manifold_radii(ref_pool, k, **opts)
            sample_radii = manifold_radii(pool, k, **opts)
            _, sample_in = manifold_coverage(ref_pool, ref_radii, pool, sample_radii, **opts)
            covered = None
            if len(ref_pool) * n <= MAX_COVERAGE_CELLS:
                covered = _coverage_matrix(ref_pool, pool, sample_radii, dtype, center, device)
            else:
                skipped["recall"] = f"{len(ref_pool)} x {n} coverage matrix above {MAX_COVERAGE_CELLS} cells"
        values["precision"] = [float(counts @ sample_in / n) for counts in draws]
        if covered is not None:
            values["recall"] = [float(covered[:, counts > 0].any(1).mean()) for counts in draws]
    if logits is not None:
        picks = [np.repeat(np.arange(n), counts.astype(np.int64)) for counts in draws]
        values["inception_score"] = [inception_score(logits[p], is_split) for p in picks]
        if labels is not None:
            correct = (logits.argmax(1) == labels).astype(np.float64)
            values["class_accuracy"] = [float(counts @ correct / n) for counts in draws]
    return {"replicates": replicates, "seed": seed, "level": LEVEL,
            "metrics": {name: summary(v) for name, v in values.items()}, "skipped": skipped}
