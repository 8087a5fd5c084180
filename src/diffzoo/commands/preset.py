"""expand a preset into the full params file that DVC needs

`diffzoo preset NAME --out params.yaml`: configs/NAME.yaml (or a path) states only what differs from the
typed defaults, the papers' base recipe (diffzoo.params); this writes every key with its value, in
the schema's order, as YAML that Snakemake (YAML 1.1) and DVC (YAML 1.2) read alike, to --out (written
only once the preset has expanded: a typo in NAME leaves params.yaml as it was, which a shell's
`> params.yaml` cannot do) or to stdout. The expanded presets are checked in under configs/expanded/
(a test keeps them current).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..errors import DiffzooError
from ..params import load_params
from ..utils import atomic_path

LOCK = False  # reads only: no stage lock

CONFIGS = Path("configs")


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        import difflib

        names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DiffzooError(f"no preset {name!r} ({path}); {hint}known: {', '.join(names) or 'none'}")
    return path


def expand(path: Path) -> str:
    params = load_params(path)
    header = (f"# Expanded from {path.as_posix()} by `diffzoo preset {path.stem}`: every key, with the typed defaults\n"
              f"# (the papers' base recipe) where the preset says nothing. Edit the preset, not this file.\n")
    return header + yaml.safe_dump(params.dump(), sort_keys=False, width=120)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="a preset name in configs/ (e.g. dit_xl2_256) or a preset file")
    p.add_argument("--out", default=None, help="write the params here (e.g. params.yaml), only once expanded "
                                              "(default: stdout)")


def run(args) -> int:
    text = expand(preset_path(args.preset))
    if args.out is None:
        sys.stdout.write(text)
        return 0

    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(f"preset {args.preset} -> {args.out}", file=sys.stderr)
    return 0
