"""The default's metrics tell noise from data. The real reference stage (the default params: the
in-domain classifier trained on the 8x8 digits, the reference from its training split, the held-out
split as the "real data" row) scores three bad sample sets: Gaussian-noise images, real digits with
their pixels shuffled, and one digit repeated. Each gets an FID far above the real row; noise and
shuffled digits get precision and recall near 0. The repeated digit is a real digit, so it lies on
the data manifold: precision 1 is right for it, and recall (coverage) is what must be near 0.

The second test is the reason for the classifier's noise augmentation: without it, the same noise
images are rated as covering a third of the data."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from diffzoo.data.shards import iter_shards
from diffzoo.evaluate.evaluator import evaluate
from diffzoo.evaluate.features import load_extractor
from diffzoo.evaluate.images import ArrayImages
from diffzoo.evaluate.reference import CLASSIFIER, REAL, REFERENCE
from diffzoo.commands.reference import build_reference
from diffzoo.params import paths, validate

from conftest import ROOT

pytestmark = pytest.mark.slow  # the full tier: trains the reference classifier, scores sample sets

DIFFZOO = [sys.executable, "-m", "diffzoo.cli"]
N = 500


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-samples")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for stage in ("dataset", "images", "reference"):
        subprocess.run(DIFFZOO + [stage, "--params", "params.yaml"], cwd=root, check=True, capture_output=True)
    return root


def _images(project):
    params = validate(yaml.safe_load((project / "params.yaml").read_text()))
    images = np.concatenate([np.asarray(im) for im, _ in iter_shards(project / paths(params)["images"])])
    return params, images


def bad_sets(images: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    side = images.shape[1]
    picks = images[rng.choice(len(images), N)]
    return {
        "gaussian noise": np.clip(127.5 * rng.standard_normal((N, side, side, 1)) + 128, 0, 255)
                            .astype(np.uint8).repeat(3, -1),
        "shuffled pixels": np.stack([im.reshape(-1, 3)[rng.permutation(side * side)].reshape(im.shape)
                                     for im in picks]),
        "one digit repeated": np.repeat(images[1:2], N, 0),
    }


def _score(ref_dir, sets):
    extractor = load_extractor("classifier", ref_dir / CLASSIFIER)
    return {name: evaluate(ArrayImages(arr), ref_dir / REFERENCE, extractor, distance_dtype="float32", cache_dir=False)
            for name, arr in sets.items()}


def test_bad_sample_sets_score_far_from_the_real_data(project):
    params, images = _images(project)
    ref_dir = project / paths(params)["reference"]
    real = json.loads((ref_dir / REAL).read_text())
    assert real["fid"] < 10 and real["precision"] > 0.85 and real["recall"] > 0.85
    assert real["judge_accuracy"] > 0.97
    scores = _score(ref_dir, bad_sets(images))
    print({k: (round(m["fid"], 1), round(m["precision"], 3), round(m["recall"], 3)) for k, m in scores.items()})
    for name, m in scores.items():
        assert m["fid"] > 50 * real["fid"], name
    for name in ("gaussian noise", "shuffled pixels"):
        assert scores[name]["precision"] < 0.05 and scores[name]["recall"] < 0.05, name
    repeated = scores["one digit repeated"]
    assert repeated["recall"] < 0.01 and repeated["precision"] == 1.0


def test_mild_noise_on_real_digits_still_raises_fid(project):
    """The noise augmentation must not make the features blind to noisy samples."""
    params, images = _images(project)
    ref_dir = project / paths(params)["reference"]
    held = images[np.arange(len(images)) % 5 == 0]
    rng = np.random.default_rng(1)
    noisy = {f"std {s}": np.clip(held[..., :1] + 127.5 * s * rng.standard_normal(held.shape[:3] + (1,)), 0, 255)
             .astype(np.uint8).repeat(3, -1) for s in (0.1, 0.2, 0.4)}
    fids = {k: m["fid"] for k, m in _score(ref_dir, {"clean": held, **noisy}).items()}
    print({k: round(v, 2) for k, v in fids.items()})
    # The real-data row is exactly this held-out split, evaluated the same way.
    assert fids["clean"] == pytest.approx(json.loads((ref_dir / REAL).read_text())["fid"], rel=1e-5)  # batch order only
    assert fids["clean"] < fids["std 0.1"] < fids["std 0.2"] < fids["std 0.4"]
    assert fids["std 0.4"] > 5 * fids["clean"]


def test_without_noise_augmentation_noise_is_rated_as_covering_the_data(project, tmp_path, monkeypatch):
    params, images = _images(project)
    params = params.model_copy(update={"classifier": params.classifier.model_copy(update={"noise_aug": 0.0})})
    shutil.copytree(project, tmp_path / "p")
    monkeypatch.chdir(tmp_path / "p")
    ref_dir = tmp_path / "p" / build_reference(params)
    scores = _score(ref_dir, bad_sets(images))
    print({k: (round(m["fid"], 1), round(m["precision"], 3), round(m["recall"], 3)) for k, m in scores.items()})
    assert scores["gaussian noise"]["recall"] > 0.2
