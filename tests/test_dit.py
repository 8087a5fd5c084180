"""DiT against the paper's numbers and an independent re-statement of the official computation."""
import math

import numpy as np
import pytest
import torch

from diffzoo.checkpoints import load_weights, read_state_dict
from diffzoo.errors import DiffzooError
from diffzoo.flops import model_cost
from diffzoo.models import create_model
from diffzoo.report.published import load_papers

PAPERS = load_papers()
CONFIGS = list(PAPERS["dit"]["params_256"])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_param_counts_equal_official_code(cfg):
    assert model_cost(f"DiT-{cfg}")["params"] == PAPERS["dit"]["params_256"][cfg]


def test_param_count_xl2_512():
    assert model_cost("DiT-XL/2", input_size=64)["params"] == PAPERS["dit"]["params_512"]["XL/2"]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_gflops_reproduce_table4(cfg):
    # Table 4 prints two decimals: S/8's 0.358 appears as 0.36 (0.56% off by rounding alone), so the
    # bound is 0.5% or half a unit of the printed last digit, whichever is larger.
    published = PAPERS["dit"]["table4_256"][cfg]["gflops"]
    ours = model_cost(f"DiT-{cfg}")["gflops"]
    assert abs(ours - published) <= max(0.005 * published, 0.005)


def test_gflops_xl2_512():
    assert model_cost("DiT-XL/2", input_size=64)["gflops"] == pytest.approx(PAPERS["dit"]["xl2_512_gflops"], rel=0.005)


def test_gflops_counter_matches_closed_form():
    # facts.md: per block 12*T*d^2 + 2*T^2*d + 6*d^2, plus patch conv, t-MLP and final layer.
    d, depth, p, c, t_tokens = 384, 12, 2, 4, 256
    blocks = depth * (12 * t_tokens * d * d + 2 * t_tokens**2 * d + 6 * d * d)
    embed = t_tokens * (c * p * p) * d + 256 * d + d * d
    final = 2 * d * d + t_tokens * d * (p * p * 2 * c)
    assert model_cost("DiT-S/2")["gflops"] * 1e9 == pytest.approx(blocks + embed + final, rel=1e-9)


def test_fresh_model_outputs_exactly_zero():
    torch.manual_seed(0)
    model = create_model("DiT-S/4", input_size=16)
    out = model(torch.randn(3, 4, 16, 16), torch.tensor([0, 500, 999]), torch.tensor([1, 2, 1000]))
    assert out.shape == (3, 8, 16, 16)
    assert torch.count_nonzero(out) == 0


# ---- official checkpoint layout ---------------------------------------------------------------------
def official_xl2_shapes(input_size=32, depth=28, d=1152, c=4, p=2, classes=1000):
    """Key -> shape of facebookresearch/DiT's DiT-XL/2 state_dict, written out from facts.md."""
    t = (input_size // p) ** 2
    shapes = {
        "pos_embed": (1, t, d),
        "x_embedder.proj.weight": (d, c, p, p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (classes + 1, d),
        "final_layer.linear.weight": (p * p * 2 * c, d), "final_layer.linear.bias": (p * p * 2 * c,),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
            b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,),
            b + "adaLN_modulation.1.weight": (6 * d, d), b + "adaLN_modulation.1.bias": (6 * d,),
        })
    return shapes


def test_official_xl2_key_list_loads_strictly():
    shapes = official_xl2_shapes()
    assert len(shapes) == 292
    with torch.device("meta"):
        model = create_model("DiT-XL/2")
    own = model.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == shapes
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    model.load_state_dict(sd, strict=True, assign=True)


def test_mismatched_state_dict_gives_one_clear_error():
    model = create_model("DiT-S/8", input_size=16)
    sd = model.state_dict()
    sd.pop("final_layer.linear.bias")
    sd["pos_embed"] = torch.zeros(1, 5, 384)
    with pytest.raises(DiffzooError, match=r"1 missing: final_layer.linear.bias.*wrong shape: pos_embed"):
        load_weights(model, sd, "test.pt")


