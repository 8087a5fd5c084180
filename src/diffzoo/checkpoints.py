"""Checkpoints: the authors' released files in, our own safetensors + JSON config out.

The authors' files are plain state_dicts saved with torch.save; they are read with
`weights_only=True` (no pickle code runs) and loaded strictly, their layouts mapped by the modules'
load hooks (DiT-MoE's per-expert weights, its flash-attention names). Ours are a safetensors file of
tensors plus a small JSON of how to rebuild the model, both written atomically.

RELEASED names the files the papers' authors published, with what it takes to run them as they do
(model, objective, layout options, rectified-flow time scale). A name downloads into the cache
(`resolve_checkpoint`), with a progress bar, when the network answers; offline, one line says where
to put the file. Their sha256 are not published: the import prints the one it computed, and an
experiment can pin it (`train.checkpoint_sha256`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from .errors import DiffzooError
from .released import RELEASED, Released, released  # noqa: F401  (the registry, torch-free for planning)
from .utils import atomic_path, cache_dir, sha256_file


def cached_path(name: str) -> Path:
    return cache_dir("checkpoints") / Path(name).name


def resolve_checkpoint(name_or_path: str, sha256: str | None = None, download: bool = True) -> Path:
    """The local file of a checkpoint: a path as it is; a released name from the cache, downloaded
    into it (with a progress bar) when missing. Checked against `sha256` (or the registry's) when one
    is known."""
    path = Path(name_or_path)
    spec = released(name_or_path)
    if not path.is_file() and spec is not None:
        path = cached_path(name_or_path)
        if not path.is_file():
            if not download:
                raise DiffzooError(f"{name_or_path} is not downloaded: put the file at {path} (from {spec.url})")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with atomic_path(path) as tmp:
                    torch.hub.download_url_to_file(spec.url, str(tmp), progress=True)
            except Exception as err:  # no network, proxy, HTTP error: all mean the same to the user
                raise DiffzooError(f"cannot download {Path(name_or_path).name} from {spec.url} "
                                   f"({type(err).__name__}); put the file at {path}, or give its path") from None
    if not path.is_file():
        known = ", ".join(RELEASED)
        raise DiffzooError(f"checkpoint {name_or_path}: no such file, and not a released name ({known})")
    verify_sha256(path, sha256 or (spec.sha256 if spec else None))
    return path


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


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint",
                 assign: bool = False) -> None:
    """Strict load with one readable message listing missing, unexpected and mis-shaped keys. The
    modules' load hooks map the authors' layouts first; `assign` keeps the file's tensors (a model
    built on the meta device takes them without a copy)."""
    import re

    pattern = (r"size mismatch for ([^:]+): copying a param with shape torch.Size\((\[[^]]*\])\) from "
               r"checkpoint, the shape in current model is torch.Size\((\[[^]]*\])\)")
    found: list[tuple[str, str, str]] = []
    candidates = dict(state_dict)
    try:
        result = model.load_state_dict(dict(candidates), strict=False, assign=assign)
    except RuntimeError as err:
        found = re.findall(pattern, str(err))
        if not found:
            raise DiffzooError(f"{source} does not load into the model: {str(err).splitlines()[0]}") from None
        for key, _, _ in found:  # to learn what else is wrong: load again without the mis-shaped tensors
            candidates.pop(key, None)
        result = model.load_state_dict(candidates, strict=False, assign=assign)
    mis_shaped = {k for k, _, _ in found}
    shapes = [f"{k}: file {a} vs model {b}" for k, a, b in found]
    missing = [k for k in result.missing_keys if k not in mis_shaped]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise DiffzooError(f"{source} does not match the model: " + "; ".join(parts))


def model_json(model: str, model_args: dict, objective: str, objective_args: dict, vae: str, scale: float,
               shape: list[int], num_classes: int, **extra) -> dict:
    """The model.json of weights we did not train: how to rebuild the model, the objective that
    samples it, and the latents it works in (what `diffzoo sample` reads)."""
    return {"model": model, "model_args": model_args, "objective": objective, "objective_args": objective_args,
            "latents": {"vae": vae, "scale": scale if vae != "identity" else 1.0, "shape": shape,
                        "classes": [str(c) for c in range(num_classes)]}, **extra}


def import_released(path: Path, model_name: str, model_args: dict) -> dict[str, torch.Tensor]:
    """The file's weights in our model's layout, after a strict load (built on the meta device, so
    the tensors are the file's own, not copies)."""
    from .models import create_model

    with torch.device("meta"):
        model = create_model(model_name, **model_args)
    load_weights(model, read_state_dict(path), str(path), assign=True)
    return {k: v for k, v in model.state_dict().items()}


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
    diverged = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if diverged:
        more = f" (+{len(diverged) - 3} more)" if len(diverged) > 3 else ""
        raise DiffzooError(f"{path}: {len(diverged)} weight tensors hold NaN or inf ({', '.join(diverged[:3])}{more}): "
                           "the training that wrote it diverged; its samples would be blank")
    model = create_model(config["model"], **config.get("model_args", {}))
    load_weights(model, tensors, str(path))
    return model
