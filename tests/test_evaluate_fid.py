"""FID from statistics at the papers' size (2048-d) against ADM's own formula, and ADM's fallbacks.

`_adm_frechet` below is ADM's evaluator (guided-diffusion evaluations/evaluator.py) written out
independently: scipy's sqrtm of the product, a retry with 1e-6 on the diagonals when the root is
not finite, an error when its diagonal has an imaginary part above 1e-3. Where a covariance is
rank-deficient, the exact value comes from the features themselves: with S2 = L2 L2^T full rank,
tr (S1 S2)^1/2 is the nuclear norm of X1c L2 / sqrt(n1 - 1), and where both are rank-deficient,
of X1c X2c^T / sqrt((n1 - 1)(n2 - 1)) (Xc: centred features; singular values carry no roots of
rounding noise).
"""
import warnings

import numpy as np
import pytest
from scipy import linalg

from diffzoo.errors import DiffzooError
from diffzoo.evaluate import metrics
from diffzoo.evaluate.metrics import frechet_distance


def _adm_frechet(mu1, s1, mu2, s2, eps=1e-6):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("imaginary component")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _features(n, d, rank, perturb, seed):
    """Inception-like pool features: ReLU of a low-rank signal with a decaying spectrum plus noise."""
    base = np.random.default_rng(0)
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, rank + 1) ** -0.5)[:, None]
    w = base.normal(size=(rank, d)) * scale
    w = w + perturb * rng.normal(size=w.shape) * scale
    return np.maximum(rng.normal(size=(n, rank)) @ w + 0.3 * rng.normal(size=(n, d)), 0).astype(np.float32)


def _stats(x):
    return x.mean(0).astype(np.float64), np.cov(x, rowvar=False)


def _exact_one_deficient(x, mu1, mu2, s2):
    """Exact FID for a rank-deficient S1 = cov(x) and full-rank S2 = L2 L2^T: tr (S1 S2)^1/2 is the
    nuclear norm of Xc L2 / sqrt(n - 1) (singular values carry no roots of rounding noise)."""
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    nuclear = np.linalg.svd(xc @ np.linalg.cholesky(s2), compute_uv=False).sum() / np.sqrt(len(x) - 1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(np.cov(x, rowvar=False)) + np.trace(s2) - 2 * nuclear)


def test_fid_2048d_full_rank_equals_adm_scipy():
    mu1, s1 = _stats(_features(4000, 2048, 512, 0.0, seed=1))
    mu2, s2 = _stats(_features(4000, 2048, 512, 0.05, seed=2))
    ref = _adm_frechet(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("n,d", [(560, 512), (1100, 1024)], ids=["barely-full-rank-512d", "barely-full-rank-1024d"])
def test_fid_ill_conditioned_full_rank_equals_adm_scipy(n, d):
    mu1, s1 = _stats(_features(n, d, d // 4, 0.0, seed=3))
    mu2, s2 = _stats(_features(4 * d, d, d // 4, 0.05, seed=4))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_adm_frechet(mu1, s1, mu2, s2), rel=1e-10)


def test_fid_2048d_rank_deficient_is_exact():
    """1000 images of 2048-d: S1 has rank 999. Our value is the exact one; sqrtm's differs from it by the
    roots of rounding noise in the null space (about 1e-6 relative), which the test allows it."""
    x = _features(1000, 2048, 512, 0.05, seed=5)
    mu1, s1 = _stats(x)
    mu2, s2 = _stats(_features(4000, 2048, 512, 0.0, seed=6))
    exact = _exact_one_deficient(x, mu1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(exact, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(exact, rel=1e-10)


def test_fid_both_rank_deficient_is_exact_and_near_adm():
    x1, x2 = _features(300, 512, 128, 0.0, seed=7), _features(400, 512, 128, 0.05, seed=8)
    (mu1, s1), (mu2, s2) = _stats(x1), _stats(x2)
    c1, c2 = (x.astype(np.float64) - x.astype(np.float64).mean(0) for x in (x1, x2))
    nuclear = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt((len(x1) - 1) * (len(x2) - 1))
    exact = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * nuclear)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(exact, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(exact, rel=1e-10)
    assert got == pytest.approx(_adm_frechet(mu1, s1, mu2, s2), rel=1e-5)


def test_fid_product_without_square_root_takes_adm_retry(monkeypatch):
    # S1 is (slightly) indefinite and S1 S2 = [[0, 0], [c, 0]] nilpotent: sqrtm is not finite, ADM
    # retries on (S1 + eps)(S2 + eps), whose eigenvalues are positive for c < eps.
    c = 1e-7
    s1, s2 = np.array([[0.0, c], [c, 0.0]]), np.array([[1.0, 0.0], [0.0, 0.0]])
    calls = []
    real = metrics._sqrtm
    monkeypatch.setattr(metrics, "_sqrtm", lambda a: calls.append(a.copy()) or real(a))
    with pytest.warns(UserWarning, match="adding 1e-06"):
        got = frechet_distance([0.0, 0.0], s1, [1.0, 0.0], s2)
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[1], (s1 + 1e-6 * np.eye(2)) @ (s2 + 1e-6 * np.eye(2)))
    assert np.isfinite(got)
    assert got == pytest.approx(_adm_frechet(np.zeros(2), s1, np.array([1.0, 0.0]), s2), rel=1e-12)


def test_fid_imaginary_root_raises_above_1e3_and_passes_below():
    mu = np.zeros(2)
    with pytest.raises(DiffzooError, match="imaginary component"):
        frechet_distance(mu, np.eye(2), mu, np.diag([-1.0, 1.0]))            # root diag(i, 1)
    got = frechet_distance(mu, np.eye(2), mu, np.diag([-1e-8, 1.0]))          # root diag(1e-4 i, 1): accepted
    assert got == pytest.approx(_adm_frechet(mu, np.eye(2), mu, np.diag([-1e-8, 1.0])), abs=1e-12)
    assert got == pytest.approx(2 + 1 - 1e-8 - 2 * 1.0, abs=1e-12)


def test_fid_non_finite_statistics_take_adm_path():
    s = np.eye(3)
    s[0, 0] = np.nan
    assert np.isnan(_adm_frechet(np.zeros(3), s, np.zeros(3), np.eye(3)))
    with pytest.warns(UserWarning, match="adding 1e-06"):  # ADM: retry, then NaN
        assert np.isnan(frechet_distance(np.zeros(3), s, np.zeros(3), np.eye(3)))
