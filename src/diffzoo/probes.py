"""Measurements of backbones beyond their samples, for the claims report (`diffzoo claims`):

- `routing_counts`: a trained MoE model samples images of every class with its own sampler, and every
  MoE layer's top-k expert choices are counted per class, sampling step, token position and expert
  (forward hooks on the routers; the timestep is the one the backbone is called with). DiT-MoE's heat
  maps of expert choice against class, timestep and position are drawn from these counts.
- `cost_curve`: forward Gflops (the counter of flops.py) and measured CPU forward time of a backbone
  as the latent side grows, at batch 1, for the attention-free against attention claim.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .flops import model_cost
from .models import create_model


def routing_counts(model, objective, num_classes: int, per_class: int, seed: int = 0,
                   batch_size: int = 100) -> dict:
    """{"counts": (layers, classes, steps, positions, experts) int array, "timesteps": the model's t per
    step, "top_k"}: expert choices of every token of `per_class` samples of each class."""
    layers = model.moe_layers()
    if not layers:
        raise ValueError(f"{type(model).__name__} has no MoE layers to count")
    experts, top_k = layers[0].num_experts, layers[0].top_k
    seen: dict[float, int] = {}                      # the model's timestep -> step index, in call order
    now: dict = {}
    counts: dict[tuple[int, int], np.ndarray] = {}   # (layer, step) -> (classes, positions, experts)

    def before(_module, args, kwargs):
        t = kwargs.get("t", args[1] if len(args) > 1 else None)
        y = kwargs.get("y", args[2] if len(args) > 2 else None)
        value = float(t.reshape(-1)[0])
        now["step"] = seen.setdefault(value, len(seen))
        now["y"] = y.cpu().numpy()

    def counter(layer: int):
        def hook(_module, _inputs, probs):
            n = len(now["y"])
            idx = probs.topk(top_k, dim=-1).indices.reshape(n, -1, top_k).cpu().numpy()  # (N, T, k)
            tokens = idx.shape[1]
            table = counts.setdefault((layer, now["step"]), np.zeros((num_classes, tokens, experts), np.int64))
            np.add.at(table, (np.broadcast_to(now["y"][:, None, None], idx.shape),
                              np.broadcast_to(np.arange(tokens)[None, :, None], idx.shape), idx), 1)
        return hook

    handles = [model.register_forward_pre_hook(before, with_kwargs=True)]
    handles += [m.gate.register_forward_hook(counter(i)) for i, m in enumerate(layers)]
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    gen = torch.Generator().manual_seed(seed)
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(labels), batch_size):
                y = labels[start:start + batch_size]
                noise = torch.randn((len(y), model.in_channels, model.input_size, model.input_size), generator=gen)
                objective.sample(lambda x, t, y: model(x, t, y), noise, {"y": y})
    finally:
        for h in handles:
            h.remove()
    steps, tokens = len(seen), next(iter(counts.values())).shape[1]
    out = np.zeros((len(layers), num_classes, steps, tokens, experts), np.int64)
    for (layer, step), table in counts.items():
        out[layer, :, step] = table
    return {"counts": out, "timesteps": sorted(seen, key=seen.get), "top_k": top_k}


def cost_curve(model_name: str, model_args: dict, sides: list[int], in_channels: int, num_classes: int,
               repeats: int = 5) -> list[dict]:
    """Per latent side: tokens (side^2 / patch^2), forward Gflops and `repeats` measured CPU forward
    times (seconds, batch 1, after one warm-up) of a randomly initialised backbone."""

    rows = []
    for side in sides:
        args = {**model_args, "input_size": side, "in_channels": in_channels, "num_classes": num_classes}
        cost = model_cost(model_name, **args)
        torch.manual_seed(0)
        model = create_model(model_name, **args).eval()
        x = torch.randn(1, in_channels, side, side)
        t, y = torch.tensor([500.0]), torch.tensor([0])
        times = []
        with torch.no_grad():
            for i in range(repeats + 1):
                start = time.perf_counter()
                model(x, t, y)
                if i:
                    times.append(time.perf_counter() - start)
        patch = getattr(model, "patch_size", 1)
        rows.append({"side": side, "tokens": (side // patch) ** 2, "gflops": cost["gflops"], "seconds": times})
    return rows
