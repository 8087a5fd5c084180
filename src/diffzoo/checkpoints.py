"""Checkpoints: official DiT files in, our own safetensors + JSON config out.

Official DiT checkpoints are plain state_dicts saved with torch.save; they are read with
`weights_only=True` (no pickle code runs) and loaded strictly. Our checkpoints are a safetensors file
of tensors plus a small JSON of how to rebuild the model, both written atomically.

`diffzoo import-checkpoint DiT-XL-2-256x256.pt --out DIR` (stages/import_checkpoint.py) verifies and
converts an official file (downloading it first when given only its name and the network is there).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torch.nn as nn

from .errors import DiffzooError
from .utils import atomic_path, sha256_file

# The two released files (facebookresearch/DiT README). Their sha256 is not published; None means
# "not known yet": the import prints the hash it computed so a user can pin it (--sha256).
OFFICIAL_CHECKPOINTS = {
    "DiT-XL-2-256x256.pt": {"url": "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
                            "model": "DiT-XL/2", "input_size": 32, "sha256": None},
    "DiT-XL-2-512x512.pt": {"url": "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt",
                            "model": "DiT-XL/2", "input_size": 64, "sha256": None},
}


def download(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Fetch `url` to `dest` atomically and check its sha256 when known."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_path(dest) as tmp, open(tmp, "wb") as f:
            while block := resp.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError) as err:
        raise DiffzooError(f"could not download {url} ({err}); download it by hand and pass the file path") from None
    verify_sha256(dest, sha256)
    return dest


def verify_sha256(path: Path, expected: str | None) -> str:
    got = sha256_file(path)
    if expected and got != expected.lower():
        raise DiffzooError(f"{path}: sha256 {got} differs from the expected {expected}; the file is corrupt or "
                           "another file")
    return got


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch.save'd state_dict read with weights_only.
    Training checkpoints of the official code ({"model", "ema", ...}) yield their EMA weights."""
    path = Path(path)
    if not path.is_file():
        raise DiffzooError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and safetensors errors have many types; all mean "unreadable"
        raise DiffzooError(f"{path} is not a readable checkpoint (truncated or not a state_dict?): "
                           f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if isinstance(sd, dict) and "ema" in sd and isinstance(sd["ema"], dict):
        sd = sd["ema"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DiffzooError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return sd


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load with one readable message listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise DiffzooError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """Write `path` (.safetensors) and its config `path.json`, each atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(config, indent=1, sort_keys=True))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and config of a checkpoint written by save_checkpoint."""
    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not cfg_path.is_file():
        raise DiffzooError(f"{cfg_path} is missing: diffzoo checkpoints are a .safetensors file plus its .json config")
    return read_state_dict(path), json.loads(cfg_path.read_text())


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model from a diffzoo checkpoint (its JSON names the registered model and overrides)."""
    from .models import create_model

    tensors, config = load_checkpoint(path)
    model = create_model(config["model"], **config.get("model_args", {}))
    load_weights(model, tensors, str(path))
    return model
