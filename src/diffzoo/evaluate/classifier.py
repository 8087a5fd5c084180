"""In-domain feature extractor for the default data set (digits), where Inception weights are absent.

A small CNN trained deterministically on the data set's real images (fixed seed, deterministic
algorithms, a fixed held-out split: every 5th image in data-set order; or, where the images folder
has a held-out split of its own -- index.json "val", as Fashion-MNIST's t10k images -- all the
training images, with that split held out). Its penultimate layer
(``feature_dim``, pre-activation) feeds FID / Precision / Recall / KID, its logits feed the Inception
Score ("classifier score") and the class-conditional accuracy of samples. Saved as safetensors plus a
JSON config beside it (same stem). Numbers from it are not comparable with Inception numbers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffzooError
from ..utils import atomic_path, reading
from .images import ImageSource, open_images, sha256_file

ARCH = "diffzoo-digits-cnn-v1"  # the network; its training settings are in the config
HELDOUT_EVERY = 5


class DigitsCNN(nn.Module):
    """area-resize to 16x16, conv w-conv w-pool-conv 2w-conv 2w-avgpool(2x2)-linear(feature_dim),
    then relu-linear(classes). The digits are 8x8 upscaled: 16x16 keeps twice their detail."""

    def __init__(self, num_classes: int = 10, width: int = 16, feature_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(16),
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * w, feature_dim),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(F.relu(feats))


def to_input(images: np.ndarray | torch.Tensor, device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _load_all(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    if source.labels is None:
        raise DiffzooError(f"{source.path}: classifier training needs labels (shard 'labels' or class folders)")
    images = np.concatenate(list(source.batches(1024)))
    return images, source.labels


def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 512) -> float:
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            _, logits = model(to_input(images[i:i + batch], "cpu"))
            correct += int((logits.argmax(1).numpy() == labels[i:i + batch]).sum())
    return correct / max(1, len(images))


def heldout_mask(n: int) -> np.ndarray:
    """The fixed split: True for the held-out images (every HELDOUT_EVERY-th in data-set order)."""
    return np.arange(n) % HELDOUT_EVERY == 0


def heldout_split(source: ImageSource) -> ImageSource | None:
    """The images folder's own held-out split (index.json "val": a folder beside the shards), or None
    (then the held-out images are heldout_mask's every 5th)."""
    index = getattr(source, "index", None)
    if not isinstance(index, dict) or not index.get("val"):
        return None
    val = open_images(Path(source.directory) / index["val"])
    if val.resolution != source.resolution:
        raise DiffzooError(f"{val.path}: {val.height}x{val.width} held-out images beside "
                           f"{source.height}x{source.width} training ones; rerun `diffzoo images`")
    if list(getattr(val, "classes", [])) != list(getattr(source, "classes", [])):
        raise DiffzooError(f"{val.path}: its classes differ from the training split's; rerun `diffzoo images`")
    if val.labels is None:
        raise DiffzooError(f"{val.path}: the held-out split holds no labels")
    return val


def train_classifier(images: str | Path | ImageSource, out: str | Path, *, epochs: int = 60, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0, width: int = 16, feature_dim: int = 128,
                     noise_aug: float = 2.0, num_classes: int | None = None) -> dict:
    """Train on CPU, deterministically; write OUT (.safetensors) and OUT.json; return the config.

    `noise_aug`: each training image gets Gaussian noise of a standard deviation drawn uniformly
    from [0, noise_aug] (in [-1, 1] units). A network trained on clean digits only maps noise
    images anywhere in its feature space, and their wide spread makes k-NN recall count noise as
    covering the data (recall 0.34 for pure noise at noise_aug 0); trained to see digits through
    noise, it maps noise without a digit to one region, apart from the digits (recall 0.000 at 2.0;
    README "The metrics tell noise from data")."""
    from safetensors.torch import save_file

    source = images if isinstance(images, ImageSource) else open_images(images)
    val = heldout_split(source)
    x_all, y_all = _load_all(source)
    # The data's class list, not its largest label: a class folder without images would otherwise
    # shrink the head, and evaluation would fail at the very end on the first sample of that class.
    num_classes = int(num_classes or len(getattr(source, "classes", []) or []) or (y_all.max() + 1))
    if val is None:
        heldout = heldout_mask(len(x_all))
        x_tr, y_tr, x_te, y_te = x_all[~heldout], y_all[~heldout], x_all[heldout], y_all[heldout]
        split = f"held out: every {HELDOUT_EVERY}th image in data-set order (index % {HELDOUT_EVERY} == 0)"
    else:  # the data set's own held-out split: train on every training image
        (x_tr, y_tr), (x_te, y_te) = (x_all, y_all), _load_all(val)
        split = (f"held out: the images folder's own split {source.index['val']}/ (index.json 'val'); "
                 "every training image trained on")
    if len(x_tr) < batch_size:
        raise DiffzooError(f"{source.path}: {len(x_tr)} training images, fewer than one batch ({batch_size})")

    # One thread: the same reductions in the same order on any machine (and faster than several
    # threads for a network this small).
    was_deterministic, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = DigitsCNN(num_classes, width, feature_dim)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * (len(x_tr) // batch_size))
        xt = to_input(x_tr, "cpu")
        yt = torch.from_numpy(y_tr.astype(np.int64))
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[i:i + batch_size]
                x = xt[idx]
                if noise_aug > 0:
                    sigma = torch.rand((len(x), 1, 1, 1), generator=gen) * noise_aug
                    x = x + sigma * torch.randn(x.shape, generator=gen)
                _, logits = model(x)
                loss = F.cross_entropy(logits, yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        config_metrics = {"train_accuracy": _accuracy(model, x_tr, y_tr),
                          "heldout_accuracy": _accuracy(model, x_te, y_te)}
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(was_threads)
    config = {
        "arch": ARCH, "num_classes": num_classes, "width": width, "feature_dim": feature_dim,
        "resolution": [source.height, source.width],
        "classes": list(getattr(source, "classes", []) or range(num_classes)),
        "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "noise_aug": noise_aug,
        "split": split,
        "num_train": int(len(x_tr)), "num_heldout": int(len(x_te)),
        **config_metrics,
        "train_seconds": round(time.perf_counter() - start, 2),
        "data_sha256": source.digest(),
    }
    if val is not None:
        config["heldout_sha256"] = val.digest()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    config["weights_sha256"] = sha256_file(out)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n")
    return config


def load_classifier(weights: str | Path) -> tuple[DigitsCNN, dict]:
    from safetensors.torch import load_file

    weights = Path(weights)
    cfg_path = weights.with_suffix(".json")
    if not weights.is_file() or not cfg_path.is_file():
        raise DiffzooError(f"classifier weights {weights} and its config {cfg_path.name} must both exist "
                           "(made by `diffzoo train-classifier`)")
    config = json.loads(cfg_path.read_text())
    if config.get("arch") != ARCH:
        raise DiffzooError(f"{cfg_path}: arch {config.get('arch')!r}, expected {ARCH!r}")
    model = DigitsCNN(config["num_classes"], config["width"], config["feature_dim"])
    with reading(weights, "classifier weights (.safetensors)"):
        model.load_state_dict(load_file(str(weights)))
    return model.eval(), config


class ClassifierExtractor:
    """Our CNN as a feature extractor: "pool" = penultimate features, "logits" = class logits."""

    name = "classifier"

    def __init__(self, weights: str | Path, device: str | None = None):
        self.weights_path = Path(weights)
        model, self.config = load_classifier(self.weights_path)
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device)
        self.weights_sha256 = sha256_file(self.weights_path)
        self.input_resolution = tuple(self.config["resolution"])
        self.num_classes = self.config["num_classes"]

    def describe(self) -> dict:
        c = self.config
        return {
            "name": self.name, "weights_file": self.weights_path.name, "weights_sha256": self.weights_sha256,
            "arch": c["arch"], "resolution": c["resolution"], "heldout_accuracy": c["heldout_accuracy"],
            "pool": f"penultimate ({c['feature_dim']})", "logits": f"class logits ({c['num_classes']})",
        }

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        feats, logits = self.model(to_input(images, self.device))
        return {"pool": feats, "logits": logits}
