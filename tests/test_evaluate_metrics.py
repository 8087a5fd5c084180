"""Metrics against independent references: closed forms, known extremes, brute force."""
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from diffzoo.errors import DiffzooError
from diffzoo.evaluate.metrics import (
    GaussianStats,
    frechet_distance,
    inception_score,
    InceptionScore,
    kid,
    manifold_radii,
    precision_recall,
    squared_distances,
)


# ------------------------------------------------------------------ FID

def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _closed_form_fid(mu1, s1, mu2, s2):
    """tr((S1^1/2 S2 S1^1/2)^1/2) via symmetric eigendecompositions (no sqrtm of a product)."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    w2 = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(w2, 0, None))))


def test_fid_one_dimensional_gaussians():
    # W2^2 between N(m1, a^2) and N(m2, b^2) is (m1-m2)^2 + (a-b)^2
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0, abs=1e-10)


def test_fid_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_fid_full_covariances_closed_form():
    rng = np.random.default_rng(1)
    d = 24
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(_closed_form_fid(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_fid_singular_covariances_match_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(8, 3))
    s1 = a @ a.T
    s2 = np.diag([1.0, 2.0, 0, 0, 0, 0, 0, 0])
    got = frechet_distance(np.zeros(8), s1, np.ones(8), s2)
    assert got == pytest.approx(_closed_form_fid(np.zeros(8), s1, np.ones(8), s2), abs=1e-6)


def test_fid_adm_path_retries_with_eps_on_non_finite_root_and_rejects_imaginary(monkeypatch):
    """ADM's fallback path itself (taken for statistics that are not PSD; tests/test_evaluate_fid.py
    reaches it with real inputs): retry arguments and the 1e-3 imaginary tolerance."""
    from diffzoo.evaluate import metrics

    monkeypatch.setattr(metrics, "_trace_sqrt_product", lambda s1, s2: None)
    calls = []
    real_sqrtm = metrics._sqrtm

    def flaky(a):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(metrics, "_sqrtm", flaky)
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    with pytest.warns(UserWarning, match="adding 1e-06"):
        got = frechet_distance([0, 0], s1, [0, 0], s2)
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(2)) @ (s2 + 1e-6 * np.eye(2)))
    assert got == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2, abs=1e-5)

    monkeypatch.setattr(metrics, "_sqrtm", lambda a: real_sqrtm(a) + 0.01j * np.eye(len(a)))
    with pytest.raises(DiffzooError, match="imaginary component"):
        frechet_distance([0, 0], s1, [0, 0], s2)
    monkeypatch.setattr(metrics, "_sqrtm", lambda a: real_sqrtm(a) + 1e-4j * np.eye(len(a)))
    assert frechet_distance([0, 0], s1, [0, 0], s2) == pytest.approx(5.0, abs=1e-9)


def test_fid_rejects_mixed_feature_spaces():
    with pytest.raises(DiffzooError, match="different feature spaces"):
        frechet_distance(np.zeros(4), np.eye(4), np.zeros(5), np.eye(5))


def test_streaming_stats_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(1003, 12)) * 3 + 50).astype(np.float32)  # offset: tests the shifted sums
    st = GaussianStats()
    for i in range(0, len(x), 97):
        st.update(x[i:i + 97])
    np.testing.assert_allclose(st.mean(), x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-10)


def test_fid_of_sampled_gaussians_approaches_closed_form():
    rng = np.random.default_rng(4)
    d, n = 4, 200_000
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu2 = np.full(d, 0.5)
    st1, st2 = GaussianStats(), GaussianStats()
    st1.update(rng.multivariate_normal(np.zeros(d), s1, size=n))
    st2.update(rng.multivariate_normal(mu2, s2, size=n))
    est = frechet_distance(st1.mean(), st1.cov(), st2.mean(), st2.cov())
    assert est == pytest.approx(_closed_form_fid(np.zeros(d), s1, mu2, s2), abs=0.02)


# ------------------------------------------------------------------ IS

def _adm_is(probs, split_size):
    """ADM's formula written out directly on probabilities."""
    scores = []
    for i in range(0, len(probs), split_size):
        part = probs[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores))


