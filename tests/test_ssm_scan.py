"""Our selective scans against an independent sequential evaluation of the recurrence.

The reference below is written from selective_scan_ref's documented semantics (mamba-ssm): a Python
loop over time in float64. Both CPU paths -- the fused C kernel (scan_kernel.py) and the PyTorch
chunked parallel scan it falls back to -- must match it to 1e-5 in float32, values and gradients,
for lengths that are not powers of two, span several chunks and end in a partial one.
"""
import time

import pytest
import torch
import torch.nn.functional as F

from diffzoo.models import mamba, scan_kernel
from diffzoo.models.mamba import linear_recurrence, selective_scan, selective_scan_torch

from conftest import require_fused_kernel


def sequential_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """deltaA = exp(delta*A), deltaB_u = delta*B*u, x = deltaA*x + deltaB_u, y = C.x (+ D*u) (* silu(z))."""
    u, delta, A, B, C = (v.double() for v in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    x = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A)
        x = decay * x + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y


def _inputs(length, batch=2, dim=6, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(batch, dim, length), delta=r(batch, dim, length) * 0.5,
                A=-torch.exp(r(dim, n)), B=r(batch, n, length), C=r(batch, n, length),
                D=r(dim), z=r(batch, dim, length), delta_bias=r(dim) * 0.5)


CASES = [  # (length, use D, use z, use delta_bias, softplus)
    (1, True, True, True, True),
    (7, False, False, False, True),
    (37, True, False, True, False),
    (100, False, True, False, True),
    (300, True, True, True, True),      # padded to 320, 5 halvings
    (1100, True, True, True, True),     # padded to 1152, 7 halvings
]


@pytest.mark.parametrize("min_chunk,keep", [(1 << 20, 1 << 30), (16, 1 << 30), (16, 0)],
                         ids=["one-chunk", "16-step-chunks", "16-step-chunks-recomputed"])
@pytest.mark.parametrize("length,use_d,use_z,use_bias,softplus", CASES)
def test_scan_matches_sequential_values_and_gradients(length, use_d, use_z, use_bias, softplus, min_chunk, keep,
                                                      monkeypatch, scan_path):
    monkeypatch.setattr(mamba, "CHUNK_ELEMENTS", 1)  # chunks of min_chunk steps (16: several, unequal ends)
    monkeypatch.setattr(mamba, "MIN_CHUNK", min_chunk)
    monkeypatch.setattr(mamba, "KEEP_ELEMENTS", keep)  # 0: the backward recomputes every chunk
    inp = _inputs(length)
    if not softplus:  # delta must stay positive without softplus
        inp["delta"] = inp["delta"].abs() + 0.01
        inp["delta_bias"] = inp["delta_bias"].abs()
    kwargs = dict(D=inp["D"] if use_d else None, z=inp["z"] if use_z else None,
                  delta_bias=inp["delta_bias"] if use_bias else None, delta_softplus=softplus)
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    ours_kw = {k: (leaves[k] if v is not None and k in leaves else v) for k, v in kwargs.items()}
    ref_kw = {k: (leaves[k].detach().double().requires_grad_() if v is not None and k in leaves else v)
              for k, v in kwargs.items()}
    ref_pos = {k: leaves[k].detach().double().requires_grad_() for k in ("u", "delta", "A", "B", "C")}

    y = selective_scan_torch(*(leaves[k] for k in ("u", "delta", "A", "B", "C")), **ours_kw)
    y_ref = sequential_selective_scan(*(ref_pos[k] for k in ("u", "delta", "A", "B", "C")), **ref_kw)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)

    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y * w).sum().backward()
    (y_ref * w.double()).sum().backward()
    for k in ("u", "delta", "A", "B", "C"):
        torch.testing.assert_close(leaves[k].grad.double(), ref_pos[k].grad, rtol=1e-5, atol=1e-5, msg=k)
    for k, v in ref_kw.items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(leaves[k].grad.double(), v.grad, rtol=1e-5, atol=1e-5, msg=k)


def test_scan_is_stable_for_strong_decay_and_long_sequences(monkeypatch, scan_path):
    monkeypatch.setattr(mamba, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(mamba, "MIN_CHUNK", 100)
    # Large steps: exp of cumulative sums of delta*A would be exp(-1e5); the linear-domain scan stays exact.
    inp = _inputs(2000, batch=1, dim=3, n=4, seed=3)
    delta = inp["delta"].abs() * 20 + 5
    y = selective_scan_torch(inp["u"], delta, inp["A"] * 10, inp["B"], inp["C"])
    y_ref = sequential_selective_scan(inp["u"], delta, inp["A"] * 10, inp["B"], inp["C"])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)


def test_linear_recurrence_against_loop_with_unit_decay():
    # a = 1 is a cumulative sum: an independent closed form.
    b = torch.randn(2, 3, 129, 4)
    h = linear_recurrence(torch.ones_like(b), b)
    torch.testing.assert_close(h, torch.cumsum(b, dim=-2), rtol=1e-5, atol=1e-5)


def test_dispatch_uses_cpu_path_without_cuda(scan_path):
    inp = _inputs(16)
    out = selective_scan(**inp, delta_softplus=True)
    torch.testing.assert_close(out.double(), sequential_selective_scan(**inp, delta_softplus=True),
                               rtol=1e-5, atol=1e-5)
    assert mamba.cuda_selective_scan() is None or torch.cuda.is_available()


def test_output_dtype_follows_input_and_scan_runs_in_float32(scan_path):
    inp = _inputs(50)
    u16 = inp["u"].bfloat16()
    y = selective_scan_torch(u16, inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], delta_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = sequential_selective_scan(u16.float(), inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"],
                                    delta_softplus=True)
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2)


