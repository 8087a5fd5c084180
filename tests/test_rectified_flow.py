"""Rectified flow against closed-form Gaussian transport and the convention x_t = (1 - t) x0 + t noise."""
import math

import pytest
import torch

from diffzoo.diffusion.objective import create_objective
from diffzoo.diffusion.rectified_flow import RectifiedFlow
from diffzoo.models import create_model
from test_moe import one_thread  # noqa: F401  (autouse: one intra-op thread for these tiny tensors)

SHAPE = (64, 3, 4, 4)


def gaussian_field(mean, std, time_scale, extra_channels=0):
    """Exact marginal velocity E[noise - x0 | x_t = x] for x0 ~ N(mean, std^2) (elementwise) and
    independent standard-normal noise: x_t ~ N(mu_t, s_t^2), mu_t = (1 - t) mean,
    s_t^2 = (1 - t)^2 std^2 + t^2, and v = -mean + (t - (1 - t) std^2) / s_t^2 * (x - mu_t).
    Its flow maps z at t = 1 to mean + std * z at t = 0."""
    def model(x, t_model, **kwargs):
        t = (t_model / time_scale).view(-1, 1, 1, 1)
        var = (1 - t) ** 2 * std**2 + t**2
        v = -mean + (t - (1 - t) * std**2) / var * (x - (1 - t) * mean)
        if extra_channels:  # a learn_sigma-style output: the extra channels must be ignored
            v = torch.cat([v, torch.full_like(v[:, :extra_channels], 1e6)], dim=1)
        return v
    return model


@pytest.mark.parametrize("time_scale", [1000.0, 1.0])
def test_euler_transports_gaussian_to_gaussian(time_scale):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)
    std = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64) + 0.5
    z = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    exact = mean + std * z
    outs = {}
    for steps in (50, 100, 200):
        rf = RectifiedFlow(sampling_steps=steps, time_scale=time_scale)
        outs[steps] = rf.sample(gaussian_field(mean, std, time_scale, extra_channels=3), z, {})
    errors = [(outs[n] - exact).abs().max().item() for n in (50, 100, 200)]
    assert errors[-1] < 0.05
    # Euler is first order: halving the step halves the error ...
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.05)
    assert errors[1] / errors[2] == pytest.approx(2.0, rel=0.05)
    # ... so the Richardson extrapolation 2 x_200 - x_100 lands on the exact map (error O(1/N^2)).
    assert (2 * outs[200] - outs[100] - exact).abs().max().item() < 1e-3


def test_euler_time_grid_and_update():
    calls = []

    def model(x, t, y):
        calls.append(t.clone())
        return torch.ones_like(x) * y.view(-1, 1, 1, 1)

    rf = RectifiedFlow(sampling_steps=4, time_scale=1000.0)
    out = rf.sample(model, torch.zeros(2, 1, 2, 2), {"y": torch.tensor([1.0, 2.0])})
    assert [c[0].item() for c in calls] == [1000.0, 750.0, 500.0, 250.0]
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([-1.0, -2.0]))  # x(0) = x(1) - integral of v


def test_training_loss_vanishes_for_the_true_velocity_of_a_point_mass():
    # x0 = c (a point mass): x_t = (1 - t) c + t noise, so noise - x0 = (x_t - c) / t exactly.
    c = torch.full(SHAPE, 0.7)
    rf = RectifiedFlow(time_scale=1000.0)

    def exact(x, t_model):
        return (x - c) / (t_model / 1000.0).view(-1, 1, 1, 1)

    losses = rf.training_losses(exact, c, {}, generator=torch.Generator().manual_seed(1))
    assert losses["loss"].shape == (SHAPE[0],)
    assert losses["loss"].max().item() < 1e-8

    def wrong_sign(x, t_model):  # the "x0 - noise" convention
        return -exact(x, t_model)

    assert rf.training_losses(wrong_sign, c, {}, generator=torch.Generator().manual_seed(1))["loss"].min() > 0.1


def test_times_are_logit_normal():
    seen = []

    def model(x, t):
        seen.append(t / 1000.0)
        return torch.zeros_like(x)

    rf = RectifiedFlow(logit_mean=0.5, logit_std=0.8)
    rf.training_losses(model, torch.zeros(20000, 1, 1, 1), {}, generator=torch.Generator().manual_seed(2))
    t = seen[0].double()
    logit = torch.log(t) - torch.log1p(-t)
    assert logit.mean().item() == pytest.approx(0.5, abs=0.02)
    assert logit.std().item() == pytest.approx(0.8, abs=0.02)
    assert t.min() > 0 and t.max() < 1


