"""Name -> constructor table for every backbone (timm's convention: `create_model("DiT-XL/2", **overrides)`).

Each family registers its variants together with the source files its computation depends on, so
the pipeline can make an experiment's artifacts depend on exactly the code of its backbone.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from collections.abc import Callable, Iterable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY_OF: dict[str, str] = {}
_SOURCES: dict[str, list[Path]] = {}
_SHARED = [Path(__file__).with_name("layers.py")]


def register_family(family: str, constructors: dict[str, Callable[..., nn.Module]],
                    source: str | Iterable[str]) -> None:
    """Register named variants of one family; `source` is the family's file(s) (code-change tracking)."""
    files = [Path(source)] if isinstance(source, (str, Path)) else [Path(s) for s in source]
    _SOURCES[family] = files
    for name, fn in constructors.items():
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _FAMILY_OF[name] = family


def list_models() -> list[str]:
    return sorted(_MODELS)


def check_model_name(name: str) -> None:
    if name not in _MODELS:
        by_case = [m for m in _MODELS if m.lower() == name.lower()]  # dit-s/2 -> DiT-S/2
        close = by_case or difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}; registered: {', '.join(list_models())}")


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; keyword overrides replace the variant's constructor arguments."""
    check_model_name(name)
    return _MODELS[name](**overrides)


def model_family(name: str) -> str:
    check_model_name(name)
    return _FAMILY_OF[name]


def model_source_files(name: str) -> list[Path]:
    """Source files whose edits change what model `name` computes (its family's files + shared layers)."""
    return sorted(set(_SOURCES[model_family(name)]) | set(_SHARED))
