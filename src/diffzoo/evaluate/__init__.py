"""Evaluation stage: ADM's FID / sFID / IS / Precision / Recall in PyTorch, plus KID and our in-domain
classifier for the default data set. Public API (imported lazily):

- ``evaluate(samples, reference, extractor, ...) -> dict``            (evaluator.py)
- ``compute_reference(images, extractor, out, ...) -> dict``           (reference.py)
- ``load_reference(path)``, ``load_extractor(name, weights, device)``
- ``train_classifier(images, out, ...) -> dict``                      (classifier.py)
- metric functions: ``frechet_distance``, ``inception_score``, ``precision_recall``, ``kid``
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate": "evaluator", "format_metrics": "evaluator", "write_metrics": "evaluator",
    "compute_reference": "reference", "load_reference": "reference",
    "load_extractor": "features", "InceptionExtractor": "features", "adm_spatial_features": "features",
    "train_classifier": "classifier", "ClassifierExtractor": "classifier",
    "frechet_distance": "metrics", "inception_score": "metrics", "precision_recall": "metrics", "kid": "metrics",
    "open_images": "images",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
