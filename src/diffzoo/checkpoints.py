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
import re
from pathlib import Path

import torch
import torch.nn as nn

from .choices import OBJECTIVES
from .errors import DiffzooError
from .models import check_model_name, create_model, model_family
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
    if not path.is_file() and spec is not None and path.name != name_or_path:  # a path, not a name
        raise DiffzooError(f"checkpoint {name_or_path}: no such file (the released name alone, {path.name}, "
                           "downloads it into the cache)")
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


LAYOUT_KEYS = ("num_classes", "learn_sigma", "qk_norm")  # what file_layout reads, where params leave them


def file_layout(state_dict: dict[str, torch.Tensor]) -> dict:
    """What a file in the DiT layout (DiT, DiT-MoE: x_embedder, y_embedder, final_layer) says of its
    model: the class count (the label table has one row more, the null class), learn_sigma (the output
    has twice the input channels), QK-norm (DiT-MoE XL/G's flash block). {} for other layouts. So a
    DiT fine-tuned on 10 classes with the authors' train.py, or a renamed XL file, imports."""
    patch = state_dict.get("x_embedder.proj.weight")
    out = state_dict.get("final_layer.linear.weight")
    labels = state_dict.get("y_embedder.embedding_table.weight")
    if patch is None or out is None or patch.dim() != 4:
        return {}
    layout = {"learn_sigma": out.shape[0] == 2 * patch.shape[1] * patch.shape[2] * patch.shape[3],
              "qk_norm": any(k.endswith(("attn.q_norm.weight", "attn.q_norm.bias")) for k in state_dict)}
    if labels is not None:
        layout["num_classes"] = labels.shape[0] - 1
    return layout


def with_file_layout(model_args: dict, state_dict: dict[str, torch.Tensor], source: str) -> dict:
    """`model_args` completed by the file's own layout (file_layout); a value the args set otherwise is
    one line naming the key, before any load."""
    layout = file_layout(state_dict)
    differ = [f"{k} = {model_args[k]!r} (the file's: {v!r})" for k, v in layout.items()
              if k in model_args and model_args[k] != v]
    if differ:
        raise DiffzooError(f"{source} does not fit the model's arguments: {'; '.join(differ)}")
    return {**model_args, **layout}


def import_released(path: Path, model_name: str, model_args: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The file's weights in our model's layout, after a strict load (built on the meta device, so
    the tensors are the file's own, not copies), and the model's arguments: for the DiT layouts
    completed by what the file says of itself (file_layout: class count, learn_sigma, QK-norm)."""

    state_dict = read_state_dict(path)
    if model_family(model_name) in ("DiT", "DiT-MoE"):
        model_args = with_file_layout(model_args, state_dict, str(path))
    with torch.device("meta"):
        model = create_model(model_name, **model_args)
    load_weights(model, state_dict, str(path), assign=True)
    return {k: v for k, v in model.state_dict().items()}, model_args


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """Write `path` (.safetensors) and its config `path.json`, each atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(config, indent=1, sort_keys=True))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and config of a checkpoint written by save_checkpoint; the config is checked against
    the tensors (check_config) before anything is built from it."""
    path = Path(path)
    cfg_path = path.with_suffix(".json")
    if not cfg_path.is_file():
        raise DiffzooError(f"{cfg_path} is missing: diffzoo checkpoints are a .safetensors file plus its .json config")
    try:
        config = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise DiffzooError(f"{cfg_path} is not JSON: {err}") from None
    tensors = read_state_dict(path)
    check_config(config, tensors, cfg_path)
    return tensors, config


def check_config(config, tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """A model.json is input like any other file (it also arrives through `sample --ckpt`): one line
    naming the key where it is not what we write, before a model is built from it. No integer of
    model_args may exceed both the weights' tensor count and their largest dimension (every depth,
    width, class or token count of a model shows as one or the other), so `depth: 1e7` or
    `hidden_size: 200000` is refused instead of built (minutes, or 160 GB)."""

    def bad(key: str, why: str):
        raise DiffzooError(f"{where}: {key} {why}")

    if not isinstance(config, dict):
        bad("(the whole file)", f"is a JSON {type(config).__name__}, not an object")
    name = config.get("model")
    if not isinstance(name, str):
        bad("model", f"= {str(name)[:60]!r} is not a model name")
    try:
        check_model_name(name)
    except KeyError as err:
        hint = str(err.args[0]).split("; registered")[0].partition(" (")[2]
        bad("model", f"= {name[:60]!r} is not a registered model" + (f" ({hint}" if hint else ""))
    args = config.get("model_args", {})
    if not isinstance(args, dict):
        bad("model_args", "is not an object")
    bound = max([len(tensors), *(max(t.shape, default=1) for t in tensors.values())])
    for key, value in args.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
            bad(f"model_args.{key}", f"= {str(value)[:60]} is not a finite number")
        if value < 0:
            bad(f"model_args.{key}", f"= {value} is negative")
        if isinstance(value, int) and value > bound:
            bad(f"model_args.{key}", f"= {value} exceeds what the weights beside it can hold ({len(tensors)} "
                f"tensors, largest dimension {max(max(t.shape, default=1) for t in tensors.values())}): "
                "a model that large cannot be these weights")
    if config.get("objective") not in OBJECTIVES:
        bad("objective", f"= {str(config.get('objective'))[:60]!r}; allowed: {', '.join(OBJECTIVES)}")
    if not isinstance(config.get("objective_args", {}), dict):
        bad("objective_args", "is not an object")
    lat = config.get("latents")
    if not isinstance(lat, dict):
        bad("latents", "is missing or not an object")
    if not isinstance(lat.get("vae"), str):
        bad("latents.vae", "is not a name")
    scale = lat.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
        bad("latents.scale", f"= {str(scale)[:60]} is not a positive number")
    shape = lat.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= bound for v in shape)):
        bad("latents.shape", f"= {str(shape)[:60]} is not [channels, height, width] of positive sizes "
            f"(at most {bound})")
    classes = lat.get("classes")
    if not isinstance(classes, list) or not classes or len(classes) > bound:
        bad("latents.classes", f"must list the class names (1 to {bound}; got "
            f"{len(classes) if isinstance(classes, list) else type(classes).__name__})")


def build_model(config: dict, tensors: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The model of a checked config holding `tensors`: built on the meta device and given the file's
    tensors (no second copy; a config that builds a bigger model than the file costs no memory), one
    line where the config does not build or the tensors do not fit it."""

    try:
        with torch.device("meta"):
            model = create_model(config["model"], **config.get("model_args", {}))
    except (TypeError, ValueError, RuntimeError, AssertionError, ZeroDivisionError) as err:
        raise DiffzooError(f"{source}: model_args do not build {config['model']}: "
                           f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    load_weights(model, tensors, source, assign=True)
    return model.float()


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model from a diffzoo checkpoint (its JSON names the registered model and overrides)."""
    tensors, config = load_checkpoint(path)
    diverged = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if diverged:
        more = f" (+{len(diverged) - 3} more)" if len(diverged) > 3 else ""
        raise DiffzooError(f"{path}: {len(diverged)} weight tensors hold NaN or inf ({', '.join(diverged[:3])}{more}): "
                           "the training that wrote it diverged; its samples would be blank")
    return build_model(config, tensors, str(path))
