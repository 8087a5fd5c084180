"""Which diffusion recipe makes a tiny backbone draw digits? The experiment behind the default's
settings (README, "Why the papers' recipe samples noise at this scale").

Each recipe trains the default's DiT-S/2 (width 64, depth 4, 4 heads) on the 1797 digits at their
native 8x8 in one grey channel, with the default's loop settings (AdamW lr 1e-3, batch 64, EMA 0.99,
label dropout 0.1), then draws 500 samples of uniformly random classes with 25 DDIM (or Euler) steps,
x0 clipped to [-1, 1] as in pixel space. The judge (diffzoo.evaluate.judge: scikit-learn's SVC on the
original scans, independent of the metrics' CNN) reports the share drawn as the asked digit.
It also prints how well each model predicts x0 from a real digit noised to t (the MSE of the model's
x0, against 0.30-0.33 for always answering the mean image), which shows where the eps recipe fails.

    python benchmarks/digits_recipes.py                 # every recipe, 1500 steps (about 10 min, 2 cores)
    python benchmarks/digits_recipes.py --steps 300 --recipes eps v
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from diffzoo.diffusion.objective import create_objective
from diffzoo.evaluate.judge import judge_accuracy
from diffzoo.models import create_model
from diffzoo.training import drop_labels, loop_label_dropout, step_generators

RECIPES = {  # name -> (objective, settings)
    "eps": ("ddpm", {"prediction": "eps"}),                       # the papers' recipe
    "eps-fixed-sigma": ("ddpm", {"prediction": "eps", "learn_sigma": False}),
    "eps-cosine": ("ddpm", {"prediction": "eps", "noise_schedule": "cosine"}),
    "v": ("ddpm", {"prediction": "v"}),                           # the default's
    "v-cosine": ("ddpm", {"prediction": "v", "noise_schedule": "cosine"}),
    "x0": ("ddpm", {"prediction": "x0"}),
    "rectified-flow": ("rectified_flow", {}),
}


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(np.rint(d.images * 255 / 16), dtype=torch.float32)[:, None] / 127.5 - 1  # as the pipeline
    return x, torch.tensor(d.target)


def run(name: str, steps: int, seed: int = 0) -> dict:
    kind, settings = RECIPES[name]
    settings = dict(settings)
    learn_sigma = settings.pop("learn_sigma", kind == "ddpm")
    x_all, y_all = digits()
    torch.manual_seed(seed)
    model = create_model("DiT-S/2", input_size=8, in_channels=1, num_classes=10, hidden_size=64, depth=4,
                         num_heads=4, learn_sigma=learn_sigma)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    prob, null = loop_label_dropout(model)
    if kind == "ddpm":
        objective = create_objective("ddpm", learn_sigma=learn_sigma, sampling_steps="ddim25", sampler="ddim",
                                     clip_denoised=True, **settings)
    else:
        objective = create_objective("rectified_flow", sampling_steps=25)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x_all), 64))
        gens = step_generators(seed, step, range(64))
        y = drop_labels(y_all[idx], gens, prob, null)
        loss = objective.training_losses(model, x_all[idx], {"y": y}, generator=gens)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(0.99).add_(pm, alpha=0.01)
    train_s = time.perf_counter() - start

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (500,), generator=g)
    noise = torch.randn(500, 1, 8, 8, generator=g)
    with torch.no_grad():
        x = objective.sample(ema.guided(1.0), noise, {"y": labels})
    images = torch.clamp(127.5 * x + 128, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = {"recipe": name, "steps": steps, "judge_accuracy": round(judge_accuracy(images, labels.numpy()), 3),
           "train_seconds": round(train_s, 1)}
    if kind == "ddpm":  # how well the model predicts x0 from a real digit noised to t
        diffusion = objective.train_diffusion
        x0, y0 = x_all[:512], y_all[:512]
        mean_image = x_all.mean(0, keepdim=True)
        for t in (100, 500, 900):
            tt = torch.full((len(x0),), t)
            xt = diffusion.q_sample(x0, tt, torch.randn(x0.shape, generator=g))
            with torch.no_grad():
                pred = diffusion.p_mean_variance(ema, xt, tt, model_kwargs={"y": y0})["pred_xstart"]
            out[f"x0_mse_t{t}"] = round(float((pred - x0).square().mean()), 3)
        out["mean_image_mse"] = round(float((mean_image - x0).square().mean()), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.recipes:
        print(json.dumps(run(name, args.steps)), flush=True)


if __name__ == "__main__":
    main()
