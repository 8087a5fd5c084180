"""`diffzoo dataset --source digits`: 1797 real images, 10 classes, byte-identical reruns."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from diffzoo import cli
from diffzoo.data.dataset import build_dataset


def _tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


main = cli.main


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "ds"
    assert main(["dataset", "--source", "digits", "--out", str(out)]) == 0
    return out


def test_counts_and_classes(digits_dir):
    m = json.loads((digits_dir / "manifest.json").read_text())
    assert m["num_images"] == 1797 and m["num_classes"] == 10
    assert m["classes"] == [f"digit_{i}" for i in range(10)]
    target = load_digits().target
    assert m["counts"] == {f"digit_{i}": int((target == i).sum()) for i in range(10)}
    files = list((digits_dir / "train").rglob("*.png"))
    assert len(files) == 1797
    assert m["num_corrupt"] == 0 and m["corrupt"] == []
    assert len(m["archives"][0]["sha256"]) == 64


def test_pixels_are_the_sklearn_digits(digits_dir):
    d = load_digits()
    for i in (0, 1, 500, 1796):
        cls = f"digit_{d.target[i]}"
        img = Image.open(digits_dir / "train" / cls / f"{cls}_{i:04d}.png")
        assert img.mode == "RGB" and img.size == (32, 32)
        a = np.asarray(img)
        expect = np.kron(np.round(d.images[i] * 255 / 16), np.ones((4, 4)))
        for c in range(3):
            np.testing.assert_array_equal(a[..., c], expect)


def test_deterministic(digits_dir, tmp_path):
    again = tmp_path / "again"
    build_dataset("digits", out=again)
    assert _tree_digest(again) == _tree_digest(digits_dir)


def test_existing_out_needs_force(digits_dir, capsys):
    assert main(["dataset", "--source", "digits", "--out", str(digits_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists" in err and "--force" in err and len(err.splitlines()) == 1


def test_max_per_class_and_force(tmp_path):
    out = tmp_path / "small"
    build_dataset("digits", out=out, max_per_class=3)
    m = build_dataset("digits", out=out, max_per_class=2, force=True)
    assert m["num_images"] == 20 and set(m["counts"].values()) == {2}
    assert len(list((out / "train").rglob("*.png"))) == 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
