"""feature extractor and real-image statistics for the evaluate stage

`diffzoo reference --params P` -> data/<name>/reference-<R>-<extractor>/:
- `evaluate.feature_extractor: classifier` (data without Inception weights, the default's digits):
  the in-domain CNN trained on the training split of the images, the reference statistics of that
  split, and real.json, the held-out split evaluated against it (the tables' "real data" row, with
  the data set's judge's accuracy where it has one). The held-out split is the images folder's own
  (val/, e.g. Fashion-MNIST's t10k images) where it has one, else every 5th image;
- `inception`: `evaluate.reference` (an ADM reference batch) as it is, or the statistics of all the
  images, as the papers' reference batches hold.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import DiffzooError
from ..evaluate.evaluator import format_metrics
from ..evaluate.features import load_extractor
from ..evaluate.floor import build_classifier_reference
from ..evaluate.judge import judge_for
from ..evaluate.reference import REFERENCE, compute_reference
from ..params import load_params, paths
from ..utils import atomic_dir


def build_reference(params, device: str | None = None) -> Path:
    where, ev = paths(params), params.evaluate
    with atomic_dir(where["reference"]) as tmp:
        if ev.feature_extractor == "classifier":
            judge = judge_for(params.data.source, params.data.path)
            real = build_classifier_reference(where["images"], tmp, params.classifier.model_dump(), ev.batch_size,
                                              ev.pr_distance_dtype, judge=judge, device=device,
                                              final_dir=where["reference"])
            print(f"real data (held-out images):\n{format_metrics(real)}")
        elif ev.reference:
            if not Path(ev.reference).is_file():
                raise DiffzooError(f"evaluate.reference {ev.reference} does not exist")
            shutil.copyfile(ev.reference, tmp / REFERENCE)
        else:
            extractor = load_extractor("inception", ev.inception_weights, device)
            compute_reference(where["images"], extractor, tmp / REFERENCE, batch_size=ev.batch_size, cache_dir=None)
    return where["reference"]


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def run(args) -> int:
    out = build_reference(load_params(args.params), args.device)
    print(json.dumps({"reference": str(out)}))
    return 0
