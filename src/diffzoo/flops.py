"""Model cost: multiply-accumulates per forward at batch 1 (the DiT paper's "Gflops") and parameters.

One counter for every backbone, not a formula per model: the forward runs on the meta device (no
memory, no arithmetic) under torch's FlopCounterMode, which counts matrix products, convolutions and
attention (2 flops per MAC; we report MACs as the DiT paper does). Elementwise work (norms,
activations, modulation) is not counted, as in the paper's fvcore count.

Computation that is not a matrix product or convolution -- a selective scan, an FFT convolution --
is invisible to FlopCounterMode. A module that does such work declares it with a method
`extra_macs(inputs: tuple, output) -> int`; the counter calls it from a forward hook and adds it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .models import create_model


def example_inputs(model: nn.Module, batch: int = 1, device: str | torch.device = "meta"):
    """(x, t, y) for any registered backbone: latents of the model's size, timestep 0, label 0."""
    x = torch.zeros(batch, model.in_channels, model.input_size, model.input_size, device=device)
    t = torch.zeros(batch, dtype=torch.long, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    return x, t, y


def count_macs(model: nn.Module, batch: int = 1, inputs=None) -> int:
    """Multiply-accumulates of one forward of `model` on `inputs` (default: example_inputs at `batch`,
    on the model's device, so a model built under `torch.device("meta")` costs nothing to count)."""
    device = next(model.parameters()).device
    inputs = inputs if inputs is not None else example_inputs(model, batch, device)
    extra = [0]
    hooks = []
    for module in model.modules():
        if hasattr(module, "extra_macs"):
            def hook(mod, args, out):
                extra[0] += int(mod.extra_macs(args, out))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return counter.get_total_flops() // 2 + extra[0]


def count_params(model: nn.Module) -> int:
    """sum(p.numel()) over parameters, frozen ones included (DiT counts its fixed pos_embed)."""
    return sum(p.numel() for p in model.parameters())


def active_params(model: nn.Module) -> int:
    """Parameters used per token: the total, less what sparse layers leave unused (MoE declares it by
    an `inactive_params()` method)."""
    unused = sum(int(m.inactive_params()) for m in model.modules() if hasattr(m, "inactive_params"))
    return count_params(model) - unused


def model_cost(name: str, **overrides) -> dict:
    """Parameters (total, active) and forward Gflops (MACs / 1e9, batch 1) of a registered model,
    built on the meta device so even the largest configuration costs nothing to count."""

    with torch.device("meta"):
        model = create_model(name, **overrides)
    return {"params": count_params(model), "active_params": active_params(model),
            "gflops": count_macs(model) / 1e9}
