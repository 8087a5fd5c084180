"""Reference statistics: ADM reference batches used as they are, or computed from a data set's images.

An ADM reference batch (``VIRTUAL_imagenet256_labeled.npz``) holds ``mu, sigma`` (pool_3 of the
whole training set), ``mu_s, sigma_s`` (mixed_6/conv) and ``arr_0`` (10K images for Precision/Recall).
``compute_reference`` writes the same keys from any image source and extractor, plus
``ref_pool`` (the pool features of arr_0, so evaluation need not recompute them),
``feature_extractor`` (JSON of the extractor's description) and ``labels`` of arr_0 where known.
Results are cached by content: sha256 of the images, the extractor's weights and the settings.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DiffzooError
from ..utils import Progress, atomic_path, cache_dir, reading
from .classifier import heldout_mask, heldout_split
from .images import ArrayImages, ImageSource, NpzImages, npz_member_header, open_images, sha256_file
from .metrics import GaussianStats, InceptionScore

REF_FORMAT = 1


def default_cache_dir() -> Path:
    return cache_dir("evaluate")


def check_extractor_resolution(extractor, source: ImageSource) -> None:
    want = getattr(extractor, "input_resolution", None)
    if want is not None and tuple(want) != source.resolution:
        raise DiffzooError(f"{source.path}: {source.height}x{source.width} images, but the {extractor.name} "
                           f"feature extractor was trained on {want[0]}x{want[1]} images")


@dataclass
class FeaturePass:
    """What one streaming pass over a source yields."""

    pool: GaussianStats
    spatial: GaussianStats | None
    kept_pool: np.ndarray          # pool features of the kept rows, float32
    kept_images: np.ndarray | None
    inception_score: float | None
    class_correct: int | None
    num_images: int
    logits: np.ndarray | None = None   # every image's logits, in order (keep_logits=True), float32


def stream_features(source: ImageSource, extractor, batch_size: int = 100, keep_rows: np.ndarray | None = None,
                    keep_images: bool = False, is_split: int | None = None, keep_logits: bool = False) -> FeaturePass:
    """Run ``extractor`` over ``source`` batch by batch: pool / spatial Gaussian statistics, the pool
    features (and optionally images) of ``keep_rows`` (sorted; None = all), the IS, and the
    class accuracy against ``source.labels`` when the extractor is our classifier; with ``keep_logits``
    also every image's logits (for a bootstrap over the images)."""
    check_extractor_resolution(extractor, source)
    n = source.num_images
    keep = np.arange(n) if keep_rows is None else np.asarray(keep_rows, np.int64)
    stats_device = getattr(extractor, "device", "cpu")
    pool, spatial = GaussianStats(stats_device), None
    kept_pool, kept_images = None, None
    if keep_images:
        kept_images = np.empty((len(keep), source.height, source.width, 3), np.uint8)
    score = InceptionScore(is_split) if is_split else None
    classify = extractor.name == "classifier" and source.labels is not None
    correct, start, filled = (0 if classify else None), 0, 0
    logits = [] if keep_logits else None
    progress = Progress(n, f"features of {Path(str(source.path)).name}", "images")
    for images in source.batches(batch_size):
        feats = extractor(images)
        progress.update(len(images))
        stop = start + len(images)
        pool.update(feats["pool"])
        if "spatial" in feats:
            spatial = spatial or GaussianStats(stats_device)
            spatial.update(feats["spatial"])
        if score is not None:
            score.update(feats["logits"])
        if logits is not None:
            logits.append(feats["logits"].float().cpu().numpy())
        if classify:
            pred = feats["logits"].argmax(1).cpu().numpy()
            labels = source.labels[start:stop]
            if labels.min() < 0 or labels.max() >= feats["logits"].shape[1]:
                raise DiffzooError(f"{source.path}: labels outside the classifier's {feats['logits'].shape[1]} classes")
            correct += int((pred == labels).sum())
        lo, hi = np.searchsorted(keep, [start, stop])
        if hi > lo:
            rows = torch.as_tensor(keep[lo:hi] - start)
            block = feats["pool"][rows.to(feats["pool"].device)].float().cpu().numpy()
            if kept_pool is None:
                kept_pool = np.empty((len(keep), block.shape[1]), np.float32)
            kept_pool[filled:filled + hi - lo] = block
            if keep_images:
                kept_images[filled:filled + hi - lo] = images[keep[lo:hi] - start]
            filled += hi - lo
        start = stop
    progress.close()
    if start != n:
        raise DiffzooError(f"{source.path}: expected {n} images, read {start}")
    return FeaturePass(pool, spatial, kept_pool, kept_images, score.compute() if score else None, correct, n,
                       None if logits is None else np.concatenate(logits))


def reference_subset(num_images: int, num_ref: int, seed: int) -> np.ndarray:
    """Sorted indices of the arr_0 subset: all images, or a seeded random choice of ``num_ref``."""
    if num_ref >= num_images:
        return np.arange(num_images)
    return np.sort(np.random.default_rng(seed).choice(num_images, num_ref, replace=False))


