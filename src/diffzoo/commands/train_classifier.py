"""train the in-domain digits classifier used as feature extractor (deterministic, CPU)

`diffzoo train-classifier IMAGES --out CLS.safetensors`: the in-domain feature extractor for the
default data set, trained deterministically on its real images (held-out accuracy in CLS.json).
"""
from __future__ import annotations

import argparse
import json

from ..evaluate.classifier import train_classifier


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="images-stage shard dir (index.json with labels), class folders or ADM npz "
                                  "with labels")
    p.add_argument("--out", required=True, help="weights .safetensors to write (config JSON beside it)")
    # Unset options take train_classifier's defaults (one place).
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--width", type=int, help="channels of the first conv layers")
    p.add_argument("--feature-dim", type=int, help="penultimate features used for FID and P/R")
    p.add_argument("--noise-aug", type=float, help="largest std of the Gaussian noise added to training images")


def run(args) -> int:
    given = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "seed", "width", "feature_dim", "noise_aug")}
    cfg = train_classifier(args.images, args.out, **{k: v for k, v in given.items() if v is not None})
    print(json.dumps({k: cfg[k] for k in ("train_accuracy", "heldout_accuracy", "num_train", "num_heldout",
                                          "train_seconds", "weights_sha256")}))
    return 0
