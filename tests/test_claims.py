"""The claims machinery: intervals against closed forms and scipy, the bootstrap over samples against
fresh draws of a known distribution, the routing statistic on tables whose answer is known, seeds and
claims in params, and the whole path (seeds -> bootstrap -> claims report) through real Snakemake on a
tiny configuration."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from diffzoo.errors import DiffzooError
from diffzoo.evaluate.bootstrap import sample_bootstrap, weighted_stats
from diffzoo.evaluate.metrics import frechet_distance
from diffzoo.params import validate
from diffzoo.report import stats

from conftest import tiny_params
from test_workflow import ROOT, make_project, sh, write_params

DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


# ---- intervals -----------------------------------------------------------------------------------
def test_mean_interval_is_students_t():
    """[1, 2, 3]: mean 2, s = 1, t(0.975, 2) = 4.3027: 2 +- 2.4841 (a textbook number)."""
    i = stats.mean_interval([1.0, 2.0, 3.0])
    assert i["mean"] == 2.0
    assert i["hi"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # the bootstrap floor: three seeds closer than their samples allow take the sampling se instead
    tight = stats.mean_interval([2.0, 2.0, 2.0], sampling_se=[0.5, 0.5, 0.5])
    assert tight["hi"] - 2.0 == pytest.approx(4.302653 * 0.5 / math.sqrt(3), rel=1e-6)


def test_one_number_without_a_bootstrap_decides_nothing():
    """A config run once, with no bootstrap, has no spread to measure: its interval is unbounded and
    no claim on it is reproduced or refuted (it once got a zero-width interval)."""
    i = stats.mean_interval([12.0])
    assert i["lo"] == -math.inf and i["hi"] == math.inf
    d = stats.difference_interval([12.0], [20.0])
    assert stats.verdict(d["lo"], d["hi"]) == stats.INCONCLUSIVE
    assert stats.mean_interval([12.0], sampling_se=[1.0])["hi"] == pytest.approx(12.0 + 1.959964, rel=1e-6)


def test_mean_interval_covers_a_normal_mean_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 5.0 <= hi for lo, hi in (
        (i["lo"], i["hi"]) for i in (stats.mean_interval(rng.normal(5.0, 2.0, 3)) for _ in range(4000))))
    assert 0.935 <= hits / 4000 <= 0.965


def test_difference_interval_is_welchs():
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 1, 5), rng.normal(8, 3, 4)
    d = stats.difference_interval(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d["lo"], d["hi"]) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_slope_interval_is_least_squares_with_t():
    rng = np.random.default_rng(2)
    x = np.repeat(np.log([1.0, 4.0, 16.0]), 3)
    y = 3.0 - 0.5 * x + rng.normal(0, 0.1, len(x))
    s = stats.slope_interval(x, y)
    fit = sps.linregress(x, y)
    assert s["slope"] == pytest.approx(fit.slope)
    assert s["hi"] - s["slope"] == pytest.approx(sps.t.ppf(0.975, len(x) - 2) * fit.stderr)
    assert s["lo"] < -0.5 < s["hi"]
    assert stats.verdict(s["lo"], s["hi"], direction=-1) == stats.REPRODUCED


def test_verdicts_come_from_the_interval():
    assert stats.verdict(0.1, 2.0) == stats.REPRODUCED
    assert stats.verdict(-2.0, -0.1) == stats.NOT_REPRODUCED
    assert stats.verdict(-0.1, 2.0) == stats.INCONCLUSIVE
    assert stats.verdict(-2.0, -0.1, direction=-1) == stats.REPRODUCED
    assert stats.combine([stats.REPRODUCED, stats.INCONCLUSIVE]) == stats.INCONCLUSIVE
    assert stats.combine([stats.REPRODUCED, stats.NOT_REPRODUCED]) == stats.NOT_REPRODUCED


def test_normalised_mi_on_tables_with_known_answers():
    assert stats.normalised_mi(np.full((10, 8), 7)) == pytest.approx(0.0, abs=1e-12)  # choice ignores the class
    assert stats.normalised_mi(np.eye(8) * 5) == pytest.approx(1.0)                  # the class decides it
    half = np.array([[1, 1, 0, 0], [0, 0, 1, 1]])                                     # 1 bit of 2
    assert stats.normalised_mi(half) == pytest.approx(0.5)


def test_routing_statistics_on_counts_whose_answer_is_known():
    """Expert = sampling step in the later layers, and in the first layer two bits from the position and
    one from the step (the class never matters): NMIs 1, then 2/3 for the position and 1/3 for the step
    in the first layer; the position's NMI falls from 2/3 to 0."""
    from diffzoo.report.claims import routing_statistics

    layers, classes, steps, positions, experts = 3, 10, 8, 4, 8
    counts = np.zeros((layers, classes, steps, positions, experts), np.int64)
    for s in range(steps):
        counts[1:, :, s, :, s] = 5
        for p in range(positions):
            counts[0, :, s, p, 2 * p + s % 2] = 5
    seed = routing_statistics([{"counts": counts}])["seeds"][0]
    assert seed["class_mi"] == pytest.approx([0, 0, 0], abs=1e-12)
    assert seed["step_mi"][1:] == pytest.approx([1, 1])
    assert seed["position_mi"] == pytest.approx([2 / 3, 0, 0], abs=1e-12)
    assert seed["step_mi"][0] == pytest.approx(1 / 3)
    assert seed["position_drop"] == pytest.approx(2 / 3)
    assert seed["step_over_class"] == pytest.approx((1 / 3 + 1 + 1) / 3)


