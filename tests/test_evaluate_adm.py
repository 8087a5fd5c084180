"""The ADM drop-in path (reference batch with mu, sigma, mu_s, sigma_s, arr_0) end to end.

A small stand-in for the Inception extractor (named "inception", deterministic pixel features) keeps
this fast; the real network's plumbing is tested in test_evaluate_inception.py. Every number is
recomputed independently from the stand-in's raw outputs.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffzoo.evaluate.evaluator import evaluate, format_metrics
from diffzoo.evaluate.metrics import frechet_distance

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_metrics import _adm_is, _brute_force_pr  # noqa: E402

W = np.random.default_rng(42).normal(size=(6, 9)).astype(np.float32)


class StandIn:
    name = "inception"
    weights_sha256 = "f" * 64
    device = torch.device("cpu")
    input_resolution = None

    def __init__(self):
        self.calls = 0

    def describe(self):
        return {"name": self.name, "weights_sha256": self.weights_sha256, "weights_verified": False}

    def raw(self, images):
        x = images.astype(np.float32) / 255
        pool = np.concatenate([x.mean((1, 2)), x[:, ::2, ::2].std((1, 2))], 1)   # 6 dims
        spatial = x[:, :2, :3, :].reshape(len(x), -1)                             # 18 dims
        return pool, pool @ W * 4, spatial

    def __call__(self, images):
        self.calls += 1
        return {k: torch.from_numpy(v) for k, v in zip(("pool", "logits", "spatial"), self.raw(images), strict=False)}


@pytest.fixture()
def adm_files(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (230, 8, 8, 3), dtype=np.uint8)
    ref_imgs = (rng.integers(0, 200, (150, 8, 8, 3)) + 30).astype(np.uint8)
    train = (rng.integers(0, 220, (400, 8, 8, 3)) + 20).astype(np.uint8)  # "training set" for mu/sigma
    pool, _, spatial = StandIn().raw(train)
    np.savez(tmp_path / "ref.npz", arr_0=ref_imgs, mu=pool.mean(0), sigma=np.cov(pool, rowvar=False),
             mu_s=spatial.mean(0), sigma_s=np.cov(spatial, rowvar=False))
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    return tmp_path, samples, ref_imgs


def test_adm_reference_batch_used_as_is(adm_files):
    d, samples, ref_imgs = adm_files
    ext = StandIn()
    m = evaluate(d / "samples.npz", d / "ref.npz", ext, batch_size=64, is_split=100, distance_dtype="float32",
                 kid_subset_size=100, cache_dir=d / "cache")
    ref = np.load(d / "ref.npz")
    pool, logits, spatial = (a.astype(np.float64) for a in ext.raw(samples))
    assert m["fid"] == pytest.approx(frechet_distance(pool.mean(0), np.cov(pool, rowvar=False),
                                                      ref["mu"], ref["sigma"]), rel=1e-7)
    assert m["sfid"] == pytest.approx(frechet_distance(spatial.mean(0), np.cov(spatial, rowvar=False),
                                                       ref["mu_s"], ref["sigma_s"]), rel=1e-7)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert m["inception_score"] == pytest.approx(_adm_is(probs.astype(np.float64), 100), rel=1e-6)
    ref_pool = ext.raw(ref_imgs)[0]
    assert (m["precision"], m["recall"]) == _brute_force_pr(ref_pool.astype(np.float64), pool.astype(np.float32))
    assert 0 < m["precision"] < 1 and 0 < m["recall"] < 1
    assert m["reference"]["format"] == "ADM" and m["reference"]["num_images"] == 150
    assert m["class_accuracy"] is None
    text = format_metrics(m)
    assert text.splitlines()[:5] == [f"Inception Score: {m['inception_score']:.4f}", f"FID: {m['fid']:.6f}",
                                     f"sFID: {m['sfid']:.6f}", f"Precision: {m['precision']:.4f}",
                                     f"Recall: {m['recall']:.4f}"]
    assert "not comparable" in text  # stand-in weights are not the published file
    json.dumps(m)  # serialisable as metrics.json

    # reference features were cached by content: a second run does not extract arr_0 again
    cached = list((d / "cache").glob("refpool-*.npy"))
    assert len(cached) == 1
    np.testing.assert_allclose(np.load(cached[0]), ref_pool, rtol=1e-6)
    calls = ext.calls
    m2 = evaluate(d / "samples.npz", d / "ref.npz", ext, batch_size=64, is_split=100, distance_dtype="float32",
                  kid_subset_size=100, cache_dir=d / "cache")
    assert ext.calls - calls == 4  # ceil(230 / 64) sample batches only
    assert m2["fid"] == m["fid"] and m2["precision"] == m["precision"]
