"""Evaluation stage: throughput and peak memory (RSS).

Each scenario runs in its own subprocess so its peak RSS (ru_maxrss) is its own:

  e2e        `diffzoo evaluate` of N samples (default 50K, ADM npz) against a 10K-image reference with
             the classifier extractor: streaming, Gaussian stats, IS, P/R (50K x 10K), KID.
  inception  Inception (inception-v3-compat + mixed_6/conv hook) images/s at 256x256 input, and the
             FID (2048-d) and sFID (2023-d) matrix square roots. Weights: the real file when
             --inception-weights is given, else RANDOM values (speed does not depend on them).
  pr         Precision/Recall on 2048-d features, float16 and float32 distances, blocks of 10K.
  adm50k     ADM-size files (50K samples + 10K reference, 256x256) through evaluate() with a stand-in
             extractor of Inception's output sizes: peak RSS of the whole evaluation at real sizes.

  .venv/bin/python benchmarks/bench_evaluate.py [--scenario all|e2e|inception|pr] [--device cuda]
Prints one JSON line per scenario.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_mb() -> float:
    """Peak resident set size (VmHWM; resettable with reset_peak_rss), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu() -> float:
    return time.process_time()


def _jittered_digits(n: int, seed: int, res: int = 16):
    """n images made from sklearn's digits: random shifts of up to 1 px and pixel noise."""
    from sklearn.datasets import load_digits

    d = load_digits()
    base = np.kron((d.images / 16 * 255), np.ones((res // 8, res // 8)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), n)
    out = np.empty((n, res, res, 3), np.uint8)
    for start in range(0, n, 5000):
        sl = slice(start, min(n, start + 5000))
        imgs = base[idx[sl]]
        imgs = np.roll(imgs, rng.integers(-1, 2), axis=1)
        imgs = np.clip(imgs + rng.normal(0, 8, imgs.shape), 0, 255).astype(np.uint8)
        out[sl] = imgs[..., None]
    return out, d.target[idx].astype(np.int64)


def scenario_e2e(args) -> dict:
    from diffzoo.cli import main
    from diffzoo.evaluate.classifier import train_classifier
    from diffzoo.evaluate.features import load_extractor
    from diffzoo.evaluate.images import ArrayImages
    from diffzoo.evaluate.reference import compute_reference

    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    real, labels = _jittered_digits(2000, 0)
    train_classifier(ArrayImages(real, labels), tmp / "cls.safetensors", epochs=6)
    ref_imgs, ref_labels = _jittered_digits(10_000, 1)
    ext = load_extractor("classifier", tmp / "cls.safetensors", args.device)
    compute_reference(ArrayImages(ref_imgs, ref_labels), ext, tmp / "ref.npz", num_ref_images=10_000)
    samples, slabels = _jittered_digits(args.num_samples, 2)
    np.savez(tmp / "samples.npz", arr_0=samples, labels=slabels)
    del samples, ref_imgs, real
    rss_before = peak_rss_mb()
    t0, c0 = time.perf_counter(), _cpu()
    rc = main(["evaluate", str(tmp / "samples.npz"), "--ref", str(tmp / "ref.npz"), "--classifier-weights",
               str(tmp / "cls.safetensors"), "--out", str(tmp / "metrics.json"), "--cache-dir", "",
               "--batch-size", "500", "--device", args.device])
    m = json.loads((tmp / "metrics.json").read_text())
    return {"scenario": "e2e", "rc": rc, "num_samples": args.num_samples, "ref_images": 10_000,
            "resolution": 16, "feature_dim": 128, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(_cpu() - c0, 2), "stage_seconds": m["seconds"],
            "peak_rss_mb_setup": round(rss_before, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "samples_as_float32_mb": round(args.num_samples * 16 * 16 * 3 * 4 / 2**20, 1),
            "metrics": {k: m[k] for k in ("fid", "inception_score", "precision", "recall", "class_accuracy")}}


def _random_inception(tmp: Path) -> Path:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInit(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    torch.save({}, tmp / "empty.pth")
    net = _RandomInit("probe", ["2048"], feature_extractor_weights_path=str(tmp / "empty.pth"))
    torch.save(net.state_dict(), tmp / "random-inception.pth")
    return tmp / "random-inception.pth"


def scenario_inception(args) -> dict:
    from diffzoo.evaluate.features import InceptionExtractor
    from diffzoo.evaluate.metrics import GaussianStats, frechet_distance

    tmp = Path(tempfile.mkdtemp(prefix="bench-inc-"))
    weights = args.inception_weights or _random_inception(tmp)
    ext = InceptionExtractor(weights, device=args.device, allow_download=False)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (args.inception_batch, 256, 256, 3), dtype=np.uint8)
    ext(batch[:2])  # warm-up
    n_batches = args.inception_batches
    stats, sstats = GaussianStats(ext.device), GaussianStats(ext.device)
    if ext.device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), _cpu()
    for _ in range(n_batches):
        out = ext(batch)
        stats.update(out["pool"])
        sstats.update(out["spatial"])
    if ext.device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    n = n_batches * len(batch)
    # Frechet distance timing on full-size random covariances (the sqrtm cost does not depend on data)
    feats = rng.normal(size=(4096, 2048)).astype(np.float32)
    s1, s2 = np.cov(feats[:2048], rowvar=False), np.cov(feats[2048:], rowvar=False)
    t1 = time.perf_counter()
    frechet_distance(feats[:2048].mean(0), s1, feats[2048:].mean(0), s2)
    fid_s = time.perf_counter() - t1
    return {"scenario": "inception", "device": str(ext.device), "threads": torch.get_num_threads(),
            "weights": "real" if args.inception_weights else "RANDOM (speed only)", "input": "256x256 uint8",
            "batch": len(batch), "images": n, "images_per_s_wall": round(n / wall, 2),
            "images_per_s_per_cpu_s": round(n / cpu, 2), "fid_2048_sqrtm_s": round(fid_s, 2),
            "projected_50k_feature_hours_wall": round(50_000 / (n / wall) / 3600, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def scenario_pr(args) -> dict:
    from diffzoo.evaluate.metrics import precision_recall

    rng = np.random.default_rng(0)
    n_ref, n_s, d = args.pr_ref, args.pr_samples, 2048
    # pool_3-like: non-negative, low intrinsic dimension, squared norms of a few hundred (fp16 range)
    proj = rng.normal(0, 0.15, (32, d)).astype(np.float32)
    ref = np.maximum(rng.normal(0, 1, (n_ref, 32)).astype(np.float32) @ proj, 0)
    smp = np.maximum((rng.normal(0, 1, (n_s, 32)) * 0.9 + 0.1).astype(np.float32) @ proj, 0)
    out = {"scenario": "pr", "device": args.device, "threads": torch.get_num_threads(),
           "n_ref": n_ref, "n_samples": n_s, "dim": d, "block": args.pr_block}
    for dtype in ("float16", "float32"):
        t0, c0 = time.perf_counter(), _cpu()
        p, r = precision_recall(ref, smp, dtype=dtype, row_block=args.pr_block, col_block=args.pr_block,
                                device=args.device)
        out[dtype] = {"precision": p, "recall": r, "wall_s": round(time.perf_counter() - t0, 2),
                      "cpu_s": round(_cpu() - c0, 2)}
    # distance evaluations: radii (n_ref^2 + n_s^2) + coverage (n_ref * n_s)
    units = n_ref**2 + n_s**2 + n_ref * n_s
    out["projected_50k_x_10k_factor"] = round((10_000**2 + 50_000**2 + 50_000 * 10_000) / units, 2)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


class StandInInception:
    """Inception's output sizes (pool 2048, spatial 2023, logits 1008) at a tiny cost: fixed random
    projections of the 8x8 average-pooled image. For memory and pipeline timing only, not metrics."""

    name = "inception"
    weights_sha256 = "stand-in-" + "0" * 55
    input_resolution = None

    def __init__(self, device: str):
        g = torch.Generator().manual_seed(0)
        self.device = torch.device(device)
        self.w = {k: (torch.randn(192, n, generator=g) / 14).to(self.device)
                  for k, n in (("pool", 2048), ("spatial", 2023), ("logits", 1008))}

    def describe(self) -> dict:
        return {"name": "inception-stand-in (benchmark only)", "weights_sha256": self.weights_sha256}

    def __call__(self, images: np.ndarray) -> dict:
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.adaptive_avg_pool2d(x, 8).reshape(len(images), -1)
        return {k: torch.relu(x @ w) if k != "logits" else x @ w * 8 for k, w in self.w.items()}


def write_npz_streaming(path: Path, arrays: dict, images_n: int, res: int, seed: int, chunk: int = 1000) -> None:
    """An ADM npz with arr_0 (uint8, images_n x res x res x 3) written chunk by chunk, plus small arrays."""
    import zipfile

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (images_n, res, res, 3)})
            for start in range(0, images_n, chunk):
                n = min(chunk, images_n - start)
                low = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)   # blocky random images
                f.write(np.repeat(np.repeat(low, res // 16, 1), res // 16, 2).tobytes())
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(value))


def scenario_adm50k(args) -> dict:
    """ADM-size files (50K samples and a 10K reference at 256x256, 9.8 GB + 2 GB) through evaluate()
    with a stand-in extractor of Inception's output sizes: peak RSS of streaming + statistics + P/R."""
    from diffzoo.evaluate.evaluator import evaluate
    from diffzoo.evaluate.images import NpzImages
    from diffzoo.evaluate.reference import stream_features

    tmp = Path(tempfile.mkdtemp(prefix="bench-adm-", dir=args.tmp_dir))
    res, n = 256, args.num_samples
    ext = StandInInception(args.device)
    try:
        write_npz_streaming(tmp / "ref_images.npz", {}, args.ref_images, res, seed=1)
        run = stream_features(NpzImages(tmp / "ref_images.npz"), ext, 100)
        stats = {"mu": run.pool.mean(), "sigma": run.pool.cov(), "mu_s": run.spatial.mean(),
                 "sigma_s": run.spatial.cov()}
        write_npz_streaming(tmp / "ref.npz", stats, args.ref_images, res, seed=1)
        (tmp / "ref_images.npz").unlink()
        write_npz_streaming(tmp / "samples.npz", {}, n, res, seed=2)
        size_gb = (tmp / "samples.npz").stat().st_size / 1e9
        rss_setup = peak_rss_mb()
        reset = reset_peak_rss()
        rss_start = peak_rss_mb()
        t0, c0 = time.perf_counter(), _cpu()
        m = evaluate(tmp / "samples.npz", tmp / "ref.npz", ext, batch_size=100, kid_subsets=100, cache_dir="")
        return {"scenario": "adm50k", "device": str(ext.device), "threads": torch.get_num_threads(),
                "num_samples": n, "ref_images": args.ref_images, "resolution": res,
                "samples_file_gb": round(size_gb, 2),
                "samples_as_uint8_gb": round(n * res * res * 3 / 1e9, 2),
                "samples_as_float32_gb": round(n * res * res * 3 * 4 / 1e9, 2),
                "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu() - c0, 1),
                "stage_seconds": m["seconds"], "peak_rss_mb_of_setup": round(rss_setup, 1),
                "peak_reset": reset, "rss_mb_at_evaluate_start": round(rss_start, 1),
                "peak_rss_mb_during_evaluate": round(peak_rss_mb(), 1),
                "metrics_of_random_images": {k: m[k] for k in
                                             ("fid", "sfid", "inception_score", "precision", "recall")}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SCENARIOS = {"e2e": scenario_e2e, "inception": scenario_inception, "pr": scenario_pr, "adm50k": scenario_adm50k}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--inception-weights", default=None)
    p.add_argument("--inception-batch", type=int, default=16)
    p.add_argument("--inception-batches", type=int, default=2)
    p.add_argument("--pr-ref", type=int, default=5000)
    p.add_argument("--pr-samples", type=int, default=5000)
    p.add_argument("--pr-block", type=int, default=10000)
    p.add_argument("--ref-images", type=int, default=10_000, help="adm50k reference batch size")
    p.add_argument("--tmp-dir", default=None, help="where adm50k writes its 12 GB of npz files")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args()
    if args.scenario == "all" or not args.in_process:
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        for name in names:
            full = sys.argv[1:]
            argv = [a for i, a in enumerate(full)
                    if not a.startswith("--scenario") and not (i > 0 and full[i - 1] == "--scenario")]
            subprocess.run([sys.executable, __file__, "--scenario", name, "--in-process", *argv], check=False)
        return 0
    torch.set_num_threads(args.threads)
    import diffzoo.evaluate.evaluator  # noqa: F401  (imports counted in the baseline)
    import torch_fidelity  # noqa: F401

    baseline = round(peak_rss_mb(), 1)
    print(json.dumps({**SCENARIOS[args.scenario](args), "rss_after_imports_mb": baseline}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