def test_is_uniform_predictions_give_one():
    assert inception_score(np.zeros((120, 1008)), split_size=50) == pytest.approx(1.0, abs=1e-12)


def test_is_confident_balanced_predictions_give_class_count():
    c = 10
    logits = np.full((200, c), -1e4)
    logits[np.arange(200), np.arange(200) % c] = 0.0  # one-hot, every class equally often per split
    assert inception_score(logits, split_size=50) == pytest.approx(float(c), rel=1e-9)


def test_is_matches_direct_formula_with_partial_last_split_and_order():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(1234, 20)) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    acc = InceptionScore(split_size=500)
    for i in range(0, len(logits), 77):  # batches straddle split boundaries
        acc.update(logits[i:i + 77])
    assert acc.compute() == pytest.approx(_adm_is(probs, 500), rel=1e-10)
    # file order matters: sorting by predicted class changes the splits and the score
    order = np.argsort(probs.argmax(1), kind="stable")
    assert abs(inception_score(logits[order], 500) - acc.compute()) > 0.1


# ------------------------------------------------------------------ precision / recall

def _brute_force_pr(ref, samples, k=3):
    """The definition with exact float64 distances, written independently of the blocked code."""
    d_rr = cdist(ref, ref, "sqeuclidean")
    d_ss = cdist(samples, samples, "sqeuclidean")
    r_ref = np.sort(d_rr, axis=1)[:, k]
    r_s = np.sort(d_ss, axis=1)[:, k]
    d_sr = cdist(samples, ref, "sqeuclidean")
    precision = np.mean([(d_sr[i] <= r_ref).any() for i in range(len(samples))])
    recall = np.mean([(d_sr[:, j] <= r_s).any() for j in range(len(ref))])
    return float(precision), float(recall)


def test_pr_constructed_line_known_answer():
    # ref = 0..9 on a line. k=3 radii (squared, self at index 0): ends 9, next 4, interior 4.
    ref = np.stack([np.arange(10.0), np.zeros(10)], 1).astype(np.float32)
    np.testing.assert_array_equal(manifold_radii(ref, dtype="float32"), [9, 4, 4, 4, 4, 4, 4, 4, 4, 9])
    # samples: 12 is at squared distance exactly 9 from point 9 (radius 9): inside by `<=`;
    # 12.5 and 20 are outside; 4.5 inside. Sample radii (self at 0) are all 60.25 or more here except
    # the cluster, so recall counts ref points within those radii (computed by hand below).
    samples = np.array([[4.5, 0], [12.0, 0], [12.5, 0], [20.0, 0]], np.float32)
    # sample radii: 4.5 -> dists 0, 56.25, 64, 240.25 -> 240.25; 12 -> 0, .25, 56.25, 64 -> 64;
    # 12.5 -> 0, .25, 56.25, 64 -> 64; 20 -> 0, 56.25, 64, 240.25 -> 240.25
    # every ref point is within 240.25 of sample 4.5 (max (9-4.5)^2 = 20.25): recall 1
    for dtype in ("float32", "float16"):
        p, r = precision_recall(ref, samples, dtype=dtype)
        assert (p, r) == (0.5, 1.0)


def test_pr_strict_radius_changes_tie_answer():
    # sanity of the `<=` choice: moving the sample a hair outside the radius flips it
    ref = np.stack([np.arange(10.0), np.zeros(10)], 1).astype(np.float32)
    p, _ = precision_recall(ref, np.array([[12.0, 0], [12.01, 0], [40, 0], [41, 0]], np.float32), dtype="float32")
    assert p == 0.25