def _channels_last(x):
    return x.transpose(1, 2)


@pytest.mark.parametrize("length,reverse", [(5, True), (64, False), (129, True), (300, False)])
def test_fused_kernel_reverse_and_strided_inputs_match_sequential(length, reverse):
    """The kernel's own interface: channel-last views with batch/time strides (B and C slices of one
    projection, as in the mixer; delta a transposed view), time run backwards for `reverse`."""
    require_fused_kernel()
    inp = _inputs(length, batch=3, dim=20, n=5, seed=length)
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    proj = torch.cat([_channels_last(leaves["B"]), _channels_last(leaves["C"])], dim=-1)  # (b, L, 2N)
    z = torch.cat([_channels_last(leaves["z"]), torch.zeros_like(_channels_last(leaves["z"]))], dim=-1)[..., :20]
    y = scan_kernel.fused_selective_scan(_channels_last(leaves["u"]).contiguous(), _channels_last(leaves["delta"]),
                                         leaves["A"], proj[..., :5], proj[..., 5:], leaves["D"], z, reverse=reverse,
                                         delta_bias=leaves["delta_bias"], delta_softplus=True)
    flip = (lambda x: x.flip(-1)) if reverse else (lambda x: x)  # noqa: E731
    ref = {k: v.detach().double().requires_grad_() for k, v in inp.items()}
    y_ref = flip(sequential_selective_scan(flip(ref["u"]), flip(ref["delta"]), ref["A"], flip(ref["B"]),
                                           flip(ref["C"]), ref["D"], flip(ref["z"]), ref["delta_bias"], True))
    torch.testing.assert_close(_channels_last(y).double(), y_ref, rtol=1e-5, atol=1e-5)
    w = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2))
    (_channels_last(y) * w).sum().backward()
    (y_ref * w.double()).sum().backward()
    for k in inp:
        torch.testing.assert_close(leaves[k].grad.double(), ref[k].grad, rtol=1e-5, atol=1e-5, msg=k)


def test_fused_kernel_threads_split_the_batch_with_equal_results():
    require_fused_kernel()
    inp = _inputs(150, batch=5, dim=16, n=4, seed=9)
    results = []
    threads = torch.get_num_threads()
    for n_threads in (1, 3):
        torch.set_num_threads(n_threads)
        try:
            leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
            y = selective_scan_torch(**leaves, delta_softplus=True)
            y.sum().backward()
        finally:
            torch.set_num_threads(threads)
        results.append([y.detach()] + [leaves[k].grad for k in sorted(leaves)])
    for one, three in zip(*results, strict=True):
        torch.testing.assert_close(three, one, rtol=1e-6, atol=1e-6)


def _loop_scan(u, delta, A, B, C, D, z, delta_bias):
    """selective_scan_ref's own structure in float32: precomputed deltaA / deltaB_u, loop over time."""
    delta = F.softplus(delta + delta_bias[:, None])
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        x = delta_a[:, :, t] * x + delta_b_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, t]))
    return (torch.stack(ys, dim=2) + u * D[:, None]) * F.silu(z)


def time_scan_against_loop(inp: dict) -> tuple[float, float]:
    """Best forward + backward seconds of the sequential loop (1 run) and of our scan (3 runs)."""
    def timed(fn, repeats):
        best = float("inf")
        for _ in range(repeats):
            leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
            start = time.perf_counter()
            fn(**leaves).sum().backward()
            best = min(best, time.perf_counter() - start)
        return best

    return timed(_loop_scan, 1), timed(lambda **kw: selective_scan_torch(**kw, delta_softplus=True), 3)


def test_parallel_scan_is_10x_faster_than_sequential_loop_at_1024_tokens():
    """Forward + backward (a training step's use), small widths to keep the loop's cost short."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI machines: intra-op threads waiting on each other distort timings
    try:
        t_loop, t_ours = time_scan_against_loop(_inputs(1024, batch=1, dim=8, n=16, seed=5))
    finally:
        torch.set_num_threads(threads)
    assert t_loop / t_ours >= 10, (t_loop, t_ours)


def test_fused_kernel_refuses_other_dtypes():
    require_fused_kernel()
    inp = _inputs(8, batch=1, dim=4, n=2)
    u = _channels_last(inp["u"]).double()
    with pytest.raises(TypeError, match="float32 CPU"):
        scan_kernel.fused_selective_scan(u, u.float(), inp["A"], _channels_last(inp["B"]), _channels_last(inp["C"]))


@pytest.mark.parametrize("env", [{"CC": "/nonexistent/cc"}, {"DIFFZOO_SCAN_KERNEL": "0"}], ids=["no-compiler", "off"])
def test_without_the_kernel_the_pytorch_scan_runs(env, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFZOO_KERNEL_DIR", str(tmp_path))  # nothing built there yet
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    scan_kernel.library.cache_clear()
    try:
        if "CC" in env:
            with pytest.warns(UserWarning, match="using the PyTorch scan"):
                assert not scan_kernel.available()
        assert not scan_kernel.available() and not mamba.use_fused_kernel(torch.zeros(1))
        inp = _inputs(40, seed=4)
        torch.testing.assert_close(selective_scan_torch(**inp, delta_softplus=True).double(),
                                   sequential_selective_scan(**inp, delta_softplus=True), rtol=1e-5, atol=1e-5)
    finally:
        scan_kernel.library.cache_clear()  # the next test builds (or finds) the real kernel again
