"""FID from statistics: ours against torch-fidelity's (eigenvalues of the product) and ADM's sqrtm.

Statistics of 2048-d Inception-like features (ReLU of a rank-512 signal with a decaying spectrum
plus noise, np.cov as ADM), full rank (N images each) and rank-deficient (1000 images against N).
Ours and torch-fidelity's `fid_statistics_to_metric` run alternately in this process, --repeats
times each, one BLAS/LAPACK thread (set before numpy loads): the ratio is robust on a shared
machine even where the absolute seconds are not. ADM's scipy sqrtm runs once per case (the value
reference; also its time). The exact value of a rank-deficient case comes from the features.

    .venv/bin/python benchmarks/bench_fid.py            # prints a markdown table
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from diffzoo.evaluate import metrics  # noqa: E402


def features(n: int, d: int, rank: int, perturb: float, seed: int) -> np.ndarray:
    scale = (np.arange(1, rank + 1) ** -0.5)[:, None]
    w = np.random.default_rng(0).normal(size=(rank, d)) * scale
    rng = np.random.default_rng(seed)
    w = w + perturb * rng.normal(size=w.shape) * scale
    return np.maximum(rng.normal(size=(n, rank)) @ w + 0.3 * rng.normal(size=(n, d)), 0).astype(np.float32)


def adm_value(mu1, s1, mu2, s2) -> float:
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * metrics._trace_sqrtm_adm(s1, s2, 1e-6))


def exact_rank_deficient(x, mu1, mu2, s2) -> float:
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    nuclear = np.linalg.svd(xc @ np.linalg.cholesky(s2), compute_uv=False).sum() / np.sqrt(len(x) - 1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(np.cov(x, rowvar=False)) + np.trace(s2) - 2 * nuclear)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    def fidelity(mu1, s1, mu2, s2):
        return fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)[KEY_METRIC_FID]

    def stats(x):
        return x.mean(0).astype(np.float64), np.cov(x, rowvar=False)

    d = args.dim
    x_few = features(1000, d, d // 4, 0.05, seed=3)
    a, b, c = stats(features(args.images, d, d // 4, 0.0, 1)), stats(features(args.images, d, d // 4, 0.05, 2)), \
        stats(x_few)
    cases = {f"full rank ({args.images} vs {args.images} images)": (*a, *b, None),
             f"rank-deficient (1000 vs {args.images} images)": (*c, *a, exact_rank_deficient(x_few, c[0], a[0], a[1]))}
    print(f"{d}-d statistics, 1 BLAS thread, {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}; median of {args.repeats} alternating runs\n")
    print("| case | ours | torch-fidelity | ratio ours/tf | ADM sqrtm | ours vs ADM | tf vs ADM | ours vs exact "
          "| ADM vs exact | tf vs exact |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (mu1, s1, mu2, s2, exact) in cases.items():
        t = time.perf_counter()
        ref = adm_value(mu1, s1, mu2, s2)
        t_adm = time.perf_counter() - t
        times = {"ours": [], "tf": []}
        for _ in range(args.repeats):
            for key, fn in (("ours", metrics.frechet_distance), ("tf", fidelity)):
                t = time.perf_counter()
                value = fn(mu1, s1, mu2, s2)
                times[key].append(time.perf_counter() - t)
                if key == "ours":
                    ours = value
                else:
                    tf = value
        ratio = statistics.median(o / f for o, f in zip(times["ours"], times["tf"], strict=True))
        rel = lambda v, r: f"{abs(v - r) / abs(r):.1e}" if r is not None else "-"  # noqa: E731
        print(f"| {name} | {statistics.median(times['ours']):.2f} s | {statistics.median(times['tf']):.2f} s | "
              f"**{ratio:.2f}** | {t_adm:.1f} s | {rel(ours, ref)} | {rel(tf, ref)} | {rel(ours, exact)} | "
              f"{rel(ref, exact)} | {rel(tf, exact)} |", flush=True)


if __name__ == "__main__":
    main()
