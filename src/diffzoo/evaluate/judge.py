"""An independent judge of digit samples: does each sample show the digit it was asked for?

scikit-learn's support vector classifier (RBF kernel, gamma 0.001, C 1: the setting of
scikit-learn's own digits example) trained on the 1797 original 8x8 scans of `load_digits`. It
shares nothing with the metrics' feature extractor (the CNN of classifier.py): other model, other
library, other input (the scan's 17 grey levels). A sample is read as the scan was made: grey
(mean of R, G, B), box-averaged down to 8x8, scaled to 0..16. Its 5-fold cross-validated accuracy
on the real scans is 0.99 (README). The default's table reports its accuracy per row
("judge_acc"): the share of samples it labels as the class they were generated for.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import DiffzooError

SIDE = 8  # the scans' side


@functools.lru_cache(maxsize=1)
def digits_judge():
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    digits = load_digits()
    return SVC(gamma=0.001, C=1.0).fit(digits.data, digits.target)


def to_scan(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) images, H and W multiples of 8 -> (N, 64) grey levels in 0..16."""
    n, h, w = images.shape[:3]
    if h % SIDE or w % SIDE:
        raise DiffzooError(f"the digits judge reads {SIDE}x{SIDE} scans; {h}x{w} images are not a multiple of {SIDE}")
    grey = images.astype(np.float64).mean(-1) if images.ndim == 4 else images.astype(np.float64)
    grey = grey.reshape(n, SIDE, h // SIDE, SIDE, w // SIDE).mean((2, 4))
    return (grey * (16.0 / 255.0)).reshape(n, SIDE * SIDE)


def judge_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
    """Share of `images` that the judge labels as their `labels` (the classes they were sampled for)."""
    if len(images) != len(labels):
        raise DiffzooError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DiffzooError("no images to judge")
    return float((digits_judge().predict(to_scan(images)) == np.asarray(labels)).mean())


def judge_source(source) -> float:
    """judge_accuracy of a labelled ImageSource (samples file, shards, ...)."""
    if source.labels is None:
        raise DiffzooError(f"{source.path} holds no labels: the judge checks the class a sample was drawn for")
    import numpy as np

    return judge_accuracy(source.take(np.arange(source.num_images)), source.labels)