def test_routing_counts_count_every_token_choice_once_per_step():
    import torch

    from diffzoo.diffusion.objective import build_objective
    from diffzoo.models import create_model
    from diffzoo.probes import routing_counts

    torch.manual_seed(0)
    model = create_model("DiT-MoE-S/2-8E2A", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=2,
                         num_heads=2)
    objective = build_objective("ddpm", model.learn_sigma, "ddim5", "ddim", clip_denoised=False, prediction="v")
    out = routing_counts(model, objective, num_classes=10, per_class=3)
    counts = out["counts"]
    assert counts.shape == (2, 10, 5, 16, 8) and len(out["timesteps"]) == 5
    # per layer: 10 classes x 3 images x 5 steps x 16 tokens x top-2
    assert (counts.sum(axis=(1, 2, 3, 4)) == 10 * 3 * 5 * 16 * 2).all()
    assert (counts.sum(axis=(0, 2, 3, 4)) == 2 * 3 * 5 * 16 * 2).all()   # every class equally
    assert out["timesteps"] == sorted(out["timesteps"], reverse=True)     # noisy to clean


# ---- the bootstrap over samples ------------------------------------------------------------------
def test_weighted_stats_equal_the_statistics_of_the_repeated_rows():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    counts = rng.integers(0, 3, 30).astype(float)
    mu, sigma = weighted_stats(x, counts)
    rows = np.repeat(x, counts.astype(int), axis=0)
    assert mu == pytest.approx(rows.mean(0))
    assert sigma == pytest.approx(np.cov(rows.T))


def test_bootstrap_se_of_fid_matches_fresh_draws():
    """The bootstrap's standard error of FID on one set of n samples against the real spread of FID
    over 200 fresh sets of n from the same distribution (an independent measurement)."""
    rng = np.random.default_rng(4)
    d, n = 8, 600
    ref_mu, ref_sigma = np.zeros(d), np.eye(d)
    shift = np.full(d, 0.3)

    def draw():
        return (rng.normal(size=(n, d)) + shift).astype(np.float32)
    fresh = [frechet_distance(s.mean(0), np.cov(s.T.astype(np.float64)), ref_mu, ref_sigma)
             for s in (draw() for _ in range(200))]
    boot = sample_bootstrap(draw(), ref_mu, ref_sigma, replicates=300)["metrics"]["fid"]
    assert 0.7 < boot["se"] / np.std(fresh, ddof=1) < 1.4
    assert boot["lo"] < boot["hi"]


def test_bootstrap_of_precision_and_accuracy_is_that_of_a_proportion():
    """Class accuracy is a mean of 0/1 indicators: its bootstrap se is sqrt(p (1 - p) / n)."""
    rng = np.random.default_rng(5)
    n = 2000
    labels = rng.integers(0, 10, n)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    logits[np.arange(n), labels] += 1.5 * (rng.random(n) < 0.6)
    pool = rng.normal(size=(n, 6)).astype(np.float32)
    ref = rng.normal(size=(1500, 6)).astype(np.float32)
    out = sample_bootstrap(pool, ref.mean(0).astype(np.float64), np.cov(ref.T), replicates=400, logits=logits,
                           labels=labels, ref_pool=ref)["metrics"]
    p = float((logits.argmax(1) == labels).mean())
    assert out["class_accuracy"]["se"] == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.15)
    assert set(out) == {"fid", "precision", "recall", "inception_score", "class_accuracy"}
    for m in out.values():
        assert m["lo"] <= m["hi"] and m["se"] > 0


