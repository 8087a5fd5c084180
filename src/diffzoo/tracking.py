"""Live tracking of a training run: TensorBoard event files (params `track`).

Why TensorBoard: its event files are what every tool a researcher already uses reads live
(`tensorboard --logdir logs/tensorboard`, `wandb sync --sync-tensorboard`, MLflow, VS Code), they need
no server or account, and they work the same under Snakemake, `dvc repro`, `dvc exp run` and a bare
`diffzoo train`. (The DVC side also has the loss TSV as `dvc plots`.) The events live under
logs/tensorboard/<id>/, outside every engine's outputs, so a failed or interrupted run keeps its curves.

Scalars every train.log_every steps: train/loss (and mse, vb, aux where the objective has them),
train/lr, train/images_per_s. With track.preview_every N: a grid of EMA samples (the first 10 classes,
track.preview_per_class each, the experiment's sample settings, fixed seeds so the grids of a run are
comparable) every N steps, as an image in the events and as preview-<step>.png beside them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .diffusion.gaussian_diffusion import randn
from .latents import to_adm_uint8
from .report.figures import GRID_CLASSES, class_grid, save_png
from .sampling import sample_generators

TENSORBOARD_DIR = Path("logs") / "tensorboard"
PREVIEW_SEED = 1234  # the same noise and labels at every preview of a run


class Tracker:
    """Writes a run's scalars and previews (main process only; a no-op where tracking is off)."""

    def __init__(self, run_id: str, track, enabled: bool, preview=None):
        self.every = track.preview_every if preview is not None else 0
        self.preview_fn = preview
        self.folder = TENSORBOARD_DIR / run_id
        self.writer = None
        if enabled and track.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.folder))
        self.enabled = enabled and (self.writer is not None or self.every > 0)

    def scalars(self, step: int, values: dict, lr: float) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if key != "images_per_s" and np.isfinite(value):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.add_scalar("train/images_per_s", values["images_per_s"], step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.flush()  # live: a reader sees each interval as it is logged

    def step(self, done: int) -> None:
        """After training step `done`: a preview when it is due."""
        if not self.enabled or not self.every or done % self.every:
            return

        image = self.preview_fn(done)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_png(image, self.folder / f"preview-{done:07d}.png")
        if self.writer is not None:
            self.writer.add_image("samples/ema", np.asarray(image), done, dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def preview_grid(model: torch.nn.Module, objective, codec, latent_shape: list[int], class_names: list[str],
                 sample_cfg, per_class: int, device: torch.device, title: str = "EMA samples"):
    """A class grid of `model`'s samples (the EMA's): the first 10 classes, `per_class` each, drawn with
    the run's sample settings from fixed seeds."""

    classes = list(range(min(GRID_CLASSES, len(class_names))))
    labels = torch.tensor([c for c in classes for _ in range(per_class)])
    gens = sample_generators(PREVIEW_SEED, range(len(labels)))
    noise = randn((len(labels), *latent_shape), gens)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = objective.sample(model.guided(sample_cfg.cfg_scale, sample_cfg.guidance), noise.to(device),
                             {"y": labels.to(device)}, generator=gens)
        images = to_adm_uint8(codec.decode(z))
    model.train(was_training)
    rows = {c: images[i * per_class:(i + 1) * per_class] for i, c in enumerate(classes)}
    return class_grid([(title, rows)], class_names, per_class)
