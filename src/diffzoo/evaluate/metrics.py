"""FID, sFID, Inception Score, Precision/Recall and KID with the definitions of ADM's evaluator.

Everything here works on features (any extractor); see features.py for where they come from.

- FID / sFID: Frechet distance between Gaussians fitted to features; covariances in float64
  (np.cov's precision). ADM takes scipy's sqrtm of S1 S2, retries with 1e-6 on the diagonals when
  the square root is not finite and fails when its diagonal has an imaginary part above 1e-3. Only
  the trace of that root enters FID, so for positive semi-definite statistics we compute it as the
  sum of square roots of the eigenvalues of L^T S2 L, L a pivoted Cholesky factor of S1 (similar to
  S1 S2, symmetric): 5-10x faster than sqrtm and 2-3x faster than torch-fidelity's eigenvalues of
  the non-symmetric product, equal to both to 1e-12 on full-rank statistics, and exact where a
  covariance is rank-deficient (fewer images than dimensions), where sqrtm adds the square roots of
  rounding noise in the null space (1e-6 relative at 1000 images of 2048-d). Statistics that are
  not finite or not positive semi-definite within rounding take ADM's path itself (sqrtm, retry,
  imaginary-part check), so its semantics hold where they matter. Means and covariances are
  accumulated batch by batch (``GaussianStats``), shifted by the first batch's mean for stability.
- IS: softmax of the logits, splits of ``split_size`` (5000) consecutive samples in file order, the
  last partial split kept, score = mean over splits of exp(mean KL(p(y|x) || p(y))).
  Accumulated per split as mean(sum p log p) - sum pbar log pbar, which is that KL exactly.
- Precision / Recall (Kynkaenniemi et al. 2019, ADM's ManifoldEstimator): radius of a point = the
  k-th smallest squared distance in its own set counting itself at index 0 (k=3); a point is covered
  when its squared distance to some point of the other set is ``<=`` that point's radius. Distances
  are computed as |u|^2 - 2 u.v + |v|^2 clamped at 0, in float16 (ADM's choice) with a float32
  recomputation of any block that is not finite (uncentred, as ADM), or in float32 throughout; the
  float32 option first centres both sets near the reference mean (exact shifts; see _exact_center)
  so the expansion does not cancel away the digits of small distances between clustered features.
  Work is blocked (rows x cols); radii keep a running k+1 smallest per row, so memory is one block.
- KID: torch-fidelity's polynomial-kernel MMD estimator on the same features.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import torch
from scipy import linalg
from scipy.linalg import blas, lapack

from ..errors import DiffzooError

DISTANCE_DTYPES = ("float16", "float32")


@contextmanager
def strict_float32():
    """No TF32 in CUDA matmuls/convolutions inside (cuDNN allows it by default; training code may
    enable it for matmuls): metric features and float32 distances must be float32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class GaussianStats:
    """Streaming mean and covariance (unbiased, like np.cov) of feature batches, in float64."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.n = 0
        self.shift = self.s1 = self.s2 = None

    def update(self, x) -> None:
        x = torch.as_tensor(x).to(self.device, torch.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D (batch, dim), got {tuple(x.shape)}")
        if self.shift is None:
            self.shift = x.mean(0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=self.device)
        d = x - self.shift
        self.s1 += d.sum(0)
        self.s2.addmm_(d.T, d)
        self.n += x.shape[0]

    def mean(self) -> np.ndarray:
        self._need(1)
        return (self.shift + self.s1 / self.n).cpu().numpy()

    def cov(self) -> np.ndarray:
        self._need(2)
        m = self.s1 / self.n
        return ((self.s2 - self.n * torch.outer(m, m)) / (self.n - 1)).cpu().numpy()

    def _need(self, n: int) -> None:
        if self.n < n:
            raise DiffzooError(f"statistics need at least {n} images, got {self.n}")


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def _pivoted_cholesky(sigma: np.ndarray):
    """LAPACK's pivoted Cholesky (dpstrf), stopping at pivots below d * eps * max(diag):
    sigma[piv][:, piv] ~ L L^T with L lower trapezoidal (d, rank). None where sigma is not positive
    semi-definite within rounding: the Schur complement it leaves is then larger than the tolerance
    (for a PSD matrix no entry of it can exceed its largest diagonal, which is below the tolerance)."""
    factor, piv, rank, info = lapack.dpstrf(sigma, lower=1)
    if info < 0:
        return None
    piv = piv - 1
    lower = np.tril(factor)[:, :rank]
    if rank < len(sigma):
        rest = lower[rank:]
        residual = sigma[np.ix_(piv[rank:], piv[rank:])] - rest @ rest.T
        tol = len(sigma) * np.finfo(np.float64).eps * max(float(np.max(np.diag(sigma))), 0.0)
        if np.max(np.abs(residual)) > 4 * tol:
            return None
    return lower, piv


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float | None:
    """tr((S1 S2)^(1/2)) for finite positive semi-definite S1, S2; None where they are not (then ADM).

    With S1 = L L^T (pivoted), S1 S2 is similar to L^T S2 L (symmetric, PSD) up to its zero
    eigenvalues, so the trace of the root is the sum of the square roots of that matrix's
    eigenvalues. The factor is taken of a rank-deficient covariance, whose null space then drops out
    exactly instead of contributing roots of rounding noise; where both are rank-deficient, the trace
    is the sum of the singular values of L2^T L1.
    """
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        return None
    f1, f2 = _pivoted_cholesky(sigma1), _pivoted_cholesky(sigma2)
    if f1 is None or f2 is None:
        return None
    d = len(sigma1)
    (l1, p1), (l2, p2) = f1, f2
    if l1.shape[1] < d and l2.shape[1] < d:
        return float(np.linalg.svd(l2.T @ l1[np.argsort(p1)][p2], compute_uv=False).sum())
    if l1.shape[1] == d and l2.shape[1] < d:
        (l1, p1), sigma2 = f2, sigma1
    other = sigma2[np.ix_(p1, p1)]
    if l1.shape[1] == d:  # triangular products: L^T (S2 L)
        m = blas.dtrmm(1.0, l1, blas.dtrmm(1.0, l1, other, side=1, lower=1), lower=1, trans_a=1)
    else:
        m = l1.T @ other @ l1
    if not m.size:
        return 0.0
    eig = np.linalg.eigvalsh(m)
    scale = max(float(np.max(np.abs(eig))), np.finfo(np.float64).tiny)
    if eig[0] < -10 * d * np.finfo(np.float64).eps * scale:  # S2 indefinite: sqrtm has an imaginary part
        return None
    trace = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    return trace if np.isfinite(trace) else None


def _trace_sqrtm_adm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """ADM's evaluator: tr(sqrtm(S1 S2)), retried with eps on the diagonals when not finite, an error
    when the root's diagonal has an imaginary part above 1e-3."""
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"Frechet distance: singular product; adding {eps} to the covariance diagonals",
                      stacklevel=3)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = np.max(np.abs(covmean.imag))
            raise DiffzooError(f"Frechet distance: matrix square root has an imaginary component {worst:.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), ADM's value (see the module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise DiffzooError(
            f"statistics of different feature spaces: mean {mu1.shape} / {mu2.shape}, covariance "
            f"{sigma1.shape} / {sigma2.shape} (another feature extractor or layer?)"
        )
    diff = mu1 - mu2
    trace = _trace_sqrt_product(sigma1, sigma2)
    if trace is None:
        trace = _trace_sqrtm_adm(sigma1, sigma2, eps)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace)


