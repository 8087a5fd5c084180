"""`diffzoo train-classifier IMAGES --out CLS.safetensors`: the in-domain feature extractor for the
default data set, trained deterministically on its real images (held-out accuracy in CLS.json)."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="images-stage shard dir (index.json with labels), class folders or ADM npz with labels")
    p.add_argument("--out", required=True, help="weights .safetensors to write (config JSON beside it)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=16, help="channels of the first conv layers")
    p.add_argument("--feature-dim", type=int, default=128, help="penultimate features used for FID and P/R")


def run(args) -> int:
    from .classifier import train_classifier

    cfg = train_classifier(args.images, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, width=args.width, feature_dim=args.feature_dim)
    print(json.dumps({k: cfg[k] for k in ("train_accuracy", "heldout_accuracy", "num_train", "num_heldout",
                                          "train_seconds", "weights_sha256")}))
    return 0
