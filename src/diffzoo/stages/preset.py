"""expand a preset into the full params file that DVC needs

`diffzoo preset NAME > params.yaml`: configs/NAME.yaml (or a path) states only what differs from the
typed defaults, the papers' base recipe (diffzoo.params); this writes every key with its value, in
the schema's order, as YAML that Snakemake (YAML 1.1) and DVC (YAML 1.2) read alike. The expanded
presets are checked in under configs/expanded/ (a test keeps them current).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..errors import DiffzooError
from ..params import load_params

LOCK = False  # reads only: no stage lock

CONFIGS = Path("configs")


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml"))) or "none"
        raise DiffzooError(f"no preset {name!r} ({path}); known: {known}")
    return path


def expand(path: Path) -> str:
    params = load_params(path)
    header = (f"# Expanded from {path.as_posix()} by `diffzoo preset {path.stem}`: every key, with the typed defaults\n"
              f"# (the papers' base recipe) where the preset says nothing. Edit the preset, not this file.\n")
    return header + yaml.safe_dump(params.dump(), sort_keys=False, width=120)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="a preset name in configs/ (e.g. dit_xl2_256) or a preset file")


def run(args) -> int:
    sys.stdout.write(expand(preset_path(args.preset)))
    return 0