# ---- params ----------------------------------------------------------------------------------------
def test_seeds_expand_to_one_run_per_seed_with_its_samplings():
    raw = copy.deepcopy(DEFAULT)
    raw["experiments"]["dit-s2"]["seeds"] = [0, 3]
    raw["samplings"] = {"g": {"experiment": "dit-s2", "sample": {"cfg_scale": 1.5}}}
    raw["claims"] = {"dit-guidance": ["dit-s2", "g"]}
    params = validate(raw)
    assert params.replicates("dit-s2") == ["dit-s2-seed0", "dit-s2-seed3"]
    assert params.replicates("g") == ["g-seed0", "g-seed3"]
    assert params.run("dit-s2-seed3").train.seed == 3 and params.run("g-seed3").sample.seed == 3
    assert params.run("g-seed3").trained_by == "dit-s2-seed3" and params.run("g-seed3").sample.cfg_scale == 1.5
    assert "seeds" not in params.dump()["experiments"]["dit-s2-seed0"]  # DVC reads the expanded runs
    assert validate(params.dump()).run_ids == params.run_ids


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["experiments"]["dit-s2"].update(seeds=[0, 0]), r"experiments.dit-s2.seeds = \[0, 0\]: a list of "
                                                                 r"distinct seeds"),
    (lambda r: r["experiments"]["dit-s2"].update(seeds=[0], train={"seed": 1}),
     r"experiments.dit-s2.train.seed is set by seeds"),
    (lambda r: r.update(claims={"dit-speed": ["dit-s2", "dit-s4"]}), r"claims.dit-speed: unknown claim; allowed: "
                                                                      r"dit-patch"),
    (lambda r: r.update(claims={"dit-patch": ["dit-s4", "dit-s3"]}), r"claims.dit-patch: 'dit-s3' is no experiment"),
    (lambda r: r.update(claims={"moe-routing": ["dit-moe-s2", "dit-s2"]}), r"claims.moe-routing: 2 runs; a routing "
                                                                          r"claim takes 1"),
    (lambda r: r.update(claims={"moe-routing": ["dit-s2"]}), r"claims.moe-routing: 'dit-s2' is DiT-S/2, which has no "
                                                             r"experts to route"),
])
def test_bad_seeds_and_claims_are_named(edit, message):
    raw = copy.deepcopy(DEFAULT)
    edit(raw)
    with pytest.raises(DiffzooError, match=message):
        validate(raw)