def test_pr_float32_equals_brute_force_exactly_on_integer_points():
    rng = np.random.default_rng(6)
    ref = rng.integers(-6, 7, size=(300, 5)).astype(np.float32)   # many exact ties
    samples = rng.integers(-7, 8, size=(420, 5)).astype(np.float32)
    expected = _brute_force_pr(ref, samples)
    assert precision_recall(ref, samples, dtype="float32") == expected
    # blocking does not change anything
    assert precision_recall(ref, samples, dtype="float32", row_block=64, col_block=50) == expected


def test_pr_float32_equals_and_float16_close_to_brute_force_on_gaussians():
    rng = np.random.default_rng(7)
    d = 64
    ref = rng.normal(size=(1500, d)).astype(np.float32)
    samples = (rng.normal(size=(2000, d)) * 1.1 + 0.15).astype(np.float32)
    bp, br = _brute_force_pr(ref, samples)
    assert 0.05 < bp < 0.95 and 0.05 < br < 0.95  # not a degenerate case
    assert precision_recall(ref, samples, dtype="float32", row_block=700, col_block=900) == (bp, br)
    p16, r16 = precision_recall(ref, samples, dtype="float16", row_block=700, col_block=900)
    assert abs(p16 - bp) <= 0.002 and abs(r16 - br) <= 0.002


def test_float16_distances_fall_back_to_float32_on_overflow():
    rng = np.random.default_rng(8)
    u = torch.from_numpy(rng.normal(size=(20, 8)).astype(np.float32) * 300)  # |u|^2 ~ 7e5 > fp16 max
    v = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32) * 300)
    assert torch.isinf(u.half().float().pow(2).sum(1).half()).any()
    exact = cdist(u.numpy().astype(np.float64), v.numpy().astype(np.float64), "sqeuclidean")
    np.testing.assert_allclose(squared_distances(u, v, "float16").numpy(), exact, rtol=1e-5)
    # and without overflow the float16 block really is float16-rounded
    small = squared_distances(u / 300, v / 300, "float16")
    assert small.dtype == torch.float16
    np.testing.assert_allclose(small.float().numpy(), exact / 300**2, rtol=2e-3, atol=2e-2)


def test_pr_rejects_unknown_dtype_and_tiny_sets():
    x = np.zeros((10, 2), np.float32)
    with pytest.raises(DiffzooError, match="distance dtype"):
        precision_recall(x, x, dtype="bfloat16")
    with pytest.raises(DiffzooError, match="more than 3 points"):
        manifold_radii(x[:3])


# ------------------------------------------------------------------ KID

def test_kid_equals_unbiased_polynomial_mmd_on_full_sets():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 7)).astype(np.float32)
    y = (rng.normal(size=(60, 7)) + 0.3).astype(np.float32)

    def k(a, b):
        return (a.astype(np.float64) @ b.T.astype(np.float64) / a.shape[1] + 1) ** 3

    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    out = kid(x, y, subsets=1, subset_size=60)
    assert out["mean"] == pytest.approx(expected, rel=1e-4)


def test_pr_float32_exact_for_clustered_features_far_from_origin():
    # |u|^2 ~ 8e4 while squared distances ~ 0.05: the plain expansion in float32 would cancel away
    # the distances; the float32 option centres the sets by an exact shift first
    rng = np.random.default_rng(10)
    ref = (100 + rng.normal(size=(400, 8)) * 0.05).astype(np.float32)
    samples = (100.01 + rng.normal(size=(500, 8)) * 0.055).astype(np.float32)
    expected = _brute_force_pr(ref.astype(np.float64), samples.astype(np.float64))
    assert precision_recall(ref, samples, dtype="float32", row_block=128, col_block=96) == expected


def test_precision_recall_runs_without_tf32_and_restores_flags(monkeypatch):
    from diffzoo.evaluate import metrics

    seen = []
    real = metrics.squared_distances

    def spy(*a, **kw):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real(*a, **kw)

    monkeypatch.setattr(metrics, "squared_distances", spy)
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        x = np.random.default_rng(11).normal(size=(20, 3)).astype(np.float32)
        precision_recall(x, x + 0.1, dtype="float32")
        assert seen and all(flags == (False, False) for flags in seen)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
