"""The real-data floor of a data set without Inception weights: an in-domain classifier, the reference
statistics of the training split through it, and the held-out split evaluated as a sample file (the
"real data" row of every table). Above the evaluator and the reference, which it combines."""
from __future__ import annotations

from pathlib import Path

from ..utils import write_json
from .classifier import train_classifier
from .evaluator import evaluate
from .features import load_extractor
from .judge import judge_accuracy, judge_source
from .reference import CLASSIFIER, REAL, REFERENCE, compute_reference, split_images


def build_classifier_reference(images: str | Path, out_dir: Path, classifier: dict, batch_size: int,
                               distance_dtype: str, judge=False, device: str | None = None,
                               final_dir: Path | None = None) -> dict:
    """The in-domain reference of a data set without Inception weights, in `out_dir`:
    classifier.safetensors (the CNN trained on the training split of `images`, with `classifier`'s
    settings), reference.npz (that split's statistics) and real.json (the held-out split evaluated
    against it as any sample file: the tables' "real data" row, the floor a perfect generator would
    reach at that sample count). The split: with a held-out folder of its own (index.json "val",
    e.g. Fashion-MNIST's t10k images) all the training images and that folder; otherwise every 5th
    image held out (classifier.heldout_mask). `judge`: an accuracy(images, labels) callable
    (judge.judge_for; True = the digits judge) whose accuracy on the held-out split real.json also
    records. Returns real.json. `final_dir`: where out_dir will be installed (real.json names the
    reference there)."""
    info = train_classifier(images, out_dir / CLASSIFIER, **classifier)
    print(f"classifier: held-out accuracy {info['heldout_accuracy']:.4f} on {info['num_heldout']} images")
    split = dict(zip(("training", "held-out"), split_images(images), strict=True))
    extractor = load_extractor("classifier", out_dir / CLASSIFIER, device)
    compute_reference(split["training"], extractor, out_dir / REFERENCE, batch_size=batch_size, cache_dir=None)
    real = evaluate(split["held-out"], out_dir / REFERENCE, extractor, batch_size=batch_size,
                    distance_dtype=distance_dtype, cache_dir=None)
    if judge:
        real["judge_accuracy"] = judge_source(split["held-out"], judge_accuracy if judge is True else judge)
    real["experiment"] = "real data"
    real["reference"]["path"] = str(Path(final_dir or out_dir) / REFERENCE)
    write_json(out_dir / REAL, real)
    return real
