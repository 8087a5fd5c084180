"""The Gaussian diffusion against values derived here from the DDPM/IDDPM formulas, in float64."""
import math

import numpy as np
import pytest
import torch

from diffzoo.diffusion import create_diffusion, space_timesteps

T = 1000
BETAS = np.array([1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)])  # DDPM's linear schedule
ABAR = np.array([np.prod(1 - BETAS[: i + 1]) for i in range(T)])
ATOL = 1e-6


def test_linear_schedule_and_cumulative_products():
    d = create_diffusion("")
    assert d.num_timesteps == T
    np.testing.assert_allclose(d.betas, BETAS, rtol=0, atol=1e-15)
    np.testing.assert_allclose(d.alphas_cumprod, ABAR, rtol=1e-12)
    np.testing.assert_allclose(d.alphas_cumprod_prev[1:], ABAR[:-1], rtol=1e-12)
    assert d.alphas_cumprod_prev[0] == 1.0


def test_respaced_timesteps_250():
    kept = sorted(space_timesteps(T, "250"))
    assert len(kept) == 250
    assert kept[:4] == [0, 4, 8, 12] and kept[-3:] == [991, 995, 999]
    # IDDPM: evenly spaced with fractional stride 999/249, rounded half to even (Python's round).
    assert kept == [round(i * 999 / 249) for i in range(250)]
    assert sorted(space_timesteps(T, "ddim50")) == list(range(0, 1000, 20))
    assert sorted(space_timesteps(T, "ddim25")) == list(range(0, 1000, 40))


def test_section_counts_split():
    # Two sections of 50 steps: 10 evenly in [0, 49] and 5 evenly in [50, 99].
    kept = sorted(space_timesteps(100, "10,5"))
    first = [round(i * 49 / 9) for i in range(10)]
    second = [50 + round(i * 49 / 4) for i in range(5)]
    assert kept == first + second
    with pytest.raises(ValueError):
        space_timesteps(100, "ddim33")