def test_truncated_or_foreign_file_gives_clear_error(tmp_path):
    model = create_model("DiT-S/8", input_size=16)
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(DiffzooError, match="not a readable checkpoint"):
        read_state_dict(truncated)
    foreign = tmp_path / "list.pt"
    torch.save([1, 2, 3], foreign)
    with pytest.raises(DiffzooError, match="does not hold a state_dict"):
        read_state_dict(foreign)
    with pytest.raises(DiffzooError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pt")
    assert read_state_dict(good).keys() == model.state_dict().keys()


def test_import_checkpoint_cli(tmp_path, capsys):
    from diffzoo.cli import main

    model = create_model("DiT-S/8", input_size=16)
    src = tmp_path / "official.pt"
    torch.save(model.state_dict(), src)
    out = tmp_path / "imported.safetensors"
    assert main(["import-checkpoint", str(src), "--out", str(out), "--model", "DiT-S/8", "--input-size", "16"]) == 0
    from diffzoo.checkpoints import load_model
    again = load_model(out)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    assert main(["import-checkpoint", str(src), "--out", str(out), "--model", "DiT-S/8", "--input-size", "16",
                 "--sha256", "0" * 64]) == 2
    assert "differs from the expected" in capsys.readouterr().err


# ---- an independent statement of the official forward --------------------------------------------
def reference_pos_embed(d, grid):
    """Official layout written out directly: channel block [0, d/2) encodes the column index with
    [sin, cos], block [d/2, d) the row index; omega_i = 1/10000^(i/(d/4))."""
    out = np.zeros((grid * grid, d))
    quarter = d // 4
    for row in range(grid):
        for col in range(grid):
            tok = row * grid + col
            for i in range(quarter):
                w = 1.0 / 10000 ** (i / quarter)
                out[tok, i] = math.sin(col * w)
                out[tok, quarter + i] = math.cos(col * w)
                out[tok, 2 * quarter + i] = math.sin(row * w)
                out[tok, 3 * quarter + i] = math.cos(row * w)
    return torch.tensor(out, dtype=torch.float32)


def reference_forward(sd, x, t, y, depth, heads, p):
    """The official DiT forward, from facts.md, with explicit attention and patch extraction."""
    n, c, h, _ = x.shape
    g = h // p
    patches = x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c * p * p)
    tok = patches @ sd["x_embedder.proj.weight"].reshape(-1, c * p * p).T + sd["x_embedder.proj.bias"]
    d = tok.shape[-1]
    tok = tok + reference_pos_embed(d, g)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    args = t.float()[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    silu = torch.nn.functional.silu
    temb = silu(temb @ sd["t_embedder.mlp.0.weight"].T + sd["t_embedder.mlp.0.bias"])
    temb = temb @ sd["t_embedder.mlp.2.weight"].T + sd["t_embedder.mlp.2.bias"]
    cond = temb + sd["y_embedder.embedding_table.weight"][y]

    def ln(z):
        mu = z.mean(-1, keepdim=True)
        var = ((z - mu) ** 2).mean(-1, keepdim=True)
        return (z - mu) / torch.sqrt(var + 1e-6)

    def lin(z, name):
        return z @ sd[name + ".weight"].T + sd[name + ".bias"]

    for i in range(depth):
        b = f"blocks.{i}."
        mod = lin(silu(cond), b + "adaLN_modulation.1")
        sh1, sc1, g1, sh2, sc2, g2 = [mod[:, k * d:(k + 1) * d, None].transpose(1, 2) for k in range(6)]
        a = ln(tok) * (1 + sc1) + sh1
        qkv = lin(a, b + "attn.qkv")
        q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        hd = d // heads
        split = lambda z, hd=hd: z.reshape(n, -1, heads, hd).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd), -1) @ split(v)
        tok = tok + g1 * lin(att.transpose(1, 2).reshape(n, -1, d), b + "attn.proj")
        m = ln(tok) * (1 + sc2) + sh2
        h = lin(m, b + "mlp.fc1")
        gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        tok = tok + g2 * lin(gelu, b + "mlp.fc2")
    mod = lin(silu(cond), "final_layer.adaLN_modulation.1")
    shift, scale = mod[:, None, :d], mod[:, None, d:]
    out = lin(ln(tok) * (1 + scale) + shift, "final_layer.linear")  # (n, T, p*p*C_out)
    c_out = out.shape[-1] // (p * p)
    out = out.reshape(n, g, g, p, p, c_out).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(n, c_out, g * p, g * p)


