"""DiT-MoE: "Scaling Diffusion Transformers to 16 Billion Parameters" (Fei et al., 2024).

DiT blocks whose MLP is a sparse mixture of experts; everything else (patchify, adaLN-Zero, attention,
embedders, final layer) is DiT's, reused through `DiTBlock.make_mlp` and `DiT.block_class`.

The MoE layer (`SparseMoE`), as the authors' code (feizc/DiT-MoE, models.py) computes it:

- router: a bias-free Linear(d, E) (`gate.weight`), softmax over the E experts, top-k (k=2) experts
  per token, the selected softmax probabilities used as gates **without renormalisation**;
- routed experts: SwiGLU, down(silu(gate(x)) * up(x)), bias-free, hidden width `int(mlp_ratio * d)`
  = 4d (not the LLaMA-style 2/3 * 4d);
- one always-on shared SwiGLU expert of width `shared_expert_ratio * d` = 2d (the paper's
  "2 shared experts" of width d, fused);
- output = sum_j gate_j * expert_{e_j}(x) + shared(x), no token dropping, no capacity limit.

Widths, derived from papers.yaml: per block attention 4d^2, adaLN 6d^2, E experts 12d^2 each, shared
expert 6d^2, router E*d. With these widths every total and active count in papers.yaml is matched
within 2% (S/2-8E2A 199.3M total / 71.9M active vs 199M / 71M; XL/2-8E2A 4.17B / 1.49B vs 4.1B / 1.5B;
G/2-16E2A 16.50B / 3.18B vs 16.5B / 3.1B, the one exception at +2.6%: the paper's 3.1B reads as
3.18B truncated, as its S/2 "71M" is 71.9M truncated). An int(2/3 * 4d) width would give S/2 about
142M total, far from 199M.

Balance loss (per MoE layer, over all tokens of the batch): sum_i P_i * f_i, where P_i is the mean
router probability of expert i and f_i = E * (fraction of the N*T*k routing slots that chose expert
i); it is 1 for a uniform router and about E/k for a router collapsed onto one expert. The model's
`aux_loss()` is `balance_loss_coef * sum over layers` -- the authors' code adds every layer's
alpha-scaled loss to the objective (AddAuxiliaryLoss), i.e. a sum, not a mean.

Default `balance_loss_coef = 0.01`: the authors' code hard-wires alpha = 0.01 in MoEGate (train.py
does not override it), and that code trained the released checkpoints behind the reported FIDs; the
paper's text says 0.005. Pass `balance_loss_coef=0.005` for the paper's value.

Dispatch: the N*T*k (token, expert) slots are sorted by expert (stable argsort), the tokens gathered
in that order, and every expert's contiguous group is computed by one grouped matrix product per
projection (`torch.nn.functional.grouped_mm`, one kernel over all experts, no host sync) -- by
default on CUDA in bf16 on sm80+, its documented support; elsewhere (CPU, fp32/fp16, widths not
16-byte aligned) the same sorted groups are computed by one matmul per expert (a loop over the E
experts, never over tokens). `dispatch="grouped_mm"` forces grouped_mm (it also runs on CPU in
fp32/bf16). Only the selected experts are computed. Under autocast the gathered tokens are cast to
the autocast dtype first (grouped_mm is not on autocast's lists).

FLOP counting (`flops.count_macs`, "Gflops" = MACs at batch 1): torch's FlopCounterMode does not see
grouped_mm, and on the meta device the data-dependent grouping cannot run (the routed experts are
skipped there), so `SparseMoE.extra_macs` declares the routed-expert MACs: every token uses exactly k
experts, N*T*k*3*d*h MACs whatever the routing. The router (T*E*d), the shared expert (T*3*d*2d),
attention and everything else are counted by FlopCounterMode. The paper's Gflops column counts the
linear layers only: it leaves out the attention score and value products (2*T^2*d per block),
which the generic counter includes -- see tests/test_moe.py, where both are checked.

`inactive_params()` = (E - k) experts' parameters per layer, so `flops.active_params` gives the
parameters a token uses (the paper's "activated parameters").

Checkpoints: the authors' state_dicts (blocks.i.moe.experts.j.{gate,up,down}_proj.weight,
blocks.i.moe.gate.weight, blocks.i.moe.shared_experts.*) load directly: a load hook renames `moe` to
`mlp` and stacks the per-expert Linear weights into this module's (E, out, in) tensors. Their XL and
G files come from the flash-attention block (attn.Wqkv, attn.q_norm, attn.k_norm, attn.out_proj):
build those with `qk_norm=True` (layers.Attention maps the names). The released
checkpoints were trained with rectified flow (objective "rectified_flow", time_scale=1.0, see
diffusion/rectified_flow.py); sampling them with DDPM produces garbage/NaNs.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dit import DiT, DiTBlock
from .registry import register_family

# name -> (depth, hidden_size, num_heads); S/B/L/XL as DiT, G from the DiT-MoE paper / code.
DIT_MOE_CONFIGS = {
    "S": dict(depth=12, hidden_size=384, num_heads=6),
    "B": dict(depth=12, hidden_size=768, num_heads=12),
    "L": dict(depth=24, hidden_size=1024, num_heads=16),
    "XL": dict(depth=28, hidden_size=1152, num_heads=16),
    "G": dict(depth=40, hidden_size=1408, num_heads=16),
}
EXPERT_COUNTS = (8, 16)
DEFAULT_BALANCE_LOSS_COEF = 0.01
DISPATCH_MODES = ("auto", "grouped_mm", "loop")


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), bias-free: the shared expert (state_dict names of the authors' MoeMLP)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Bias-free linear scores -> softmax over experts (`weight` is (E, d), as the authors' MoEGate)."""

    def __init__(self, dim: int, num_experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's default, as MoEGate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight).float().softmax(dim=-1)


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored stacked in nn.Linear layout: gate_proj, up_proj (E, h, d), down_proj (E, d, h)."""

    def __init__(self, num_experts: int, dim: int, hidden: int):
        super().__init__()
        self.num_experts, self.dim, self.hidden = num_experts, dim, hidden
        self.gate_proj = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.up_proj = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden))
        for w in (self.gate_proj, self.up_proj, self.down_proj):
            for e in range(num_experts):  # xavier per expert, as DiT's init gives each nn.Linear expert
                nn.init.xavier_uniform_(w[e])

    def params_per_expert(self) -> int:
        return 3 * self.dim * self.hidden

    def grouped_mm_ok(self, x: torch.Tensor) -> bool:
        """Whether dispatch="auto" uses grouped_mm for x (16-byte aligned widths are required)."""
        if (self.dim * x.element_size()) % 16 or (self.hidden * x.element_size()) % 16:
            return False
        # CUDA: torch documents bf16 on sm80+. CPU: grouped_mm runs (and is tested) but with more
        # than one thread it was up to 100x slower than per-expert matmuls on small groups, so
        # "auto" takes the loop there.
        return x.device.type == "cuda" and x.dtype == torch.bfloat16 and \
            torch.cuda.get_device_capability(x.device) >= (8, 0)

    def forward(self, xs: torch.Tensor, counts: torch.Tensor, mode: str) -> torch.Tensor:
        """xs: (M, d) token rows sorted by expert, counts: (E,) rows per expert -> (M, d)."""
        w1, w3, w2 = (w.to(xs.dtype) for w in (self.gate_proj, self.up_proj, self.down_proj))
        if mode == "grouped_mm":
            offs = counts.cumsum(0).to(torch.int32)
            hid = F.silu(F.grouped_mm(xs, w1.transpose(1, 2), offs=offs))
            hid = hid * F.grouped_mm(xs, w3.transpose(1, 2), offs=offs)
            return F.grouped_mm(hid, w2.transpose(1, 2), offs=offs)
        outs = []
        for e, part in enumerate(xs.split(counts.tolist())):
            outs.append((F.silu(part @ w1[e].T) * (part @ w3[e].T)) @ w2[e].T)
        return torch.cat(outs)


class SparseMoE(nn.Module):
    """Top-k routed SwiGLU experts plus a shared SwiGLU expert (module docstring). Input (N, T, d)."""

    def __init__(self, dim: int, expert_hidden: int, num_experts: int = 8, top_k: int = 2,
                 shared_expert_ratio: float = 2.0, dispatch: str = "auto"):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in 1..num_experts={num_experts}, got {top_k}")
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}, got {dispatch!r}")
        self.num_experts, self.top_k, self.dispatch = num_experts, top_k, dispatch
        self.gate = Router(dim, num_experts)
        self.experts = GroupedExperts(num_experts, dim, expert_hidden)
        shared = int(shared_expert_ratio * dim)
        self.shared_experts = SwiGLU(dim, shared) if shared > 0 else None
        self.balance_loss: torch.Tensor | None = None  # of the last training forward (with grad)
        self.expert_load: torch.Tensor | None = None   # (E,) fraction of routing slots, last forward
        self._counted_by_matmuls = False
        self._register_load_state_dict_pre_hook(self._stack_per_expert_weights)

    def _mode(self, x: torch.Tensor) -> str:
        if self.dispatch != "auto":
            return self.dispatch
        return "grouped_mm" if self.experts.grouped_mm_ok(x) else "loop"

    def route(self, x: torch.Tensor):
        """x: (S, d) -> probabilities (S, E), gates (S, k) and expert indices (S, k)."""
        probs = self.gate(x)
        gates, idx = probs.topk(self.top_k, dim=-1)
        return probs, gates, idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        probs, gates, idx = self.route(h)
        flat = idx.reshape(-1)
        if h.is_meta:  # shapes only: routed-expert MACs are declared by extra_macs
            routed = torch.empty_like(h)
            self._counted_by_matmuls = False
        else:
            order = torch.argsort(flat, stable=True)
            counts = torch.bincount(flat, minlength=self.num_experts)
            xs = h[order // self.top_k]
            if torch.is_autocast_enabled(xs.device.type):  # grouped_mm is not on autocast's lists
                xs = xs.to(torch.get_autocast_dtype(xs.device.type))
            mode = self._mode(xs)
            ys = self.experts(xs, counts, mode)
            self._counted_by_matmuls = mode == "loop"
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            ys = ys[inverse].view(h.shape[0], self.top_k, -1)  # back to (token, slot) order
            routed = (ys * gates.unsqueeze(-1).to(ys.dtype)).sum(dim=1)
            self._record(probs, counts)
        if self.shared_experts is not None:
            routed = routed + self.shared_experts(h)
        return routed.reshape(shape)

    def _record(self, probs: torch.Tensor, counts: torch.Tensor) -> None:
        load = counts.float() / counts.sum()
        self.expert_load = load.detach()
        # sum_i P_i * f_i with f_i = E * load_i (load is not differentiable; P carries the gradient).
        self.balance_loss = (probs.mean(0) * load * self.num_experts).sum() if self.training else None

    def extra_macs(self, inputs, output) -> int:
        if self._counted_by_matmuls:
            return 0
        tokens = inputs[0].numel() // inputs[0].shape[-1]
        return tokens * self.top_k * self.experts.params_per_expert()

    def inactive_params(self) -> int:
        return (self.num_experts - self.top_k) * self.experts.params_per_expert()

    def _stack_per_expert_weights(self, state_dict, prefix, *args) -> None:
        """Accept the authors' per-expert Linear layout (experts.{j}.{gate,up,down}_proj.weight)."""
        for name in ("gate_proj", "up_proj", "down_proj"):
            keys = [f"{prefix}experts.{e}.{name}.weight" for e in range(self.num_experts)]
            if all(k in state_dict for k in keys):
                state_dict[f"{prefix}experts.{name}"] = torch.stack([state_dict.pop(k) for k in keys])


class DiTMoEBlock(DiTBlock):
    """DiT block (adaLN-Zero) whose MLP is a SparseMoE."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, num_experts: int = 8,
                 top_k: int = 2, shared_expert_ratio: float = 2.0, dispatch: str = "auto", qk_norm: bool = False):
        self._moe_kwargs = dict(num_experts=num_experts, top_k=top_k, shared_expert_ratio=shared_expert_ratio,
                                dispatch=dispatch)
        super().__init__(hidden_size, num_heads, mlp_ratio, qk_norm=qk_norm)
        self._register_load_state_dict_pre_hook(self._rename_authors_keys)

    def make_mlp(self, hidden_size: int, mlp_ratio: float) -> nn.Module:
        return SparseMoE(hidden_size, int(hidden_size * mlp_ratio), **self._moe_kwargs)

    @staticmethod
    def _rename_authors_keys(state_dict, prefix, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix + "moe.")]:
            state_dict[prefix + "mlp." + key[len(prefix) + 4:]] = state_dict.pop(key)


class SparseMoEModel:
    """Mixin for a Backbone with SparseMoE layers and a `balance_loss_coef`: the balance loss as the
    model's aux_loss and the expert load as aux_metrics (DiT-MoE, MoE-Mamba)."""

    balance_loss_coef: float

    def moe_layers(self) -> list[SparseMoE]:
        return [m for m in self.modules() if isinstance(m, SparseMoE)]

    def aux_loss(self) -> torch.Tensor | None:
        """balance_loss_coef * (sum over layers of the balance loss) of the last training forward."""
        losses = [m.balance_loss for m in self.moe_layers()]
        if self.balance_loss_coef == 0 or any(loss is None for loss in losses):
            return None
        return self.balance_loss_coef * torch.stack(losses).sum()

    def aux_metrics(self) -> dict[str, float]:
        """Expert load of the last forward: moe_load_e{j} (fraction of routing slots of expert j,
        averaged over layers), moe_load_max/min (busiest/idlest expert of any layer, times E: 1.0 =
        even), and moe_balance_loss (mean per-layer sum_i P_i f_i, 1.0 for a uniform router)."""
        loads = [m.expert_load for m in self.moe_layers()]
        if any(load is None for load in loads):
            return {}
        loads = torch.stack(loads)  # (depth, E)
        num_experts = loads.shape[1]
        out = {f"moe_load_e{j}": v for j, v in enumerate(loads.mean(0).tolist())}
        out["moe_load_max"] = loads.max().item() * num_experts
        out["moe_load_min"] = loads.min().item() * num_experts
        balance = [m.balance_loss for m in self.moe_layers()]
        if all(b is not None for b in balance):
            out["moe_balance_loss"] = torch.stack(balance).detach().mean().item()
        return out


class DiTMoE(SparseMoEModel, DiT):
    """DiT with sparse MoE MLPs. Arguments as DiT's, plus num_experts, top_k, shared_expert_ratio
    (shared expert width / hidden_size; 0 disables it), balance_loss_coef and dispatch
    ("auto", "grouped_mm" or "loop")."""

    block_class = DiTMoEBlock

    def __init__(self, num_experts: int = 8, top_k: int = 2, shared_expert_ratio: float = 2.0,
                 balance_loss_coef: float = DEFAULT_BALANCE_LOSS_COEF, dispatch: str = "auto", **dit_kwargs):
        super().__init__(num_experts=num_experts, top_k=top_k, shared_expert_ratio=shared_expert_ratio,
                         dispatch=dispatch, **dit_kwargs)
        self.balance_loss_coef = balance_loss_coef


def _variant(size: str, num_experts: int):
    """DiT-MoE-{size}/2-{E}E2A: its config as keyword defaults that create_model's overrides replace."""
    return functools.partial(DiTMoE, **DIT_MOE_CONFIGS[size], patch_size=2, num_experts=num_experts, top_k=2)


register_family("DiT-MoE", {f"DiT-MoE-{s}/2-{e}E2A": _variant(s, e) for s in DIT_MOE_CONFIGS for e in EXPERT_COUNTS},
                source=[__file__, str(Path(__file__).with_name("dit.py"))])