class InceptionScore:
    """Streaming Inception Score over consecutive splits of ``split_size`` samples (ADM: 5000)."""

    def __init__(self, split_size: int = 5000):
        if split_size < 1:
            raise DiffzooError(f"IS split size must be positive, got {split_size}")
        self.split_size = split_size
        self.scores: list[float] = []
        self._reset()

    def _reset(self) -> None:
        self.count, self.sum_p, self.sum_plogp = 0, None, 0.0

    def update(self, logits) -> None:
        p = torch.softmax(torch.as_tensor(logits).to(torch.float64), dim=1)
        while len(p):
            take = min(len(p), self.split_size - self.count)
            part, p = p[:take], p[take:]
            self.sum_p = part.sum(0) if self.sum_p is None else self.sum_p + part.sum(0)
            self.sum_plogp += float(torch.special.xlogy(part, part).sum())
            self.count += take
            if self.count == self.split_size:
                self._close()

    def _close(self) -> None:
        pbar = self.sum_p / self.count
        kl = self.sum_plogp / self.count - float(torch.special.xlogy(pbar, pbar).sum())
        self.scores.append(float(np.exp(kl)))
        self._reset()

    def compute(self) -> float:
        if self.count:
            self._close()
        if not self.scores:
            raise DiffzooError("Inception Score of no samples")
        return float(np.mean(self.scores))


def inception_score(logits, split_size: int = 5000) -> float:
    acc = InceptionScore(split_size)
    acc.update(logits)
    return acc.compute()


# ---------------------------------------------------------------- precision / recall

def _to_f16(x: torch.Tensor) -> torch.Tensor:
    """Round to float16 and keep computing in float32 (fp16 storage, fp32 accumulation)."""
    return x.half().float()


