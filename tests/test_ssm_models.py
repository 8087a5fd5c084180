"""DiS and DiffuSSM: sizes and costs against the papers (papers.yaml), structure, S4D against its recurrence."""
from pathlib import Path

import pytest
import torch
import yaml

from diffzoo.flops import count_macs, count_params, model_cost
from diffzoo.models import create_model, model_source_files
from diffzoo.models.diffussm import BiS4D
from test_ssm_mamba import one_thread  # noqa: F401  (autouse: single intra-op thread)

PAPERS = yaml.safe_load((Path("/work/shared/reference/papers.yaml")).read_text()) \
    if Path("/work/shared/reference/papers.yaml").exists() else None
DIS_PARAMS_M = {"S/2": 29.1, "B/2": 121.2, "M/2": 231.4, "L/2": 407.2, "H/2": 907.0}  # papers.yaml dis


def test_reference_numbers_are_the_papers_yaml_ones():
    if PAPERS is None:  # the copy in this file is what the tests below check against
        return
    assert PAPERS["dis"]["params_256_class_cond_p2"] == DIS_PARAMS_M
    assert PAPERS["diffussm"]["xl"]["params_approx"] == 673000000
    assert PAPERS["diffussm"]["xl"]["gflops_256"] == 280.3


@pytest.mark.parametrize("variant", sorted(DIS_PARAMS_M))
def test_dis_parameter_counts_match_paper_within_1_percent(variant):
    with torch.device("meta"):
        params = count_params(create_model(f"DiS-{variant}"))
    assert abs(params / (DIS_PARAMS_M[variant] * 1e6) - 1) < 0.01, params


def test_diffussm_xl_size_and_cost_match_paper():
    cost = model_cost("DiffuSSM-XL")
    assert abs(cost["params"] / 673e6 - 1) < 0.02, cost
    assert abs(cost["gflops"] / 280.3 - 1) < 0.05, cost
    # Also without the declared FFT / kernel MACs (in case the paper counted matrix products only).
    with torch.device("meta"):
        model = create_model("DiffuSSM-XL")
    declared = sum(m.extra_macs((torch.empty(1, 1024, 1152, device="meta"),), None)
                   for m in model.modules() if isinstance(m, BiS4D))
    assert abs((cost["gflops"] - declared / 1e9) / 280.3 - 1) < 0.05


def test_dis_cost_is_counted_on_the_meta_device():
    cost = model_cost("DiS-S/2")  # the scan's MACs declared by the mixers are part of it
    with torch.device("meta"):
        model = create_model("DiS-S/2")
    scan = sum(m.scan_macs(1, 2 + 256) for m in model.modules() if hasattr(m, "scan_macs"))
    assert scan == 25 * 3 * 2 * 736 * 258 * 16  # 25 blocks, 3 MACs, 2 directions, d_inner, tokens, d_state
    assert cost["gflops"] * 1e9 > scan


def test_dis_state_dict_uses_the_authors_names():
    model = create_model("DiS-S/2", input_size=8, hidden_size=32, depth=4, num_classes=10)
    keys = set(model.state_dict())
    for key in ["pos_embed", "patch_embed.proj.weight", "time_embed.0.weight", "time_embed.2.bias",
                "label_emb.embedding_table.weight", "in_blocks.1.mixer.A_b_log", "in_blocks.0.norm.weight",
                "mid_block.mixer.conv1d_b.weight", "out_blocks.1.skip_linear.weight", "norm_f.weight",
                "final_layer.linear.weight", "final_layer.adaLN_modulation.1.weight"]:
        assert key in keys, key
    assert len(model.in_blocks) == len(model.out_blocks) == 2
    assert model.pos_embed.shape == (1, 2 + 16, 32)
    assert model.label_emb.embedding_table.weight.shape == (11, 32)


@pytest.mark.parametrize("name,kwargs", [
    ("DiS-S/2", dict(hidden_size=32, depth=2)),
    ("DiS-B/4", dict(hidden_size=32, depth=2, learn_sigma=False)),
    ("DiffuSSM-S", dict(hidden_size=32, depth=2)),
    ("DiffuSSM-XL", dict(hidden_size=32, depth=1, learn_sigma=False)),
])
def test_tiny_models_forward_and_guidance(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, input_size=16, in_channels=3, num_classes=10, **kwargs)
    out_c = 6 if kwargs.get("learn_sigma", True) else 3
    assert (model.in_channels, model.out_channels, model.num_classes, model.input_size) == (3, out_c, 10, 16)
    x, t, y = torch.randn(4, 3, 16, 16), torch.randint(0, 1000, (4,)), torch.randint(0, 11, (4,))
    assert model(x, t, y).shape == (4, out_c, 16, 16)
    model.eval()
    guided = model.guided(cfg_scale=1.5)(x, t, y.clamp(max=9))
    assert guided.shape == (4, out_c, 16, 16) and torch.isfinite(guided).all()