def compute_reference(images: str | Path | ImageSource, extractor, out: str | Path, *, num_ref_images: int = 10000,
                      seed: int = 0, batch_size: int = 100, cache_dir: str | Path | None = None) -> dict:
    """Write an ADM-format reference npz for ``images``; returns its metadata (also stored inside)."""
    source = images if isinstance(images, ImageSource) else open_images(images)
    settings = {"format": REF_FORMAT, "num_ref_images": num_ref_images, "seed": seed}
    digest = source.digest()
    key = hashlib.sha256(json.dumps({"images": digest, "extractor": extractor.name,
                                     "weights": extractor.weights_sha256, **settings}).encode()).hexdigest()
    out = Path(out)
    cached = Path(cache_dir) / f"ref-{key[:32]}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, out)
        return {**load_reference(out).meta, "cache": "hit"}
    keep = reference_subset(source.num_images, num_ref_images, seed)
    run = stream_features(source, extractor, batch_size, keep_rows=keep, keep_images=True)
    meta = {"feature_extractor": extractor.describe(), "images": source.path, "images_sha256": digest,
            "num_images": run.num_images, "num_ref_images": len(keep), "resolution": list(source.resolution),
            "key": key, **settings}
    arrays = {"mu": run.pool.mean(), "sigma": run.pool.cov(), "arr_0": run.kept_images, "ref_pool": run.kept_pool,
              "meta": np.array(json.dumps(meta))}
    if run.spatial is not None:
        arrays.update(mu_s=run.spatial.mean(), sigma_s=run.spatial.cov())
    if source.labels is not None:
        arrays["labels"] = source.labels[keep]
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, cached)
    return {**meta, "cache": "miss" if cached else "off"}


@dataclass
class Reference:
    path: str
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None
    sigma_s: np.ndarray | None
    images: NpzImages | None
    pool: np.ndarray | None
    meta: dict

    @property
    def extractor(self) -> dict | None:
        """The recorded extractor; None for ADM's own batches (Inception statistics)."""
        return self.meta.get("feature_extractor")

    @property
    def resolution(self) -> tuple[int, int] | None:
        if self.images is not None:
            return self.images.resolution
        res = self.meta.get("resolution")
        return tuple(res) if res else None


def load_reference(path: str | Path) -> Reference:
    path = Path(path)
    if not path.is_file():
        raise DiffzooError(f"reference {path}: no such file")
    with reading(path, "reference batch (.npz)"):
        z = np.load(path)
        z.files  # noqa: B018  (a truncated zip fails here, not at the first array)
    with z, reading(path, "reference batch (.npz)"):
        missing = [k for k in ("mu", "sigma") if k not in z.files]
        if missing:
            raise DiffzooError(f"reference {path}: no {', '.join(missing)} (an ADM reference batch holds "
                               f"mu, sigma, mu_s, sigma_s, arr_0; it holds {', '.join(z.files)})")
        get = {k: (z[k] if k in z.files else None) for k in ("mu", "sigma", "mu_s", "sigma_s", "ref_pool")}
        meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
    images = NpzImages(path) if npz_member_header(path, "arr_0") is not None else None
    return Reference(str(path), get["mu"], get["sigma"], get["mu_s"], get["sigma_s"], images, get["ref_pool"], meta)


def reference_features(ref: Reference, extractor, batch_size: int = 100,
                       cache_dir: str | Path | None = None) -> np.ndarray | None:
    """Pool features of the reference's arr_0: stored ones, cached ones, or computed (then cached)."""
    if ref.pool is not None:
        return ref.pool
    if ref.images is None:
        return None
    cached = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{sha256_file(ref.path)}:{extractor.name}:{extractor.weights_sha256}".encode())
        cached = Path(cache_dir) / f"refpool-{key.hexdigest()[:32]}.npy"
        if cached.is_file():
            try:
                feats = np.load(cached, allow_pickle=False)
                if feats.ndim == 2 and len(feats) == ref.images.num_images and np.isfinite(feats).all():
                    return feats
            except (ValueError, OSError, EOFError):
                pass
            print(f"{cached}: unreadable or not the reference's features (an interrupted write?): recomputed",
                  file=sys.stderr)
    feats = stream_features(ref.images, extractor, batch_size).kept_pool
    if cached is not None:
        with atomic_path(cached) as tmp, open(tmp, "wb") as f:  # a reader never sees half a cache file
            np.save(f, feats)
    return feats


CLASSIFIER = "classifier.safetensors"
REFERENCE = "reference.npz"
REAL = "real.json"


def split_images(images: str | Path) -> tuple[ImageSource, ImageSource]:
    """(training, held-out) images of an images folder: all of it and its own held-out split (index.json
    "val", e.g. Fashion-MNIST's t10k images) where it has one, else every 5th image held out
    (classifier.heldout_mask) -- what the classifier, the real-data row and the autoencoder hold out."""

    source = open_images(images)
    val = heldout_split(source)
    if val is not None:
        return source, val
    held = heldout_mask(source.num_images)
    return tuple(ArrayImages(source.take(np.flatnonzero(rows)), source.labels[rows], path=f"{images} ({name} split)")
                 for name, rows in (("training", ~held), ("held-out", held)))
