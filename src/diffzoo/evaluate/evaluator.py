"""Evaluate a sample file against a reference: ADM's five numbers, KID, class accuracy, provenance."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import DiffzooError
from ..utils import atomic_path
from .bootstrap import sample_bootstrap
from .images import ImageSource, open_images
from .metrics import frechet_distance, kid, precision_recall
from .reference import Reference, default_cache_dir, load_reference, reference_features, stream_features

METRICS_VERSION = 1


def check_resolution(ref: Reference, source: ImageSource) -> None:
    if ref.resolution is not None and ref.resolution != source.resolution:
        raise DiffzooError(
            f"reference {ref.path} holds {ref.resolution[0]}x{ref.resolution[1]} images but the samples are "
            f"{source.height}x{source.width}: use the reference batch of the samples' resolution")


def check_compatible(ref: Reference, source: ImageSource, extractor) -> None:
    """One clear line for a reference of another resolution or another feature extractor."""
    check_resolution(ref, source)
    recorded = ref.extractor
    if recorded is None:
        if extractor.name != "inception":
            raise DiffzooError(f"reference {ref.path} is an ADM batch of Inception statistics; it cannot be used "
                               f"with the {extractor.name} feature extractor (compute one with reference-stats)")
        return
    if recorded.get("name") != extractor.name or recorded.get("weights_sha256") != extractor.weights_sha256:
        raise DiffzooError(
            f"reference {ref.path} was computed with feature extractor {recorded.get('name')} "
            f"(weights sha256 {str(recorded.get('weights_sha256'))[:12]}), evaluation uses {extractor.name} "
            f"({extractor.weights_sha256[:12]}): numbers from different extractors must not be mixed")


def default_distance_dtype(extractor_name: str) -> str:
    return "float16" if extractor_name == "inception" else "float32"


def evaluate(samples: str | Path | ImageSource, reference: str | Path | Reference, extractor, *,
             batch_size: int = 100, is_split: int = 5000, k: int = 3, distance_dtype: str | None = None,
             pr_block: int = 10000, kid_subsets: int = 100, kid_subset_size: int = 1000,
             cache_dir: str | Path | None = None, bootstrap: int = 0, bootstrap_seed: int = 0) -> dict:
    """All metrics of ``samples`` (ADM npz, shard dir or image folder) against ``reference``.

    ``distance_dtype`` None: float16 for Inception (ADM's choice, needed to match the papers),
    float32 for our classifier, whose features (squared norms of thousands) are too coarse in float16.
    ``bootstrap`` > 0 adds "bootstrap": each metric's standard error and interval over that many
    resamples of the samples (bootstrap.py).
    """
    t0 = time.perf_counter()
    distance_dtype = distance_dtype or default_distance_dtype(extractor.name)
    source = samples if isinstance(samples, ImageSource) else open_images(samples)
    ref = reference if isinstance(reference, Reference) else load_reference(reference)
    check_compatible(ref, source, extractor)
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    ref_pool = reference_features(ref, extractor, batch_size, cache_dir or None)
    t_ref = time.perf_counter()

    run = stream_features(source, extractor, batch_size, is_split=is_split, keep_logits=bootstrap > 0)
    t_feat = time.perf_counter()
    fid = frechet_distance(run.pool.mean(), run.pool.cov(), ref.mu, ref.sigma)
    sfid = None
    if run.spatial is not None and ref.mu_s is not None:
        sfid = frechet_distance(run.spatial.mean(), run.spatial.cov(), ref.mu_s, ref.sigma_s)
    t_fid = time.perf_counter()
    precision = recall = kid_out = None
    if ref_pool is not None:
        device = getattr(extractor, "device", "cpu")
        precision, recall = precision_recall(ref_pool, run.kept_pool, k=k, dtype=distance_dtype,
                                             row_block=pr_block, col_block=pr_block, device=device)
        if kid_subsets:
            kid_out = kid(ref_pool, run.kept_pool, subsets=kid_subsets, subset_size=kid_subset_size)
    t_pr = time.perf_counter()
    accuracy = None if run.class_correct is None else run.class_correct / run.num_images
    spread = None
    if bootstrap:
        spread = sample_bootstrap(run.kept_pool, ref.mu, ref.sigma, replicates=bootstrap, logits=run.logits,
                                  labels=source.labels if run.class_correct is not None else None,
                                  ref_pool=ref_pool, k=k, dtype=distance_dtype, is_split=is_split,
                                  seed=bootstrap_seed, device=str(getattr(extractor, "device", "cpu")))
    t_boot = time.perf_counter()
    return {
        "version": METRICS_VERSION,
        "feature_extractor": extractor.describe(),
        "inception_score": run.inception_score,
        "fid": fid,
        "sfid": sfid,
        "precision": precision,
        "recall": recall,
        "kid": kid_out,
        "class_accuracy": accuracy,
        "bootstrap": spread,
        "samples": {"path": str(source.path), "num_images": run.num_images,
                    "resolution": list(source.resolution), "conditional": source.labels is not None},
        "reference": {"path": ref.path, "format": "diffzoo" if ref.meta else "ADM",
                      "num_images": None if ref_pool is None else int(len(ref_pool)),
                      "stats_from": ref.meta.get("images", "file's mu/sigma")},
        "settings": {"k": k, "distance_dtype": distance_dtype, "is_split": is_split, "batch_size": batch_size,
                     "pr_block": pr_block, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size},
        "seconds": {"reference_features": round(t_ref - t0, 3), "sample_features": round(t_feat - t_ref, 3),
                    "fid_sfid": round(t_fid - t_feat, 3), "precision_recall_kid": round(t_pr - t_fid, 3),
                    "bootstrap": round(t_boot - t_pr, 3),
                    "images_per_second": round(run.num_images / max(t_feat - t_ref, 1e-9), 2)},
    }


def format_metrics(m: dict) -> str:
    """ADM's printout (five numbers), then what differs from it."""
    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    fe = m["feature_extractor"]
    lines = [f"Inception Score: {num(m['inception_score'], '.4f')}", f"FID: {num(m['fid'], '.6f')}",
             f"sFID: {num(m['sfid'], '.6f')}", f"Precision: {num(m['precision'], '.4f')}",
             f"Recall: {num(m['recall'], '.4f')}"]
    if m.get("kid"):
        k = m["kid"]
        lines.append(f"KID x 1e3: {k['mean'] * 1e3:.3f} +- {k['std'] * 1e3:.3f} (unbiased: near 0, and can dip below "
                     f"it, where the two sets match)")
    if m.get("class_accuracy") is not None:
        lines.append(f"Class accuracy: {m['class_accuracy']:.4f}")
    if m.get("bootstrap"):
        b = m["bootstrap"]
        lines.append(f"Bootstrap over the samples ({b['replicates']} resamples; se, 95% interval): " + "; ".join(
            f"{name} {v['se']:.4g} [{v['lo']:.4g}, {v['hi']:.4g}]" for name, v in b["metrics"].items()))
    lines.append(f"Feature extractor: {fe['name']} (weights sha256 {fe['weights_sha256'][:12]})")
    if fe["name"] == "inception" and not fe.get("weights_verified", True):
        lines.append("WARNING: the Inception weights' sha256 does not start with 6726825d (torch-fidelity's "
                     "published file): the numbers are not comparable with the papers'")
    return "\n".join(lines)


def write_metrics(m: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(m, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
    with atomic_path(out) as tmp:
        tmp.write_text(text + "\n")
    return out
