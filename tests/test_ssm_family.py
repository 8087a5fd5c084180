"""The Mamba family: VMamba's SS2D, MoE-Mamba, the Block-State Transformer, S4D-LegS, Vim's layout.

Every scan is checked against a plain Python loop over the sequence (the recurrence h = exp(dt A) h +
dt B x, y = C h + D x, in float64), values and gradients; SS2D's four directions are computed one by
one from the positions each visits, and a state_dict with exactly the authors' names and shapes
(MzeroMiko/VMamba classification/models/vmamba.py, SS2Dv0 / SS2Dv2) loads strictly.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffzoo.flops import count_macs, count_params, model_cost
from diffzoo.models import create_model, model_source_files
from diffzoo.models.bst import BlockAttention, BSTBlock, block_context
from diffzoo.models.diffussm import BiS4D, s4d_legs_modes
from diffzoo.models.dit_moe import SparseMoE
from diffzoo.models.mamba import Mamba, selective_scan_torch
from diffzoo.models.vmamba import SS2D
from test_ssm_mamba import one_thread  # noqa: F401  (autouse: single intra-op thread)
from test_ssm_scan import sequential_selective_scan


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every parameter off its init (zeros, ones) so that each one matters in the comparison."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


# ------------------------------------------------------------------------------ grouped selective scan
@pytest.mark.parametrize("groups,length", [(1, 23), (4, 37), (2, 130)])
def test_grouped_scan_matches_sequential_per_group(groups, length):
    """B, C of shape (batch, G, N, L): channel block g uses group g's B, C (mamba-ssm's grouped scan)."""
    g = torch.Generator().manual_seed(groups)
    batch, per_group, n = 2, 3, 4
    dim = groups * per_group
    u = torch.randn(batch, dim, length, generator=g, requires_grad=True)
    delta = (0.5 * torch.randn(batch, dim, length, generator=g)).requires_grad_()
    A = (-torch.exp(torch.randn(dim, n, generator=g))).requires_grad_()
    B = torch.randn(batch, groups, n, length, generator=g, requires_grad=True)
    C = torch.randn(batch, groups, n, length, generator=g, requires_grad=True)
    D = torch.randn(dim, generator=g, requires_grad=True)
    bias = (0.5 * torch.randn(dim, generator=g)).requires_grad_()
    ours = selective_scan_torch(u, delta, A, B, C, D, delta_bias=bias, delta_softplus=True)
    ref = torch.cat([sequential_selective_scan(u[:, s:s + per_group], delta[:, s:s + per_group],
                                               A[s:s + per_group], B[:, k], C[:, k], D[s:s + per_group],
                                               delta_bias=bias[s:s + per_group], delta_softplus=True)
                     for k, s in enumerate(range(0, dim, per_group))], dim=1)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(ref)
    inputs = (u, delta, A, B, C, D, bias)
    g_ours = torch.autograd.grad((ours * w.float()).sum(), inputs)
    g_ref = torch.autograd.grad((ref * w).sum(), inputs)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- SS2D
def authors_state_dict(forward_type: str, d_model: int, d_state: int, ssm_ratio: float, conv_bias: bool,
                       seed: int = 0) -> dict:
    """A state_dict with exactly the names and shapes of the authors' SS2D (vmamba.py at HEAD 2ed52ea):
    SS2Dv0.__initv0__ (d_conv fixed 3, conv bias, z branch) or SS2Dv2.__initv2__ with "_noz"."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: 0.3 * torch.randn(*s, generator=g)  # noqa: E731
    d_inner = int(ssm_ratio * d_model)
    rank = math.ceil(d_model / 16)
    k = 4
    sd = {"in_proj.weight": r(d_inner * (2 if forward_type == "v0" else 1), d_model),
          "conv2d.weight": r(d_inner, 1, 3, 3)}
    if conv_bias:
        sd["conv2d.bias"] = r(d_inner)
    sd.update({"x_proj_weight": r(k, rank + 2 * d_state, d_inner), "dt_projs_weight": r(k, d_inner, rank),
               "dt_projs_bias": r(k, d_inner) - 3.0, "A_logs": r(k * d_inner, d_state), "Ds": r(k * d_inner) + 1,
               "out_norm.weight": 1 + r(d_inner), "out_norm.bias": r(d_inner), "out_proj.weight": r(d_model, d_inner)})
    return sd


def direction_orders(height: int, width: int) -> list[list[tuple[int, int]]]:
    """The (row, column) positions each of the four scans visits, in order."""
    row_major = [(i, j) for i in range(height) for j in range(width)]
    col_major = [(i, j) for j in range(width) for i in range(height)]
    return [row_major, col_major, row_major[::-1], col_major[::-1]]


