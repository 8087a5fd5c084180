"""Intervals for the claims report: a config's mean over seeds, the difference of two configs, and a
slope over configs, each at 95%, with the verdict the interval gives.

Two sources of noise move a metric: the training seed (weights) and the draw of the samples. Every
seed of a config draws its own samples (sample.seed = the seed), so the spread of the per-seed values
holds both. With three seeds that spread is itself uncertain, and three seeds can agree by chance more
closely than their sample draws alone allow; the bootstrap over samples (evaluate/bootstrap.py) gives
each run's sampling standard error, which is a floor for a run's variance. So a config's variance per
run is max(s^2 between seeds, mean of the runs' bootstrap se^2), and:

- mean over n seeds: m +- t(0.975, n-1) * sqrt(V / n)  (Student; one seed: normal, bootstrap se only);
- difference of two configs: Welch's interval with the same V's and Satterthwaite's degrees of freedom;
- trend (metric against x over configs): least-squares slope of log metric on log x over every run,
  with its t interval on N - 2 degrees of freedom (the residuals hold the seed noise and any curvature).

A verdict is read off the interval, never the point: above zero (in the claimed direction) =
reproduced; below = not reproduced (the opposite holds); across zero = inconclusive.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95


def t_quantile(df: float, level: float = LEVEL) -> float:
    return float(stats.t.ppf(0.5 + level / 2, df)) if df > 0 and math.isfinite(df) else float(
        stats.norm.ppf(0.5 + level / 2))


def config_variance(values, sampling_se=None) -> float:
    """Variance of one run's value: the seeds' sample variance, floored by the mean bootstrap variance
    (module docstring); with one seed, the bootstrap variance alone, and infinite without one (one
    number says nothing of its spread: the interval is unbounded and the verdict inconclusive)."""
    v = np.asarray(values, np.float64)
    within = float(np.mean(np.square(sampling_se))) if sampling_se is not None and len(sampling_se) else 0.0
    if len(v) < 2:
        return within if within > 0 else math.inf
    return max(float(v.var(ddof=1)), within)


def mean_interval(values, sampling_se=None, level: float = LEVEL) -> dict:
    """{mean, lo, hi, n, se} of a config's mean over its seeds."""
    v = np.asarray(values, np.float64)
    n = len(v)
    se = math.sqrt(config_variance(v, sampling_se) / n)
    half = t_quantile(n - 1, level) * se
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "n": n, "se": se}


def difference_interval(a, b, a_se=None, b_se=None, level: float = LEVEL) -> dict:
    """mean(a) - mean(b) with Welch's interval: {diff, lo, hi, df}."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = config_variance(a, a_se) / len(a), config_variance(b, b_se) / len(b)
    se = math.sqrt(va + vb)
    dfs = [len(x) - 1 for x in (a, b)]
    if se == 0:
        df = math.inf
    elif min(dfs) == 0:
        df = math.inf if max(dfs) == 0 else max(dfs)
    else:
        df = (va + vb) ** 2 / (va ** 2 / dfs[0] + vb ** 2 / dfs[1])
    half = t_quantile(df, level) * se
    d = float(a.mean() - b.mean())
    return {"diff": d, "lo": d - half, "hi": d + half, "df": float(df), "se": se}


def slope_interval(x, y, level: float = LEVEL) -> dict:
    """Least-squares slope of y on x with its t interval (N - 2 degrees of freedom): {slope, lo, hi, r}."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    fit = stats.linregress(x, y)
    df = len(x) - 2
    half = t_quantile(df, level) * fit.stderr if df > 0 else math.inf
    return {"slope": float(fit.slope), "lo": float(fit.slope - half), "hi": float(fit.slope + half),
            "r": float(fit.rvalue), "n": len(x)}


REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def verdict(lo: float, hi: float, direction: int = 1) -> str:
    """The interval's verdict on a claim that the quantity is > 0 (direction 1) or < 0 (direction -1)."""
    lo, hi = (lo, hi) if direction > 0 else (-hi, -lo)
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(verdicts: list[str]) -> str:
    """Several parts of one claim: reproduced when all are, not reproduced when any is, else inconclusive."""
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def normalised_mi(table) -> float:
    """I(E; V) / H(E) of a (values of V, experts) count table: how much V decides the expert (0: not at
    all; 1: completely)."""
    joint = np.asarray(table, np.float64)
    joint = joint / joint.sum()
    h_e = entropy(joint.sum(0))
    if h_e == 0:
        return 0.0
    h_e_given_v = sum(float(row.sum()) * entropy(row / row.sum()) for row in joint if row.sum() > 0)
    return (h_e - h_e_given_v) / h_e
