"""`diffzoo images`: ADM-cropped shards, corrupt files reported, resumable, and the shard reader."""
import hashlib
import io
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from diffzoo import cli
from diffzoo.data.crop import center_crop_adm
from diffzoo.data.dataset import build_dataset
from diffzoo.data.images import build_images
from diffzoo.data.shards import ShardDataset, iter_batches, iter_shards, load_index, open_shard
from diffzoo.utils import HOST


main = cli.main


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("dg") / "ds"
    build_dataset("digits", out=out)
    return out


@pytest.fixture(scope="module")
def digit_shards(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("dg32") / "img"
    assert main(["images", "--src", str(digits), "--resolution", "32", "--out", str(out),
                 "--shard-size", "500", "--workers", "1"]) == 0
    return out


def test_digit_shards_hold_the_digits(digit_shards):
    index = load_index(digit_shards)
    assert index["num_images"] == 1797 and index["resolution"] == 32
    assert index["classes"] == [f"digit_{i}" for i in range(10)]
    assert [s["num_images"] for s in index["shards"]] == [500, 500, 500, 297]
    images = np.concatenate([np.asarray(x) for x, _ in iter_shards(digit_shards)])
    labels = np.concatenate([y for _, y in iter_shards(digit_shards)])
    assert images.dtype == np.uint8 and images.shape == (1797, 32, 32, 3) and labels.dtype == np.int64
    # order: class-major, then file name (= original sklearn index); 32 -> 32 ADM crop is the identity
    d = load_digits()
    order = np.lexsort((np.arange(1797), d.target))
    np.testing.assert_array_equal(labels, d.target[order])
    expect = np.kron(np.round(d.images[order] * 255 / 16), np.ones((1, 4, 4)))
    np.testing.assert_array_equal(images[..., 0], expect)
    np.testing.assert_array_equal(images[..., 2], expect)
    assert not [p for p in digit_shards.iterdir() if p.name.startswith(".")]


def test_workers_pool_gives_same_bytes(digits, digit_shards, tmp_path):
    build_images(digits, tmp_path / "p", 32, shard_size=500, workers=2)
    assert _digest(tmp_path / "p") == _digest(digit_shards)


def test_resume_after_interrupt(digits, digit_shards, tmp_path):
    out = tmp_path / "r"

    def boom(k):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_images(digits, out, 32, shard_size=500, workers=1, after_shard=boom)
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.npz", "shard-00001.npz"]  # no temp, no index
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    index = build_images(digits, out, 32, shard_size=500, workers=1)
    assert _digest(out) == _digest(digit_shards)
    assert {p: (out / p).stat().st_mtime_ns for p in first} == first  # finished shards were kept
    assert index["num_images"] == 1797
    # deleting the last shard: only it is rebuilt, same bytes
    (out / "shard-00003.npz").unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".shard-00003.npz.{HOST}-{dead.pid}.abcd1234.tmp").write_bytes(b"half")  # a killed writer's leftover
    build_images(digits, out, 32, shard_size=500, workers=1)
    assert _digest(out) == _digest(digit_shards)


def test_changed_settings_rebuild(digits, digit_shards, tmp_path):
    out = tmp_path / "c"
    build_images(digits, out, 16, shard_size=500, workers=1)
    build_images(digits, out, 32, shard_size=500, workers=1)  # same names, other resolution
    assert _digest(out) == _digest(digit_shards)
    build_images(digits, out, 32, shard_size=1000, workers=1, max_per_class=50)
    index = load_index(out)
    assert index["num_images"] == 500 and sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.npz"]


def _jpeg(rng, w, h, quality=90):
    a = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(a).resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_corrupt_files_reported_not_used(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "tree"
    for cls in ("n01", "n02"):
        (src / cls).mkdir(parents=True)
        for i, (w, h) in enumerate([(120, 90), (70, 130)]):
            (src / cls / f"{cls}_{i}.JPEG").write_bytes(_jpeg(rng, w, h))
    good = (src / "n01" / "n01_0.JPEG").read_bytes()
    (src / "n01" / "n01_5.JPEG").write_bytes(good[: len(good) // 2])  # truncated
    (src / "n02" / "n02_9.JPEG").write_text("not an image\n")
    out = tmp_path / "img"
    assert main(["images", "--src", str(src), "--resolution", "24", "--out", str(out), "--workers", "1"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["num_images"] == 4 and index["num_corrupt"] == 2
    assert sorted(c["file"] for c in index["corrupt"]) == ["n01/n01_5.JPEG", "n02/n02_9.JPEG"]
    assert all(c["reason"] for c in index["corrupt"])
    err = capsys.readouterr().err
    assert "n01/n01_5.JPEG" in err and "n02/n02_9.JPEG" in err
    x, y = open_shard(out / "shard-00000.npz")
    assert x.shape == (4, 24, 24, 3) and list(y) == [0, 0, 1, 1]
    expect = np.asarray(center_crop_adm(Image.open(src / "n02" / "n02_1.JPEG").convert("RGB"), 24))
    np.testing.assert_array_equal(x[3], expect)


def test_shard_dataset(digit_shards):
    ds = ShardDataset(digit_shards)
    assert len(ds) == 1797 and ds.classes[0] == "digit_0"
    imgs, labels = zip(*((np.asarray(x), y) for x, y in iter_shards(digit_shards)), strict=True)
    x, y = ds[777]  # shard 1, row 277
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == int(labels[1][277])
    ref = torch.from_numpy(np.array(imgs[1][277])).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, (ref - 0.5) / 0.5)
    raw = ShardDataset(digit_shards, normalize=False)
    assert raw[1796][0].dtype == torch.uint8 and raw[1796][1] == 9
    flips = ShardDataset(digit_shards, flip=True, normalize=False)
    torch.manual_seed(0)
    seen = {bool(torch.equal(flips[5][0], raw[5][0].flip(2))) for _ in range(20)}
    assert seen == {True, False}
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1500][0], ds[1500][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=600)
    assert sum(len(b[1]) for b in loader) == 1797
    with pytest.raises(IndexError):
        ds[1797]


def test_iter_batches_cross_shards(digit_shards):
    batches = list(iter_batches(digit_shards, 256))
    assert [len(b[0]) for b in batches] == [256] * 7 + [5]
    allx = np.concatenate([b[0] for b in batches])
    ref = np.concatenate([np.asarray(x) for x, _ in iter_shards(digit_shards, mmap=False)])
    np.testing.assert_array_equal(allx, ref)


def test_params_mode_of_both_stages(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["data"].update({"name": "dg", "source": "digits", "max_per_class": 5, "resolution": 16, "shard_size": 20})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    assert main(["dataset", "--params", "p.yaml", "--workers", "1"]) == 0
    assert main(["dataset", "--params", "p.yaml", "--workers", "1"]) == 0  # the pipeline's artifact: replaced
    assert json.loads(Path("data/dg/raw/manifest.json").read_text())["num_images"] == 50
    assert main(["images", "--params", "p.yaml", "--workers", "1"]) == 0
    index = load_index("data/dg/images-16")
    assert index["num_images"] == 50 and len(index["shards"]) == 3
    x = np.concatenate([np.asarray(a) for a, _ in iter_shards("data/dg/images-16")])
    # 32 -> 16: one exact BOX halving of 4x4 blocks = the 8x8 digit upscaled x2
    d = load_digits()
    first = [np.flatnonzero(d.target == c)[:5] for c in range(10)]
    expect = np.kron(np.round(d.images[np.concatenate(first)] * 255 / 16), np.ones((1, 2, 2)))
    np.testing.assert_array_equal(x[..., 1], expect)
    shutil.rmtree("data")