def randomized(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "pos_embed":
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return model


@pytest.mark.parametrize("p", [2, 4])
def test_forward_equals_official_computation(p):
    model = randomized(create_model(f"DiT-S/{p}", input_size=16, depth=2, hidden_size=64, num_heads=4)).eval()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert torch.allclose(sd["pos_embed"][0], reference_pos_embed(64, 16 // p), atol=1e-6)
    torch.manual_seed(1)
    x = torch.randn(3, 4, 16, 16)
    t = torch.tensor([0, 37, 999])
    y = torch.tensor([5, 999, 1000])
    ours = model(x, t, y)
    ref = reference_forward(sd, x, t, y, depth=2, heads=4, p=p)
    assert ours.shape == ref.shape == (3, 8, 16, 16)
    assert ours.abs().max() > 0.1
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("guidance,n_guided", [("legacy3", 3), ("all", 4)])
def test_guidance_channels(guidance, n_guided):
    model = randomized(create_model("DiT-S/4", input_size=8, depth=1, hidden_size=32, num_heads=2)).eval()
    x = torch.randn(2, 4, 8, 8)
    x2 = torch.cat([x, x])
    t = torch.tensor([10, 20, 10, 20])
    y = torch.tensor([1, 2, 1000, 1000])
    scale = 4.0
    plain = model(x2, t, y)
    guided = model.forward_with_cfg(x2, t, y, scale, guidance=guidance)
    cond, uncond = plain[:2], plain[2:]
    expected_guided = uncond[:, :n_guided] + scale * (cond[:, :n_guided] - uncond[:, :n_guided])
    assert torch.allclose(guided[:2, :n_guided], expected_guided, atol=1e-5)
    assert torch.allclose(guided[2:, :n_guided], expected_guided, atol=1e-5)
    # Channels past the guided ones pass through unguided (the conditional half keeps its own).
    assert torch.allclose(guided[:, n_guided:], plain[:, n_guided:])
    fn = model.guided(scale, guidance)
    assert torch.allclose(fn(x, t[:2], y[:2]), guided[:2], atol=1e-6)


def test_labels_dropped_only_in_training():
    model = create_model("DiT-S/8", input_size=16, class_dropout_prob=0.5)
    y = torch.arange(1000)
    emb = model.y_embedder
    torch.manual_seed(0)
    dropped = (emb.token_drop(y) == 1000).float().mean()
    assert 0.45 < dropped < 0.55
    assert torch.equal(emb(y, train=False), emb.embedding_table(y))


@pytest.mark.parametrize("name,kw", [("DiT-S/4", {"num_heads": 2}), ("DiS-S/4", {"drop_path_rate": 0.0}),
                                     ("DiffuSSM-S", {}), ("DiT-MoE-S/2-8E2A", {"num_heads": 2})])
def test_activation_checkpointing_gives_the_same_gradients(name, kw):
    def grads(checkpointing):
        torch.manual_seed(0)
        model = create_model(name, input_size=8, in_channels=3, num_classes=10, hidden_size=32, depth=2, **kw)
        randomized(model)
        model.set_grad_checkpointing(checkpointing)
        out = model(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 700]),
                    torch.tensor([1, 2]))
        loss = out.square().mean()
        aux = model.aux_loss()
        (loss + (aux if aux is not None else 0)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], atol=1e-6, rtol=1e-5), n
