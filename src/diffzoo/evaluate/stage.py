"""The evaluation's two pipeline stages, driven by params.yaml (this module is `diffzoo reference`).

`diffzoo reference --params P`: the feature extractor and the real images' statistics, in
data/<name>/reference-<R>-<extractor>/: with `evaluate.feature_extractor: classifier` it first trains
the in-domain classifier on the training split of the images stage's shards (deterministically),
writes reference.npz from that split, and evaluates the held-out split against it as any sample
file (real.json: the "real data" row of the tables, the floor a perfect generator would reach at
that sample count); with `inception` it uses `evaluate.reference` (an ADM reference batch) as it
is, or computes the statistics from all the images, as the papers' reference batches do.

`diffzoo evaluate --params P --experiment ID`: the experiment's samples against that reference,
written to results/metrics/<ID>.json (the standalone `diffzoo evaluate SAMPLES --ref REF` form is
in command.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import DiffzooError
from ..params import experiment, load_params, paths
from .evaluator import format_metrics

CLASSIFIER = "classifier.safetensors"
REFERENCE = "reference.npz"
REAL = "real.json"


def _extractor(params: dict, ref_dir: Path, device: str | None = None):
    from .features import load_extractor

    ev = params["evaluate"]
    if ev["feature_extractor"] == "classifier":
        return load_extractor("classifier", ref_dir / CLASSIFIER, device)
    return load_extractor("inception", ev["inception_weights"], device)


def _with_judge(params: dict, metrics: dict, source) -> dict:
    """The digits judge's accuracy on a labelled source (the default data set only)."""
    if params["data"]["source"] == "digits" and source.labels is not None:
        from .judge import judge_accuracy
        metrics["judge_accuracy"] = judge_accuracy(source.take(np.arange(source.num_images)), source.labels)
    return metrics


def build_reference(params: dict, device: str | None = None) -> Path:
    from ..utils import atomic_dir, write_json
    from .classifier import heldout_mask, train_classifier
    from .evaluator import evaluate
    from .images import ArrayImages, open_images
    from .reference import compute_reference

    p = paths(params)
    ev, cls = params["evaluate"], params["classifier"]
    with atomic_dir(p["reference"]) as tmp:
        if ev["feature_extractor"] == "classifier":
            info = train_classifier(p["images"], tmp / CLASSIFIER, epochs=cls["epochs"], batch_size=cls["batch_size"],
                                    lr=cls["lr"], seed=cls["seed"], width=cls["width"], noise_aug=cls["noise_aug"])
            print(f"classifier: held-out accuracy {info['heldout_accuracy']:.4f} on {info['num_heldout']} images")
            # The classifier's split: statistics of the training images, the held-out ones as the real row.
            images = open_images(p["images"])
            held = heldout_mask(images.num_images)
            split = {name: ArrayImages(images.take(np.flatnonzero(rows)), images.labels[rows],
                                       path=f"{p['images']} ({name} split)")
                     for name, rows in (("training", ~held), ("held-out", held))}
            compute_reference(split["training"], _extractor(params, tmp, device), tmp / REFERENCE,
                              batch_size=ev["batch_size"], cache_dir=None)
            real = evaluate(split["held-out"], tmp / REFERENCE, _extractor(params, tmp, device),
                            batch_size=ev["batch_size"], distance_dtype=ev["pr_distance_dtype"], cache_dir=None)
            write_json(tmp / REAL, {**_with_judge(params, real, split["held-out"]), "experiment": "real data"})
            print(f"real data (held-out images):\n{format_metrics(real)}")
        elif ev["reference"]:
            if not Path(ev["reference"]).is_file():
                raise DiffzooError(f"evaluate.reference {ev['reference']} does not exist")
            shutil.copyfile(ev["reference"], tmp / REFERENCE)
        else:
            compute_reference(p["images"], _extractor(params, tmp, device), tmp / REFERENCE,
                              batch_size=ev["batch_size"], cache_dir=None)
    return p["reference"]


def evaluate_experiment(params: dict, exp_id: str, device: str | None = None) -> dict:
    from ..utils import write_json
    from .evaluator import evaluate
    from .images import open_images

    experiment(params, exp_id)
    p = paths(params, exp_id)
    ev = params["evaluate"]
    if not p["samples"].is_file():
        raise DiffzooError(f"{p['samples']} does not exist: run the sample stage of {exp_id!r} first")
    samples = open_images(p["samples"])
    metrics = evaluate(samples, p["reference"] / REFERENCE, _extractor(params, p["reference"], device),
                       batch_size=ev["batch_size"], distance_dtype=ev["pr_distance_dtype"], cache_dir=None)
    metrics = _with_judge(params, metrics, samples)
    metrics["experiment"] = exp_id
    write_json(p["metrics"], metrics)
    print(format_metrics(metrics))
    return metrics


def add_arguments(p) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")


def run(args) -> int:
    out = build_reference(load_params(args.params), args.device)
    print(json.dumps({"reference": str(out)}))
    return 0