def test_diffussm_fresh_model_outputs_zero_and_blocks_see_the_whole_sequence():
    torch.manual_seed(0)
    model = create_model("DiffuSSM-S", input_size=8, in_channels=2, num_classes=10, hidden_size=16, depth=1)
    x, t, y = torch.randn(1, 2, 8, 8), torch.tensor([5]), torch.tensor([1])
    assert torch.equal(model(x, t, y), torch.zeros(1, 4, 8, 8))  # adaLN-Zero
    block = model.blocks[0]
    with torch.no_grad():
        torch.nn.init.normal_(block.adaLN_modulation[1].weight, std=0.5)
        h = torch.randn(1, 64, 16)
        c = torch.randn(1, 16)
        base = block(h, c)
        for moved in (0, 63):  # first token reaches the last output and vice versa (bidirectional SSM)
            h2 = h.clone()
            h2[0, moved] += torch.randn(16)  # not a constant shift: LayerNorm would remove it
            other = 63 - moved
            assert (block(h2, c) - base)[0, other].abs().max() > 1e-6


@pytest.mark.parametrize("conv", ["fft", "direct", "auto"])
@pytest.mark.parametrize("init", ["lin", "legs"])
def test_bis4d_convolution_equals_its_recurrence(init, conv):
    """y = S4D by FFT, or by the Toeplitz matmul, vs the ZOH-discretised diagonal recurrence run token by
    token (complex128)."""
    torch.manual_seed(0)
    ssm = BiS4D(channels=3, d_state=8, init=init)
    ssm.conv = conv
    with torch.no_grad():
        ssm.log_dt.uniform_(-3, -1)
    u = torch.randn(2, 37, 3)
    y = ssm(u)
    y_fwd, y_bwd = y[:, :, 0], y[:, :, 1]

    def recurrence(direction, seq):
        dt = torch.exp(ssm.log_dt[direction].double())[:, None]
        A = torch.complex(-torch.exp(ssm.log_A_real[direction].double()), ssm.A_imag[direction].double())
        C = torch.view_as_complex(ssm.C[direction].double().contiguous())
        decay, gain = torch.exp(dt * A), (torch.exp(dt * A) - 1) / A
        state = torch.zeros(seq.shape[0], 3, A.shape[-1], dtype=torch.complex128)
        ys = []
        for k in range(seq.shape[1]):
            state = decay * state + gain * seq[:, k, :, None].double()
            ys.append(2 * (state * C).sum(-1).real + ssm.D[direction].double() * seq[:, k].double())
        return torch.stack(ys, dim=1)

    with torch.no_grad():
        torch.testing.assert_close(y_fwd.double(), recurrence(0, u), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(y_bwd.double(), recurrence(1, u.flip(1)).flip(1), rtol=1e-4, atol=1e-4)


def test_declared_macs_are_added_once_to_the_matmul_count():
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model("DiffuSSM-S", input_size=8, hidden_size=16, depth=2)
    x, t, y = (torch.zeros(1, 4, 8, 8, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"),
               torch.zeros(1, dtype=torch.long, device="meta"))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x, t, y)
    declared = sum(m.extra_macs((torch.empty(1, 64, 16, device="meta"),), None)
                   for m in model.modules() if isinstance(m, BiS4D))
    assert declared > 0
    assert count_macs(model) == counter.get_total_flops() // 2 + declared


def test_source_files_track_the_ssm_code():
    dis_files = {p.name for p in model_source_files("DiS-S/2")}
    assert {"dis.py", "mamba.py", "layers.py"} <= dis_files
    assert {"diffussm.py", "dit.py", "layers.py"} <= {p.name for p in model_source_files("DiffuSSM-XL")}


def test_bis4d_paths_have_the_same_gradients():
    """The direct path's gradients (its own batched-matmul backward) equal the FFT path's."""
    torch.manual_seed(0)
    ssm = BiS4D(channels=5, d_state=8)
    u = torch.randn(40, 24, 5, requires_grad=True)
    weight = torch.randn(40, 24, 2, 5)
    grads = {}
    for conv in ("fft", "direct"):
        ssm.conv = conv
        grads[conv] = torch.autograd.grad((ssm(u) * weight).sum(), [u, *ssm.parameters()])
    for a, b in zip(grads["fft"], grads["direct"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
