"""The papers' published numbers, kept in the project as data (papers.yaml, each block with its source)."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml

PAPERS_YAML = Path(__file__).with_name("papers.yaml")
# `report.tables`: our rows alone ("default", "digits_scaling", "mamba_family", "fashion", "claims") or beside a
# paper table (tables.py).
TABLES = ["default", "digits_scaling", "mamba_family", "fashion", "claims", "dit_table4", "dit_imagenet256",
          "dit_imagenet512", "diffussm_imagenet256", "dis_imagenet256", "dit_moe_imagenet256"]


@functools.cache
def load_papers() -> dict:
    with open(PAPERS_YAML) as f:
        return yaml.safe_load(f)