def squared_distances(u: torch.Tensor, v: torch.Tensor, dtype: str = "float16",
                      center: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise squared Euclidean distances max(|u|^2 - 2 u.v + |v|^2, 0) as one block.

    float16 follows ADM's TensorFlow block: inputs and norms rounded to float16, the product
    accumulated in float32 and rounded, each sum rounded to float16 (the block is returned in
    float16); if anything in it is not finite (overflow) the block is recomputed in float32.
    """
    if dtype not in DISTANCE_DTYPES:
        raise DiffzooError(f"distance dtype must be one of {DISTANCE_DTYPES}, got {dtype!r}")
    u, v = u.float(), v.float()
    if dtype == "float32" and center is not None:
        u, v = u - center, v - center
    if dtype == "float16":
        u16, v16 = _to_f16(u), _to_f16(v)
        nu = (u16 * u16).sum(1).half()
        nv = (v16 * v16).sum(1).half()
        d = torch.mm(u16, v16.T).half()   # float32 accumulation, float16 result
        d.mul_(-2).add_(nu[:, None]).add_(nv[None, :])   # float16 arithmetic: rounded at each step
        if bool(torch.isfinite(d).all()):
            return d.clamp_min_(0)
        del d
    d = torch.mm(u, v.T).mul_(-2)
    d.add_((u * u).sum(1)[:, None]).add_((v * v).sum(1)[None, :])
    return d.clamp_min_(0)


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def manifold_radii(features, k: int = 3, dtype: str = "float16", row_block: int = 10000,
                   col_block: int = 10000, device: str | torch.device = "cpu", center=None) -> np.ndarray:
    """Squared radius of each point: k-th smallest squared distance within the set (self at 0)."""
    feats = torch.as_tensor(features)
    n = feats.shape[0]
    if n <= k:
        raise DiffzooError(f"precision/recall with k={k} needs more than {k} points, got {n}")
    radii = np.empty(n, dtype=np.float32)
    for r0, r1 in _blocks(n, row_block):
        rows = feats[r0:r1].to(device)
        best = None
        for c0, c1 in _blocks(n, col_block):
            d = squared_distances(rows, feats[c0:c1].to(device), dtype, center)
            cand = d if best is None else torch.cat([best, d], dim=1)
            del d
            best = cand if cand.shape[1] <= k + 1 else torch.topk(cand, k + 1, dim=1, largest=False).values
            del cand
        radii[r0:r1] = torch.sort(best.float(), dim=1).values[:, k].cpu().numpy()
    return radii


def _fits_f16(x: torch.Tensor) -> bool:
    return bool(torch.equal(x.half().float(), x))


def manifold_coverage(features_a, radii_a, features_b, radii_b, dtype: str = "float16",
                      row_block: int = 10000, col_block: int = 10000,
                      device: str | torch.device = "cpu", center=None) -> tuple[np.ndarray, np.ndarray]:
    """(a inside b's manifold, b inside a's manifold), each a boolean array (ADM's evaluate_pr)."""
    fa, fb = torch.as_tensor(features_a), torch.as_tensor(features_b)
    ra = torch.as_tensor(np.asarray(radii_a, np.float32)).to(device)
    rb = torch.as_tensor(np.asarray(radii_b, np.float32)).to(device)
    if dtype == "float16" and _fits_f16(ra) and _fits_f16(rb):
        ra, rb = ra.half(), rb.half()   # same comparisons, without promoting each block to float32
    a_in = torch.zeros(fa.shape[0], dtype=torch.bool, device=device)
    b_in = torch.zeros(fb.shape[0], dtype=torch.bool, device=device)
    for a0, a1 in _blocks(fa.shape[0], row_block):
        rows = fa[a0:a1].to(device)
        for b0, b1 in _blocks(fb.shape[0], col_block):
            d = squared_distances(rows, fb[b0:b1].to(device), dtype, center)
            a_in[a0:a1] |= (d <= rb[None, b0:b1]).any(1)
            b_in[b0:b1] |= (d <= ra[a0:a1, None]).any(0)
            del d
    return a_in.cpu().numpy(), b_in.cpu().numpy()


def _exact_center(features, rows: int = 2000) -> np.ndarray:
    """About the mean, rounded to a multiple of a power of two q near the spread: subtracting it is
    exact in float32 for typical features (both are multiples of ulp(x) <= q), so centred points are
    exact translates and distances keep their meaning, ties (integer points) included."""
    head = np.asarray(features[:rows], np.float64)
    spread = float(head.std(0).mean()) or 1.0
    q = 2.0 ** np.floor(np.log2(spread))
    return (np.round(head.mean(0) / q) * q).astype(np.float32)


def precision_recall(ref_features, sample_features, k: int = 3, dtype: str = "float16",
                     row_block: int = 10000, col_block: int = 10000,
                     device: str | torch.device = "cpu", ref_radii=None) -> tuple[float, float]:
    """ADM's compute_prec_recall: precision = share of samples inside the reference manifold,
    recall = share of reference points inside the samples' manifold."""
    center = None
    if dtype == "float32":
        center = torch.from_numpy(_exact_center(ref_features)).to(device)
    opts = dict(dtype=dtype, row_block=row_block, col_block=col_block, device=device, center=center)
    with strict_float32():
        if ref_radii is None:
            ref_radii = manifold_radii(ref_features, k, **opts)
        sample_radii = manifold_radii(sample_features, k, **opts)
        ref_in, sample_in = manifold_coverage(ref_features, ref_radii, sample_features, sample_radii, **opts)
    return float(sample_in.mean()), float(ref_in.mean())


def kid(ref_features, sample_features, subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> dict:
    """Kernel Inception Distance by torch-fidelity (polynomial kernel degree 3, unbiased MMD^2)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    a, b = torch.as_tensor(ref_features), torch.as_tensor(sample_features)
    size = min(subset_size, len(a), len(b))
    out = kid_features_to_metric(a, b, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"mean": out[KEY_METRIC_KID_MEAN], "std": out[KEY_METRIC_KID_STD], "subsets": subsets, "subset_size": size}
