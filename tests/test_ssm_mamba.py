"""The Mamba mixer against mamba-ssm's reference (slow) path, written here from its published code
layout: in_proj, causal depthwise conv1d + silu, x_proj -> (dt, B, C), dt_proj, selective scan with
z gate, D skip and softplus(dt + bias), out_proj; Vim's v2 adds the same on the flipped sequence.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from diffzoo.flops import count_macs
from diffzoo.models import create_model
from diffzoo.models.mamba import Mamba
from test_ssm_scan import sequential_selective_scan


@pytest.fixture(autouse=True)
def one_thread():
    """Shared 2-core CI machines: two intra-op threads competing with other jobs run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_branch(sd, xz, sfx, d_state, dt_rank, d_conv):
    seqlen = xz.shape[-1]
    x, z = xz.chunk(2, dim=1)
    w = sd["conv1d" + sfx + ".weight"]
    x = F.silu(F.conv1d(x, w, sd["conv1d" + sfx + ".bias"], padding=d_conv - 1, groups=w.shape[0])[..., :seqlen])
    x_dbl = x.transpose(1, 2).reshape(-1, x.shape[1]) @ sd["x_proj" + sfx + ".weight"].t()
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    dt = (sd["dt_proj" + sfx + ".weight"] @ dt.t()).reshape(-1, x.shape[0], seqlen).permute(1, 0, 2)
    B = B.reshape(x.shape[0], seqlen, d_state).transpose(1, 2)
    C = C.reshape(x.shape[0], seqlen, d_state).transpose(1, 2)
    A = -torch.exp(sd["A_b_log" if sfx else "A_log"])
    return sequential_selective_scan(x, dt, A, B, C, sd["D" + sfx], z=z, delta_bias=sd["dt_proj" + sfx + ".bias"],
                                     delta_softplus=True)


def reference_mamba(sd, hidden, bimamba_type, divide_out, d_state, dt_rank, d_conv):
    sd = {k: v.double() for k, v in sd.items()}
    xz = (hidden.double() @ sd["in_proj.weight"].t()).transpose(1, 2)
    y = reference_branch(sd, xz, "", d_state, dt_rank, d_conv)
    if bimamba_type == "v2":
        y = y + reference_branch(sd, xz.flip(-1), "_b", d_state, dt_rank, d_conv).flip(-1)
        if divide_out:
            y = y / 2
    return y.transpose(1, 2) @ sd["out_proj.weight"].t()


@pytest.mark.parametrize("bimamba_type,divide_out,length", [("none", False, 45), ("v2", False, 70), ("v2", True, 33)])
def test_mixer_equals_reference_path(bimamba_type, divide_out, length, scan_path):
    torch.manual_seed(0)
    mixer = Mamba(24, d_state=8, d_conv=4, expand=2, bimamba_type=bimamba_type, divide_out=divide_out)
    with torch.no_grad():  # move every parameter off its init so each one matters
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hidden = torch.randn(2, length, 24, requires_grad=True)
    out = mixer(hidden)
    sd = {k: v.detach().double().requires_grad_() for k, v in mixer.state_dict().items()}
    hidden_ref = hidden.detach().double().requires_grad_()
    ref = reference_mamba(sd, hidden_ref, bimamba_type, divide_out, 8, mixer.dt_rank, 4)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    w = torch.randn(out.shape)
    (out * w).sum().backward()
    (ref * w.double()).sum().backward()
    torch.testing.assert_close(hidden.grad.double(), hidden_ref.grad, rtol=1e-5, atol=1e-5)
    for name, param in mixer.named_parameters():  # every weight, both directions' conv, x/dt proj, A, D
        torch.testing.assert_close(param.grad.double(), sd[name].grad, rtol=1e-5, atol=1e-5, msg=name)


def test_state_dict_names_and_shapes_are_mamba_ssm_and_vim():
    d, n, k = 32, 16, 4
    di, r = 2 * d, math.ceil(d / 16)
    branch = {"conv1d{}.weight": (di, 1, k), "conv1d{}.bias": (di,), "x_proj{}.weight": (r + 2 * n, di),
              "dt_proj{}.weight": (di, r), "dt_proj{}.bias": (di,), "D{}": (di,)}
    expected = {"in_proj.weight": (2 * di, d), "out_proj.weight": (d, di), "A_log": (di, n)}
    expected.update({key.format(""): shape for key, shape in branch.items()})
    got = {key: tuple(v.shape) for key, v in Mamba(d).state_dict().items()}
    assert got == expected
    expected.update({key.format("_b"): shape for key, shape in branch.items()})
    expected["A_b_log"] = (di, n)
    got = {key: tuple(v.shape) for key, v in Mamba(d, bimamba_type="v2").state_dict().items()}
    assert got == expected


def test_initialisation_follows_mamba_ssm():
    mixer = Mamba(64, d_state=16, bimamba_type="v2", dt_min=0.001, dt_max=0.1)
    for a_log in (mixer.A_log, mixer.A_b_log):
        torch.testing.assert_close(torch.exp(a_log), torch.arange(1, 17.0).repeat(128, 1))
    for name in ("D", "D_b"):
        assert torch.equal(getattr(mixer, name), torch.ones(128))
    for proj in (mixer.dt_proj, mixer.dt_proj_b):
        dt = F.softplus(proj.bias)
        assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
        assert proj.weight.abs().max() <= mixer.dt_rank ** -0.5
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None


def test_direction_of_information_flow():
    torch.manual_seed(1)
    x = torch.randn(1, 20, 16)
    x2 = x.clone()
    x2[:, -1] += 1.0  # change only the last token
    for kind, sees_future in (("none", False), ("v2", True)):
        mixer = Mamba(16, bimamba_type=kind)
        with torch.no_grad():
            changed = (mixer(x2) - mixer(x))[0, 0].abs().max().item()
        assert (changed > 1e-6) == sees_future, kind


def test_mixer_macs_are_projections_conv_and_declared_scan():
    d, n, k, length = 32, 16, 4, 50
    mixer = Mamba(d, d_state=n, d_conv=k, bimamba_type="v2")
    di, r = 2 * d, mixer.dt_rank
    per_branch = length * (di * k + di * (r + 2 * n) + r * di)
    # conv1d outputs L + k - 1 positions (padding k-1) before the causal cut
    per_branch += (k - 1) * di * k
    # scan: 3 MACs per state element and direction, declared by the mixer
    expected = length * d * 2 * di + length * di * d + 2 * per_branch + 2 * 3 * di * length * n
    assert count_macs(mixer, inputs=(torch.zeros(1, length, d),)) == expected


@pytest.mark.parametrize("name,kwargs", [
    ("DiS-S/2", dict(patch_size=1, hidden_size=32, depth=2)),
    ("DiffuSSM-S", dict(hidden_size=32, depth=2)),
])
def test_bf16_autocast_forward_backward_finite_at_1024_tokens(name, kwargs, scan_path):
    torch.manual_seed(0)
    model = create_model(name, input_size=32, in_channels=4, num_classes=10, **kwargs)
    with torch.no_grad():  # non-zero output layers so the gradients reach every block
        for p in model.parameters():
            if p.requires_grad and p.abs().max() == 0:
                p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(2, 4, 32, 32) * 3
    t = torch.tensor([0, 999])
    y = torch.tensor([3, 10])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
        loss = (out.float() ** 2).mean()
    loss.backward()
    assert out.shape == (2, 8, 32, 32)
    assert torch.isfinite(out.float()).all() and torch.isfinite(loss)
    for pname, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), pname