def test_respaced_betas_from_alpha_bar():
    d = create_diffusion("250")
    kept = [round(i * 999 / 249) for i in range(250)]
    assert d.timestep_map.tolist() == kept
    expected = [1 - ABAR[kept[0]]] + [1 - ABAR[kept[i]] / ABAR[kept[i - 1]] for i in range(1, 250)]
    np.testing.assert_allclose(d.betas, expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(d.alphas_cumprod, ABAR[kept], rtol=1e-10)


def test_posterior_terms():
    d = create_diffusion("")
    t = np.arange(1, T)
    var = BETAS[t] * (1 - ABAR[t - 1]) / (1 - ABAR[t])
    np.testing.assert_allclose(d.posterior_variance[1:], var, rtol=1e-10)
    assert d.posterior_variance[0] == 0
    np.testing.assert_allclose(d.posterior_log_variance_clipped[1:], np.log(var), rtol=1e-10)
    assert d.posterior_log_variance_clipped[0] == pytest.approx(math.log(var[0]), rel=1e-12)
    # mu~ = sqrt(abar_{t-1}) beta_t / (1-abar_t) x0 + sqrt(alpha_t)(1-abar_{t-1}) / (1-abar_t) xt
    np.testing.assert_allclose(d.posterior_mean_coef1[1:], np.sqrt(ABAR[t - 1]) * BETAS[t] / (1 - ABAR[t]), rtol=1e-10)
    np.testing.assert_allclose(d.posterior_mean_coef2[1:], np.sqrt(1 - BETAS[t]) * (1 - ABAR[t - 1]) / (1 - ABAR[t]),
                               rtol=1e-10)
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    xt = torch.randn_like(x0)
    tt = torch.tensor([7, 700])
    mean, variance, _ = d.q_posterior_mean_variance(x0, xt, tt)
    for b, ti in enumerate(tt.tolist()):
        c1 = math.sqrt(ABAR[ti - 1]) * BETAS[ti] / (1 - ABAR[ti])
        c2 = math.sqrt(1 - BETAS[ti]) * (1 - ABAR[ti - 1]) / (1 - ABAR[ti])
        assert torch.allclose(mean[b], c1 * x0[b] + c2 * xt[b], atol=ATOL)
        expected = BETAS[ti] * (1 - ABAR[ti - 1]) / (1 - ABAR[ti])
        assert torch.allclose(variance[b], torch.full_like(variance[b], expected))


def _normal_cdf_adm(x):
    return 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def test_training_loss_terms_hybrid():
    """MSE on eps + VB (KL in bits, mean from the detached eps; decoder NLL at t=0), recomputed by hand."""
    d = create_diffusion("")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 2, 2, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    out = torch.randn(3, 4, 2, 2, generator=gen, dtype=torch.float64) * 0.5
    out[:, 2:] = out[:, 2:].clamp(-1, 1)
    t = torch.tensor([0, 1, 500])
    terms = d.training_losses(lambda x, tt: out, x0, t, noise=noise)

    for b, ti in enumerate(t.tolist()):
        ab = ABAR[ti]
        xt = math.sqrt(ab) * x0[b].numpy() + math.sqrt(1 - ab) * noise[b].numpy()
        eps, v = out[b, :2].numpy(), out[b, 2:].numpy()
        assert terms["mse"][b].item() == pytest.approx(np.mean((noise[b].numpy() - eps) ** 2), abs=ATOL)
        ab_prev = ABAR[ti - 1] if ti > 0 else 1.0
        post_var = BETAS[ti] * (1 - ab_prev) / (1 - ab)
        post_var_t1 = BETAS[1] * (1 - ABAR[0]) / (1 - ABAR[1])
        min_log = math.log(post_var if ti > 0 else post_var_t1)
        frac = (v + 1) / 2
        logvar = frac * math.log(BETAS[ti]) + (1 - frac) * min_log
        x0_pred = (xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        c1 = math.sqrt(ab_prev) * BETAS[ti] / (1 - ab)
        c2 = math.sqrt(1 - BETAS[ti]) * (1 - ab_prev) / (1 - ab)
        mean_pred = c1 * x0_pred + c2 * xt
        if ti == 0:
            # Decoder NLL of 256 bins of width 2/255 under N(mean, e^logvar), in bits.
            s = np.exp(-0.5 * logvar)
            x = x0[b].numpy()
            upper = _normal_cdf_adm((x - mean_pred + 1 / 255) * s)
            lower = _normal_cdf_adm((x - mean_pred - 1 / 255) * s)
            p = np.where(x < -0.999, upper, np.where(x > 0.999, 1 - lower, upper - lower))
            expected_vb = np.mean(-np.log(np.maximum(p, 1e-12))) / math.log(2)
        else:
            true_mean = c1 * x0[b].numpy() + c2 * xt
            true_logvar = math.log(post_var)
            # KL(N1 || N2) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
            kl = (0.5 * (logvar - true_logvar)
                  + (np.exp(true_logvar) + (true_mean - mean_pred) ** 2) / (2 * np.exp(logvar)) - 0.5)
            expected_vb = np.mean(kl) / math.log(2)
        assert terms["vb"][b].item() == pytest.approx(expected_vb, abs=ATOL)
        assert terms["loss"][b].item() == pytest.approx(terms["mse"][b].item() + expected_vb, abs=ATOL)


def test_vb_term_does_not_train_the_mean():
    d = create_diffusion("")
    out = torch.randn(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    x0 = torch.rand(2, 2, 2, 2, dtype=torch.float64)
    d.training_losses(lambda x, t: out, x0, torch.tensor([3, 300]))["vb"].sum().backward()
    assert torch.all(out.grad[:, :2] == 0) and torch.any(out.grad[:, 2:] != 0)


def test_ddim_and_ddpm_steps():
    d = create_diffusion("ddim50")
    kept = list(range(0, 1000, 20))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
    eps[:, 2:] = 0.3
    seen = []

    def model(xx, tt):
        seen.append(tt.tolist())
        return eps

    i = torch.tensor([10, 0])  # respaced indices -> original timesteps 200 and 0
    step = d.ddim_sample(model, x, i, eta=0.0)["sample"]
    assert seen[-1] == [200, 0]  # the model sees original timesteps
    for b, (idx, orig) in enumerate(zip(i.tolist(), [200, 0], strict=True)):
        ab = ABAR[orig]
        ab_prev = ABAR[kept[idx - 1]] if idx > 0 else 1.0
        x0 = (x[b] - math.sqrt(1 - ab) * eps[b, :2]) / math.sqrt(ab)
        expected = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps[b, :2]
        assert torch.allclose(step[b], expected, atol=ATOL)

    # Ancestral step: mean of q(x_{t-1}|x_t, x0_pred) plus exp(logvar/2) * noise; no noise at t=0.
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    out = d.p_sample(model, x, i, noise=noise)["sample"]
    b, idx = 0, 10
    ab, ab_prev = ABAR[200], ABAR[180]
    beta = 1 - ab / ab_prev
    post_var = beta * (1 - ab_prev) / (1 - ab)
    logvar = 0.65 * math.log(beta) + 0.35 * math.log(post_var)  # v = 0.3 -> frac 0.65
    x0 = (x[b] - math.sqrt(1 - ab) * eps[b, :2]) / math.sqrt(ab)
    mean = math.sqrt(ab_prev) * beta / (1 - ab) * x0 + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x[b]
    assert torch.allclose(out[b], mean + math.exp(0.5 * logvar) * noise[b], atol=ATOL)
    x0_last = (x[1] - math.sqrt(1 - ABAR[0]) * eps[1, :2]) / math.sqrt(ABAR[0])
    assert torch.allclose(out[1], x0_last, atol=ATOL)  # t=0: the posterior mean is x0 itself


def test_sampling_is_a_function_of_per_sample_seeds():
    d = create_diffusion("ddim10")
    model = lambda x, t: torch.cat([0.1 * x, torch.zeros_like(x)], 1)  # noqa: E731
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = d.sample_loop(model, (2, 1, 2, 2), generator=gens([5, 6]), method="ddpm")
    alone = d.sample_loop(model, (1, 1, 2, 2), generator=gens([6]), method="ddpm")
    assert torch.allclose(both[1:], alone)


@pytest.mark.parametrize("spacing,method", [("250", "ddpm"), ("50", "ddpm"), ("ddim25", "ddim")])
def test_samplers_recover_a_point_mass_with_the_exact_noise_predictor(spacing, method):
    """For data that is a single point x*, eps(x_t, t) = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t) is
    exact; every sampler must then end at x* (the model sees original timesteps on 0..999)."""
    x_star = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    abar = torch.tensor(ABAR)

    def exact(x, t):
        a = abar[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1)

    d = create_diffusion(spacing)
    shape = tuple(x_star.shape)
    out = d.sample_loop(exact, shape, noise=torch.randn(shape, dtype=torch.float64), method=method,
                        generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, x_star, atol=1e-6)


# ---- the small-scale options: v / x0 prediction and the cosine schedule -------------------------------
def _exact_prediction(prediction, x_star, abar):
    """The exact model for data that is the single point x*, in each parameterization (closed forms:
    eps = (x_t - sqrt(abar) x*) / sqrt(1 - abar), v = sqrt(abar) eps - sqrt(1 - abar) x*, x0 = x*)."""
    def model(x, t):
        a = abar[t].view(-1, 1, 1, 1).to(x.dtype)
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        out = {"eps": eps, "v": a.sqrt() * eps - (1 - a).sqrt() * x_star, "x0": x_star.expand_as(x)}[prediction]
        return torch.cat([out, torch.zeros_like(out)], 1)
    return model


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_training_target_is_the_closed_form_and_an_exact_model_has_zero_mse(prediction):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 2, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 900, 999])
    d = create_diffusion("", prediction=prediction)
    a = torch.tensor(ABAR)[t].view(-1, 1, 1, 1)
    expected = {"eps": noise, "v": a.sqrt() * noise - (1 - a).sqrt() * x0, "x0": x0}[prediction]
    assert torch.allclose(d.training_target(x0, noise, t), expected, atol=1e-12)
    # A model that returns the target (x_t -> target is a function of x_t only for a point mass, so
    # here the model is handed the target directly).
    target = d.training_target(x0, noise, t)
    terms = d.training_losses(lambda x, tt: torch.cat([target, torch.zeros_like(target)], 1), x0, t, noise=noise)
    assert torch.allclose(terms["mse"], torch.zeros(6, dtype=torch.float64), atol=1e-20)


@pytest.mark.parametrize("prediction", ["v", "x0"])
@pytest.mark.parametrize("spacing,method", [("50", "ddpm"), ("ddim25", "ddim")])
def test_samplers_recover_a_point_mass_with_the_exact_v_and_x0_predictor(prediction, spacing, method):
    x_star = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    d = create_diffusion(spacing, prediction=prediction)
    shape = tuple(x_star.shape)
    out = d.sample_loop(_exact_prediction(prediction, x_star, torch.tensor(ABAR)), shape,
                        noise=torch.randn(shape, dtype=torch.float64), method=method,
                        generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, x_star, atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_each_parameterization_gives_the_same_x0_and_posterior(prediction):
    """p_mean_variance converts each exact prediction to the same x0 (= x*) and the same mean."""
    g = torch.Generator().manual_seed(2)
    x_star = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(x_star.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([3, 100, 600, 998])
    d = create_diffusion("", prediction=prediction)
    out = d.p_mean_variance(_exact_prediction(prediction, x_star, torch.tensor(ABAR)), x_t, t)
    assert torch.allclose(out["pred_xstart"], x_star, atol=1e-9)
    mean, _, _ = d.q_posterior_mean_variance(x_star, x_t, t)
    assert torch.allclose(out["mean"], mean, atol=1e-9)


def test_cosine_schedule_is_iddpms_alpha_bar():
    """IDDPM: abar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, s = 0.008, with each
    beta capped at 0.999 (only the last steps reach the cap)."""
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    d = create_diffusion("", noise_schedule="cosine")
    expected = np.array([f(i + 1) / f(0) for i in range(T)])
    capped = np.flatnonzero(d.betas >= 0.999)
    assert len(capped) <= 2 and (capped >= T - 2).all()
    np.testing.assert_allclose(d.alphas_cumprod[:T - 2], expected[:T - 2], rtol=1e-9)


def test_prediction_arguments():
    assert create_diffusion("", predict_xstart=True).prediction == "x0"  # the official argument
    assert create_diffusion("").prediction == "eps"
    with pytest.raises(ValueError, match="contradicts"):
        create_diffusion("", predict_xstart=True, prediction="v")
    with pytest.raises(ValueError, match="prediction must be one of"):
        create_diffusion("", prediction="score")