def test_per_sample_generators_make_losses_batch_independent():
    def model(x, t):
        return x * torch.cos(t / 1000.0).view(-1, 1, 1, 1)

    rf = create_objective("rectified_flow", sampling_steps=10)
    x0 = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    full = rf.training_losses(model, x0, {}, generator=gens([10, 11, 12, 13]))["loss"]
    part = rf.training_losses(model, x0[2:], {}, generator=gens([12, 13]))["loss"]
    torch.testing.assert_close(full[2:], part)


def test_signature_and_validation():
    rf = create_objective("rectified_flow", sampling_steps="25", logit_mean=0.0, logit_std=1.0, time_scale=1.0,
                          learn_sigma=True)
    assert (rf.name, rf.sampling_steps, rf.time_scale) == ("rectified_flow", 25, 1.0)
    with pytest.raises(TypeError):
        create_objective("rectified_flow", noise_schedule="linear")
    with pytest.raises(ValueError):
        RectifiedFlow(sampling_steps=0)


@pytest.mark.parametrize("backbone", ["DiT-MoE-S/2-8E2A", "DiT-S/2"])
@pytest.mark.parametrize("objective", ["ddpm", "rectified_flow"])
def test_tiny_model_trains_and_samples_with_guidance(objective, backbone):
    torch.manual_seed(7)
    learn_sigma = objective == "ddpm"
    model = create_model(backbone, input_size=8, in_channels=3, num_classes=10, hidden_size=32, depth=2,
                         num_heads=2, learn_sigma=learn_sigma)
    settings = {"sampling_steps": "10"} if objective == "ddpm" else {"sampling_steps": 5}
    obj = create_objective(objective, learn_sigma=learn_sigma, **settings)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x0 = torch.randn(8, 3, 8, 8) * 0.5
    y = torch.randint(0, 10, (8,))
    model.train()
    for step in range(3):
        loss = obj.training_losses(model, x0, {"y": y}, generator=torch.Generator().manual_seed(step))["loss"].mean()
        aux = model.aux_loss()
        loss = loss + aux if aux is not None else loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item())
        assert ("moe_load_max" in model.aux_metrics()) == backbone.startswith("DiT-MoE")
    model.eval()
    samples = obj.sample(model.guided(1.5, "all"), torch.randn(4, 3, 8, 8), {"y": y[:4]})
    assert samples.shape == (4, 3, 8, 8) and torch.isfinite(samples).all()


def test_a_released_rf_file_samples_with_the_authors_guided_euler_by_default():
    """DiT-MoE XL/G (rectified flow, t in (0, 1), learn_sigma outputs): the default guidance for such a
    file (params.guidance_protocol) is the authors' RF sampler, written out here: each of 4 Euler steps
    x -= (u + s (c - u))[:, :C] / 4 with c, u the conditional and null-class outputs on EVERY channel.
    The old default (legacy3, channels 0..2 only) drifts from it (issue 26: 3.5e-4 after 4 steps)."""
    from diffzoo.params import guidance_protocol

    mode = guidance_protocol("dit_moe_xl_8E2A.pt", "rectified_flow")
    assert mode == "all" and guidance_protocol("dit_moe_s_8E2A.pt", "ddpm") == "legacy3"
    torch.manual_seed(0)
    model = create_model("DiT-MoE-XL/2-8E2A", input_size=8, in_channels=4, num_classes=10, hidden_size=32, depth=2,
                         num_heads=2, qk_norm=True, learn_sigma=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    rf = create_objective("rectified_flow", sampling_steps=4, time_scale=1.0)
    noise, y, s = torch.randn(3, 4, 8, 8), torch.tensor([1, 5, 9]), 4.0
    ours = rf.sample(model.guided(s, mode), noise, {"y": y})
    x = noise.clone()
    with torch.no_grad():
        for i in range(4, 0, -1):
            t = torch.full((3,), i / 4)
            c, u = model(x, t, y), model(x, t, torch.full_like(y, 10))
            x = x - (u + s * (c - u))[:, :4] / 4
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-6)
    legacy = rf.sample(model.guided(s, "legacy3"), noise, {"y": y})
    assert (legacy - x).abs().max() > 1e-4  # the 3-channel default was not the authors' sampler