def reference_ss2d(sd: dict, x: torch.Tensor, forward_type: str, d_state: int) -> torch.Tensor:
    """SS2D computed with plain loops: each direction a Python loop over its positions (float64)."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    batch, height, width, _ = x.shape
    h = x @ sd["in_proj.weight"].t()
    if forward_type == "v0":
        h, z = h.chunk(2, dim=-1)
        z = F.silu(z)
    d_inner = h.shape[-1]
    h = F.conv2d(h.permute(0, 3, 1, 2), sd["conv2d.weight"], sd.get("conv2d.bias"), padding=1, groups=d_inner)
    h = F.silu(h)                                                           # (B, D, H, W)
    rank = sd["dt_projs_weight"].shape[-1]
    y = torch.zeros_like(h)
    for k, order in enumerate(direction_orders(height, width)):
        A = -torch.exp(sd["A_logs"][k * d_inner:(k + 1) * d_inner])        # (D, N)
        D = sd["Ds"][k * d_inner:(k + 1) * d_inner]
        state = torch.zeros(batch, d_inner, d_state, dtype=torch.float64)
        for i, j in order:
            u = h[:, :, i, j]                                               # (B, D)
            dbc = u @ sd["x_proj_weight"][k].t()
            dt, b, c = dbc[:, :rank], dbc[:, rank:rank + d_state], dbc[:, rank + d_state:]
            delta = F.softplus(dt @ sd["dt_projs_weight"][k].t() + sd["dt_projs_bias"][k])
            state = torch.exp(delta[..., None] * A) * state + delta[..., None] * b[:, None, :] * u[..., None]
            y[:, :, i, j] = y[:, :, i, j] + (state * c[:, None, :]).sum(-1) + D * u
    y = F.layer_norm(y.permute(0, 2, 3, 1), (d_inner,), sd["out_norm.weight"], sd["out_norm.bias"], eps=1e-5)
    if forward_type == "v0":
        y = y * z
    return y @ sd["out_proj.weight"].t()


SS2D_CASES = [  # forward_type, d_model, d_state, ssm_ratio, conv_bias, (H, W)
    ("v0", 16, 4, 2.0, True, (3, 5)),
    ("v05_noz", 16, 1, 2.0, False, (4, 4)),
    ("v05_noz", 24, 3, 1.5, True, (5, 3)),
]


@pytest.mark.parametrize("forward_type,d_model,d_state,ratio,conv_bias,hw", SS2D_CASES)
def test_ss2d_loads_the_authors_state_dict_and_equals_the_four_loops(forward_type, d_model, d_state, ratio,
                                                                       conv_bias, hw):
    torch.manual_seed(0)
    module = SS2D(d_model=d_model, d_state=d_state, ssm_ratio=ratio, d_conv=3, conv_bias=conv_bias,
                  forward_type=forward_type)
    sd = authors_state_dict(forward_type, d_model, d_state, ratio, conv_bias)
    module.load_state_dict(sd, strict=True)                 # exactly their names and shapes
    assert set(module.state_dict()) == set(sd)
    x = torch.randn(2, *hw, d_model, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape                               # channels-last in and out
    ref = reference_ss2d({k: v.clone().requires_grad_() for k, v in sd.items()}, x, forward_type, d_state)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)

    # Gradients: input and every parameter, against autograd through the loops.
    sd_ref = {k: v.clone().double().requires_grad_() for k, v in sd.items()}
    x_ref = x.detach().double().requires_grad_()
    ref = reference_ss2d(sd_ref, x_ref, forward_type, d_state)
    w = torch.randn_like(ref)
    (ref * w).sum().backward()
    (out * w.float()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=1e-4, atol=1e-5)
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad.double(), sd_ref[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_ss2d_channel_first_equals_channel_last():
    torch.manual_seed(0)
    last = SS2D(d_model=16, d_state=2, forward_type="v05_noz", conv_bias=False)
    first = SS2D(d_model=16, d_state=2, forward_type="v05_noz", conv_bias=False, channel_first=True)
    first.load_state_dict(last.state_dict(), strict=True)
    _perturb(last)
    first.load_state_dict(last.state_dict(), strict=True)
    x = torch.randn(2, 4, 6, 16)
    torch.testing.assert_close(first(x.permute(0, 3, 1, 2)), last(x).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-6)


def test_ss2d_refuses_what_the_authors_code_does_not_run_or_ignores():
    with pytest.raises(ValueError, match="'v2' does not run"):
        SS2D(d_model=16, forward_type="v2")
    with pytest.raises(ValueError, match="hard-codes"):
        SS2D(d_model=16, forward_type="v0", d_conv=4)  # their v0 would silently build a 3x3 conv
    with pytest.raises(ValueError, match="hard-codes"):
        SS2D(d_model=16, forward_type="v0", channel_first=True)


def test_ss2d_init_is_mamba_ssms():
    torch.manual_seed(0)
    m = SS2D(d_model=32, d_state=5, forward_type="v05_noz")
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    torch.testing.assert_close(m.A_logs.exp(), torch.arange(1, 6.0).repeat(4 * 64, 1))
    assert torch.equal(m.Ds, torch.ones(4 * 64))
    assert m.dt_projs_weight.abs().max() <= math.ceil(32 / 16) ** -0.5


# ------------------------------------------------------------------------------------------ S4D-LegS
def test_s4d_legs_modes_are_hippo_legs_normal_part():
    """Built here from HiPPO-LegS's definition (A and P separately), eigen-decomposed by numpy."""
    n = 10
    A = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            if i > k:
                A[i, k] = -math.sqrt(2 * i + 1) * math.sqrt(2 * k + 1)
            elif i == k:
                A[i, k] = -(i + 1)
    P = np.sqrt(np.arange(n) + 0.5)
    B = np.sqrt(2 * np.arange(n) + 1.0)
    eigvals, vectors = np.linalg.eig(A + np.outer(P, P))
    np.testing.assert_allclose(eigvals.real, -0.5, atol=1e-9)
    keep = np.argsort(eigvals.imag)[n // 2:]
    w, b = s4d_legs_modes(n, b_clip=1e9)  # unclipped: |B| does not depend on the eigenvectors' phases
    np.testing.assert_allclose(np.sort(w.numpy()), eigvals.imag[keep], rtol=1e-9)
    np.testing.assert_allclose(np.sort(b.abs().numpy()), np.sort(np.abs(np.linalg.solve(vectors, B))[keep]),
                               rtol=1e-7)


def test_s4d_legs_clips_b_as_the_official_init():
    """state-spaces/s4 (hippo.nplr('legs', N, B_clip=2.0) at e757cef) clips the imaginary part of B to
    [-2, 2]: there sum |B|^2 is 74.9 at N = 64 (measured with the official code, issue 26), 2048
    unclipped (sum of 2n+1 over the kept half). The real parts are the unclipped ones."""
    w, b = s4d_legs_modes(64)
    _, free = s4d_legs_modes(64, b_clip=1e9)
    assert abs(float((b.abs() ** 2).sum()) - 74.9) < 0.05
    assert abs(float((free.abs() ** 2).sum()) - 2048) < 1e-6
    assert float(b.imag.abs().max()) <= 2.0 and torch.equal(b.real, free.real)
    assert bool((w > 0).all()) and bool((w[:-1] > w[1:]).all())  # the official order: w descending


@pytest.mark.parametrize("init", ["lin", "legs"])
def test_bis4d_inits(init):
    ssm = BiS4D(channels=2, d_state=8, init=init)
    expected = math.pi * torch.arange(4.0) if init == "lin" else s4d_legs_modes(8)[0].float()
    torch.testing.assert_close(ssm.A_imag[0, 0], expected)
    torch.testing.assert_close(-torch.exp(ssm.log_A_real), torch.full((2, 2, 4), -0.5))
    with pytest.raises(ValueError, match="init"):
        BiS4D(channels=2, init="inv")


# --------------------------------------------------------------------------------- Block-State Transformer
def test_bst_context_is_the_neighbouring_blocks_ssm_outputs():
    f, b = torch.randn(2, 12, 3), torch.randn(2, 12, 3)
    ctx = block_context(f, b, 4)
    assert ctx.shape == (2, 3, 8, 3)
    for i in range(3):
        before = f[:, 4 * (i - 1):4 * i] if i > 0 else torch.zeros(2, 4, 3)
        after = b[:, 4 * (i + 1):4 * (i + 2)] if i < 2 else torch.zeros(2, 4, 3)
        assert torch.equal(ctx[:, i], torch.cat([before, after], dim=1))


def reference_bst_block(block: BSTBlock, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The BST-SH layer with a Python loop over blocks and heads and a plain softmax."""
    n, length, d = x.shape
    w, heads = block.block_size, block.attn.num_heads
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=1)
    h = F.layer_norm(x, (d,), eps=1e-6) * (1 + scale1[:, None]) + shift1[:, None]
    y_f, y_b = block.ssm(h).unbind(2)
    attn = []
    for i in range(length // w):
        tokens = h[:, i * w:(i + 1) * w]
        before = y_f[:, (i - 1) * w:i * w] if i > 0 else torch.zeros(n, w, d)
        after = y_b[:, (i + 1) * w:(i + 2) * w] if i < length // w - 1 else torch.zeros(n, w, d)
        q = block.attn.q(tokens)
        k, v = block.attn.kv(torch.cat([before, after, tokens], dim=1)).chunk(2, dim=-1)
        heads_out = []
        for hd in range(heads):
            sl = slice(hd * d // heads, (hd + 1) * d // heads)
            weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d // heads), dim=-1)
            heads_out.append(weights @ v[..., sl])
        attn.append(block.attn.proj(torch.cat(heads_out, dim=-1)))
    out = x + gate1[:, None] * torch.cat(attn, dim=1)
    return out + gate2[:, None] * block.mlp(F.layer_norm(out, (d,), eps=1e-6) * (1 + scale2[:, None]) + shift2[:, None])


def test_bst_block_equals_a_per_block_loop():
    """Every block's tokens attend (plain softmax, per head) to [previous block's forward S4D outputs,
    next block's backward S4D outputs, its own tokens]; the S4D outputs' own recurrence is checked in
    test_ssm_models. Values and gradients (input and every parameter)."""
    torch.manual_seed(0)
    block = BSTBlock(8, 2, block_size=3, d_state=4)
    _perturb(block, 0.3)
    x, c = torch.randn(2, 9, 8, requires_grad=True), torch.randn(2, 8)
    out, ref = block(x, c), reference_bst_block(block, x, c)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(out)
    params = [x, *block.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bst_far_blocks_talk_only_through_the_ssm():
    torch.manual_seed(0)
    block = BSTBlock(8, 2, block_size=4, d_state=4)
    _perturb(block, 0.3)
    x, c = torch.randn(1, 16, 8), torch.randn(1, 8)
    x2 = x.clone()
    x2[0, 0] += torch.randn(8)
    assert (block(x2, c) - block(x, c))[0, 12:].abs().max() > 1e-6      # block 0 reaches block 3 ...
    with torch.no_grad():
        block.ssm.C.zero_()
        block.ssm.D.zero_()
    assert (block(x2, c) - block(x, c))[0, 4:].abs().max() == 0         # ... only through the SSM


def test_block_attention_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        BlockAttention(10, 3)
    block = BSTBlock(8, 2, block_size=5)
    with pytest.raises(ValueError, match="blocks of 5"):
        block(torch.randn(1, 16, 8), torch.randn(1, 8))


# ----------------------------------------------------------------------------------------- MoE-Mamba
def test_moe_mamba_interleaves_bidirectional_mamba_and_moe_layers():
    torch.manual_seed(0)
    model = create_model("MoE-Mamba-S/2", input_size=8, in_channels=1, num_classes=10, hidden_size=32, depth=3,
                         d_state=4)
    calls = []
    for m in model.modules():
        if isinstance(m, (Mamba, SparseMoE)):
            m.register_forward_hook(lambda mod, *_: calls.append(type(mod).__name__))
    model.train()
    x, t, y = torch.randn(4, 1, 8, 8), torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,))
    model(x, t, y)
    assert calls == ["Mamba", "SparseMoE"] * 3
    mixers = [m for m in model.modules() if isinstance(m, Mamba)]
    assert all(m.bimamba_type == "v2" and m.divide_out for m in mixers)
    moes = model.moe_layers()
    assert len(moes) == 3 and all(m.top_k == 1 and m.num_experts == 8 and m.shared_experts is None for m in moes)
    loss = model.aux_loss()
    assert loss is not None and loss.requires_grad
    torch.testing.assert_close(loss, 0.01 * sum(m.balance_loss for m in moes))
    assert set(model.aux_metrics()) >= {"moe_load_max", "moe_balance_loss"}
    # mamba-ssm's dt init survives DiT's global init (which zeroes Linear biases)
    for m in mixers:
        dt = F.softplus(m.dt_proj.bias)
        assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    with torch.device("meta"):
        meta = create_model("MoE-Mamba-S/2", input_size=8, in_channels=1, hidden_size=32, depth=3)
    cost = model_cost("MoE-Mamba-S/2", input_size=8, in_channels=1, hidden_size=32, depth=3)
    assert cost["active_params"] == count_params(meta) - 3 * 7 * 3 * 32 * 128  # 7 of 8 experts idle per token


# ----------------------------------------------------------------------------------------- Vim's layout
def test_dis_middle_tokens_sit_at_half_the_patches():
    torch.manual_seed(0)
    model = create_model("DiS-S/2", input_size=8, in_channels=1, num_classes=10, hidden_size=16, depth=2,
                         token_position="middle", divide_out=True, drop_path_rate=0.0)
    with torch.no_grad():
        model.pos_embed.normal_()
    seen = {}
    model.in_blocks[0].register_forward_pre_hook(lambda mod, args: seen.update(h=args[0]))
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 500]), torch.tensor([1, 7])
    out = model.eval()(x, t, y)
    assert out.shape == (2, 2, 8, 8)
    patches = model.patch_embed(x)
    label = model.label_emb(y, False)
    hidden = seen["h"] - model.pos_embed
    torch.testing.assert_close(hidden[:, :8], patches[:, :8])
    torch.testing.assert_close(hidden[:, 8], label)                           # label token at M // 2 = 8
    torch.testing.assert_close(hidden[:, 10:], patches[:, 8:])                # then time, then the rest
    assert all(b.mixer.divide_out for b in model.in_blocks)
    with pytest.raises(ValueError, match="token_position"):
        create_model("DiS-S/2", input_size=8, hidden_size=16, depth=2, token_position="end")


# --------------------------------------------------------------------------------- every new backbone
NEW = [
    ("VMamba-S/2", dict(hidden_size=32, depth=2)),
    ("VMamba-B/4", dict(hidden_size=32, depth=2, forward_type="v0", d_state=4, mlp_ratio=0.0)),
    ("MoE-Mamba-S/2", dict(hidden_size=32, depth=2, d_state=4)),
    ("BST-S/2", dict(hidden_size=32, depth=2, num_heads=4, block_size=4)),
    ("BST-L/4", dict(hidden_size=32, depth=1, num_heads=2, s4d_init="legs")),
    ("DiffuSSM-S", dict(hidden_size=32, depth=1, s4d_init="legs")),
]


@pytest.mark.parametrize("name,kwargs", NEW)
def test_new_backbones_forward_guidance_checkpointing_and_cost(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, input_size=16, in_channels=3, num_classes=10, **kwargs)
    x, t, y = torch.randn(4, 3, 16, 16), torch.randint(0, 1000, (4,)), torch.randint(0, 10, (4,))
    assert torch.equal(model(x, t, y), torch.zeros(4, 6, 16, 16))              # adaLN-Zero: a fresh model is 0
    _perturb(model)
    model.train()
    losses = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        model.set_grad_checkpointing(ckpt)
        model.zero_grad()
        out = model(x, t, y)
        out.pow(2).mean().backward()
        losses.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*losses, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    model.eval()
    guided = model.guided(cfg_scale=1.5)(x, t, y)
    assert guided.shape == (4, 6, 16, 16) and torch.isfinite(guided).all()
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        meta = create_model(name, input_size=16, in_channels=3, num_classes=10, **kwargs)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta.eval()(*(v.to("meta") for v in (x[:1], t[:1], y[:1])))
    declared = count_macs(meta) - counter.get_total_flops() // 2
    assert declared > 0                                                         # the scan / FFT work is counted
    assert {"layers.py", "dit.py"} <= {p.name for p in model_source_files(name)}


def test_declared_ss2d_macs_are_its_scan():
    with torch.device("meta"):
        model = create_model("VMamba-S/2", input_size=8, in_channels=1, hidden_size=16, depth=2, d_state=3)
    ss2d = [m for m in model.modules() if isinstance(m, SS2D)]
    assert ss2d[0].scan_macs(1, 16) == 3 * 4 * 32 * 16 * 3
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 1, 8, 8, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"),
                     torch.zeros(1, dtype=torch.long, device="meta"))
    assert count_macs(model) == counter.get_total_flops() // 2 + 2 * ss2d[0].scan_macs(1, 16)


def test_families_register_sizes_and_sources():
    from diffzoo.models import list_models
    names = set(list_models())
    for family in ("VMamba", "MoE-Mamba", "BST"):
        assert {f"{family}-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4)} <= names
    assert "vmamba.py" in {p.name for p in model_source_files("VMamba-XL/2")}
    assert {"moe_mamba.py", "mamba.py", "dit_moe.py"} <= {p.name for p in model_source_files("MoE-Mamba-XL/2")}
    assert {"bst.py", "diffussm.py"} <= {p.name for p in model_source_files("BST-XL/2")}