# ---- the whole path --------------------------------------------------------------------------------
@pytest.mark.slow
def test_claims_through_snakemake_on_a_tiny_configuration(tmp_path):
    """Two seeds of four tiny configs and a guided sampling, five claims of every kind: Snakemake runs
    train -> sample -> evaluate (with the bootstrap) -> claims; the report's numbers are recomputed
    here from the runs' metrics.json with scipy."""
    project = make_project(tmp_path / "p")
    raw = tiny_params()
    raw["evaluate"]["bootstrap"] = 50
    small = {"hidden_size": 32, "depth": 2, "num_heads": 2}
    def seeded(model, args):
        return {"model": model, "model_args": args, "objective": "ddpm", "train": {}, "sample": {}, "seeds": [0, 1]}
    raw["experiments"] = {"p4": seeded("DiT-S/4", small), "p2": seeded("DiT-S/2", small),
                          "moe": seeded("DiT-MoE-S/2-8E2A", small),
                          "ssm": seeded("DiffuSSM-S", {"hidden_size": 32, "depth": 2})}
    raw["samplings"] = {"p2-cfg": {"experiment": "p2", "sample": {"cfg_scale": 3.0}}}
    raw["claims"] = {"dit-patch": ["p4", "p2"], "dit-guidance": ["p2", "p2-cfg"], "moe-routing": ["moe"],
                     "diffussm-cost": ["ssm", "p2"], "mamba-ranking": ["p2", "ssm", "moe"]}
    write_params(project, raw)
    out = sh(project, "snakemake", "--cores", "2")
    results = json.loads((project / "results/claims.json").read_text())
    for claim_id, r in results.items():  # the run ends by printing each claim's verdict
        assert f"  {claim_id}: {r['verdict']} -- " in out
    md = (project / "results/claims.md").read_text()
    assert list(results) == list(raw["claims"])
    for claim_id, r in results.items():
        assert f"**{r['verdict']}**" in md and r["claim"] in md
        kinds = (stats.REPRODUCED, stats.NOT_REPRODUCED, stats.INCONCLUSIVE)
        assert r["verdict"] in kinds or r["verdict"].endswith("pairs resolved")
        png = project / "results/claims" / f"{claim_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page = (project / "results/index.html").read_text()  # the results page links the claims' report and plots
    assert "href='claims.md'" in page and all(f"href='claims/{c}.png'" in page for c in results)

    def fids(name):
        return [json.loads((project / f"results/metrics/{name}-seed{s}.json").read_text())["fid"] for s in (0, 1)]
    # the guidance claim's interval, recomputed: Welch on the two seeds' FIDs, floored by the bootstrap
    g = results["dit-guidance"]
    assert g["diff"] == pytest.approx(np.mean(fids("p2")) - np.mean(fids("p2-cfg")))
    metrics = json.loads((project / "results/metrics/p2-seed0.json").read_text())
    assert metrics["bootstrap"]["replicates"] == 50 and metrics["bootstrap"]["metrics"]["fid"]["se"] > 0
    assert g["lo"] < g["diff"] < g["hi"]
    # the trend's slope: least squares of log FID on log Gflops over the four runs
    gflops = {c["name"]: c["gflops"] for c in results["dit-patch"]["configs"]}
    x = np.log([gflops["p4"]] * 2 + [gflops["p2"]] * 2)
    assert results["dit-patch"]["slope"] == pytest.approx(sps.linregress(x, np.log(fids("p4") + fids("p2"))).slope)
    # routing: every token's top-2 choice counted once per sampling step, in each of the 2 MoE layers
    counts = np.asarray(results["moe-routing"]["seeds"][0]["class_mi"])
    assert counts.shape == (2,)
    routing = results["moe-routing"]
    assert -1 <= routing["step_over_class"]["lo"] <= routing["step_over_class"]["hi"] <= 1
    # cost: DiffuSSM's flops grow about linearly in the pixels, DiT-S/2's attention faster
    cost = results["diffussm-cost"]["flops_exponents"]
    assert 0.95 < cost["ssm"] < 1.1 < cost["p2"]
    ranking = results["mamba-ranking"]
    assert len(ranking["pairs"]) == 3 and sorted(ranking["order"]) == ["moe", "p2", "ssm"]


def test_each_sample_seed_draws_its_own_samples():
    """sample.seed once chose nothing on the CPU (seed * 2^32 + index: torch's CPU generator keeps the low
    32 bits), so every seed drew seed 0's samples. Each seed now draws its own noise; seed 0 keeps the
    index seeding of every result made before, and a sample's noise does not depend on its batch."""
    import torch

    from diffzoo.sampling import sample_generators

    def noise(seed, indices):
        return torch.stack([torch.randn(4, generator=g) for g in sample_generators(seed, indices)])
    draws = {seed: noise(seed, range(8)) for seed in (0, 1, 2, 11)}
    for a in draws:
        for b in draws:
            assert a == b or not torch.allclose(draws[a], draws[b])
    assert torch.equal(draws[0][3], torch.randn(4, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(noise(2, [5, 6])[0], draws[2][5])


def test_a_corrupt_metrics_file_is_named_not_used(tmp_path, monkeypatch):
    """The claims stage reads every run's metrics first: a truncated file is one line naming it."""
    from diffzoo.commands.claims import claims

    raw = copy.deepcopy(DEFAULT)
    raw["claims"] = {"dit-patch": ["dit-s4", "dit-s2"]}
    params = validate(raw)
    monkeypatch.chdir(tmp_path)
    for run_id in ("dit-s2", "dit-s4"):
        (tmp_path / "results/metrics").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"results/metrics/{run_id}.json").write_text('{"fid": 1')
    with pytest.raises(DiffzooError, match=r"the evaluate summary of 'dit-s2' results/metrics/dit-s2.json is "
                                           r"unreadable"):
        claims(params, tmp_path / "results")
    assert not (tmp_path / "results/claims.md").exists()
