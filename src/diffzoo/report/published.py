"""The papers' published numbers, kept in the project as data (papers.yaml, each block with its source)."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

PAPERS_YAML = Path(__file__).with_name("papers.yaml")


@functools.cache
def load_papers() -> dict:
    with open(PAPERS_YAML) as f:
        return yaml.safe_load(f)
