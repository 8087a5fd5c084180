"""Fashion-MNIST: the dataset source on Debian's real files (md5-checked, parsed by our own IDX reader,
checked against torchvision's), the t10k split carried through the images stage as val/ into the
reference stage, and the independent judge (right on real t10k images, also after the pipeline's
28 -> 32 crop, at chance on shuffled labels).

CI installs the data (`apt-get install dataset-fashion-mnist`); without it these tests skip, saying
so in one line (CI sets DIFFZOO_NO_SKIPS=1, which fails any skip: there they must run)."""
import gzip
import hashlib
import io
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from diffzoo.cli import main
from diffzoo.data import dataset as ds
from diffzoo.data.crop import center_crop_adm
from diffzoo.data.images import build_images
from diffzoo.data.shards import iter_shards, load_index
from diffzoo.errors import DiffzooError
from diffzoo.evaluate.judge import fashion_mnist_accuracy, judge_for, judge_source, to_fashion

DEBIAN = ds.FASHION_MNIST_DEBIAN
FILES = [f"{n}.gz" for n in ds.FASHION_MNIST_FILES]
N = 30  # max_per_class


@pytest.fixture(scope="module", autouse=True)
def debian_files():
    missing = [f for f in FILES if not (DEBIAN / f).is_file()]
    if missing:
        pytest.skip(f"Fashion-MNIST is not installed ({', '.join(missing)} missing in {DEBIAN}): "
                    "run `apt-get install dataset-fashion-mnist`")


@pytest.fixture(scope="module")
def raw():
    """The four files as numpy arrays, decoded here with nothing but gzip and numpy."""
    def read(name, offset):
        return np.frombuffer(gzip.decompress((DEBIAN / name).read_bytes()), np.uint8, offset=offset)
    return {split: (read(f"{p}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28), read(f"{p}-labels-idx1-ubyte.gz", 8))
            for split, p in (("train", "train"), ("val", "t10k"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm") / "raw"
    return out, ds.build_dataset("fashion_mnist", [], out, max_per_class=N, workers=1)


def test_source_writes_train_and_val_trees_from_the_real_files(small, raw):
    out, manifest = small
    assert manifest["classes"] == sorted(manifest["classes"]) == list(ds.FASHION_MNIST_DIRS)
    assert manifest["classes"][0] == "0_t-shirt-top" and manifest["classes"][9] == "9_ankle-boot"
    assert manifest["class_names"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                       "Sneaker", "Bag", "Ankle boot"]
    assert manifest["num_images"] == manifest["num_val_images"] == 10 * N
    assert set(manifest["counts"].values()) == set(manifest["val_counts"].values()) == {N}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    by_name = {a["path"].rsplit("/", 1)[1]: a for a in manifest["archives"]}
    assert sorted(by_name) == sorted(FILES)
    for name, (_, idx_md5) in ds.FASHION_MNIST_FILES.items():
        rec = by_name[f"{name}.gz"]
        assert rec["bytes"] == (DEBIAN / f"{name}.gz").stat().st_size and len(rec["sha256"]) == 64
        data = (DEBIAN / f"{name}.gz").read_bytes()
        assert rec["md5"] == hashlib.md5(data).hexdigest() and rec["idx_md5"] == idx_md5
        assert hashlib.md5(gzip.decompress(data)).hexdigest() == idx_md5  # the published IDX bytes
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images, labels = raw[split]
        for label, cls in enumerate(manifest["classes"]):
            first = np.flatnonzero(labels == label)[:N]  # the first N of the class in file order
            files = sorted((out / split / cls).iterdir())
            assert [f.name for f in files] == [f"{prefix}_{i:05d}.png" for i in first]
            for f, i in zip(files[:3], first[:3], strict=True):
                with Image.open(f) as im:
                    assert im.mode == "RGB" and im.size == (28, 28)
                    px = np.asarray(im)
                np.testing.assert_array_equal(px, np.repeat(images[i][..., None], 3, axis=2))


def test_idx_reader_agrees_with_torchvisions(tmp_path):
    mnist = pytest.importorskip("torchvision.datasets.mnist")  # an independent reader of the same format
    folder = ds.fashion_mnist_folder(None)
    for name in ds.FASHION_MNIST_FILES:
        plain = tmp_path / name
        plain.write_bytes(gzip.decompress((folder / f"{name}.gz").read_bytes()))
        ours = ds.parse_idx(plain.read_bytes())
        theirs = (mnist.read_image_file if "images" in name else mnist.read_label_file)(str(plain)).numpy()
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    d = tmp_path_factory.mktemp("fm-good")
    for f in FILES:
        shutil.copyfile(DEBIAN / f, d / f)
    return d


def _folder_with(copies, tmp_path, name, content):
    """A folder of the good files in which `name` holds `content` (None: absent)."""
    d = tmp_path / "in"
    d.mkdir()
    for f in FILES:
        if f != name:
            (d / f).symlink_to(copies / f)
    if content is not None:
        (d / name).write_bytes(content)
    return d


def _refusal(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["dataset", "--source", "fashion_mnist", "--input", str(folder), "--out", str(out)]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert not out.exists()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("case", ["missing", "truncated", "corrupt", "wrong-content", "not-gzip"])
def test_bad_files_are_refused_with_one_line_naming_them(case, copies, tmp_path, capsys):
    small_file = case in ("missing", "wrong-content", "not-gzip")
    name = "t10k-labels-idx1-ubyte.gz" if small_file else "t10k-images-idx3-ubyte.gz"
    good = (copies / name).read_bytes()
    if case == "missing":
        content = None
    elif case == "truncated":
        content = good[: len(good) // 2]
    elif case == "corrupt":
        content = bytearray(good)
        content[len(good) // 2] ^= 0xFF
        content = bytes(content)
    elif case == "wrong-content":  # a well-formed gzip of a well-formed IDX file with one label changed
        labels = bytearray(gzip.decompress(good))
        labels[8] = (labels[8] + 1) % 10
        content = gzip.compress(bytes(labels))
    else:
        content = b"<html>404 Not Found</html>"
    line = _refusal(_folder_with(copies, tmp_path, name, content), tmp_path, capsys)
    assert name in line and "apt-get install dataset-fashion-mnist" in line and ds.FASHION_MNIST_URL in line
    expect = {"missing": "is missing", "truncated": "truncated or corrupt", "corrupt": "truncated or corrupt",
              "wrong-content": "wrong md5", "not-gzip": "truncated or corrupt"}[case]
    assert expect in line, line
    print(line)


def test_an_uncompressed_copy_is_accepted_by_its_content_md5(copies, tmp_path):
    """torchvision's raw/ folder holds the un-gzipped files: their content md5 is checked."""
    name = "t10k-labels-idx1-ubyte"
    d = _folder_with(copies, tmp_path, f"{name}.gz", None)
    (d / name).write_bytes(gzip.decompress((copies / f"{name}.gz").read_bytes()))
    splits, archives = ds.read_fashion_mnist(d)
    assert [a["path"] for a in archives if name in a["path"]] == [str(d / name)]
    assert len(splits["val"][1]) == 10000


def test_offline_without_debians_files_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "FASHION_MNIST_DEBIAN", tmp_path / "absent")
    monkeypatch.setenv("DIFFZOO_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DiffzooError) as err:
        ds.build_dataset("fashion_mnist", [], tmp_path / "out")
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and ds.FASHION_MNIST_URL in msg
    assert not (tmp_path / "out").exists() and not list((tmp_path / "cache").rglob("*.part"))
    # a download that is not the published file (a captive portal's page) is refused and not kept
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"<html>log in first</html>"))
    with pytest.raises(DiffzooError, match="not the published 8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        ds.build_dataset("fashion_mnist", [], tmp_path / "out")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def shards(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("fm32") / "images-32"
    build_images(small[0], out, 32, shard_size=128, workers=1)
    return out


def test_images_stage_carries_the_val_split(small, shards, raw):
    index, val = load_index(shards), load_index(shards / "val")
    assert index["val"] == "val" and "val" not in val
    assert index["num_images"] == val["num_images"] == 10 * N
    assert index["classes"] == val["classes"] == list(ds.FASHION_MNIST_DIRS)
    assert index["class_names"] == val["class_names"] == list(ds.FASHION_MNIST_CLASSES)
    assert val["resolution"] == 32 and val["crop"] == index["crop"]
    images = np.concatenate([np.asarray(x) for x, _ in iter_shards(shards / "val")])
    labels = np.concatenate([y for _, y in iter_shards(shards / "val")])
    t10k, t10k_labels = raw["val"]
    first = np.concatenate([np.flatnonzero(t10k_labels == c)[:N] for c in range(10)])  # class-major, file order
    np.testing.assert_array_equal(labels, t10k_labels[first])
    for k in (0, 150, 299):
        rgb = Image.fromarray(np.repeat(t10k[first[k]][..., None], 3, axis=2), "RGB")
        np.testing.assert_array_equal(images[k], np.asarray(center_crop_adm(rgb, 32)))
    # a rerun keeps every shard of both splits
    mtimes = {p: p.stat().st_mtime_ns for p in shards.rglob("shard-*.npz")}
    build_images(small[0], shards, 32, shard_size=128, workers=1)
    assert {p: p.stat().st_mtime_ns for p in shards.rglob("shard-*.npz")} == mtimes


def test_reference_trains_on_all_training_images_and_scores_the_val_split(shards, tmp_path):
    from diffzoo.evaluate.floor import build_classifier_reference

    cfg = {"epochs": 1, "batch_size": 64, "width": 4, "feature_dim": 16}
    real = build_classifier_reference(shards, tmp_path, cfg, 100, "float32",
                                      judge=judge_for("fashion_mnist", None))
    info = json.loads((tmp_path / "classifier.json").read_text())
    assert info["num_train"] == info["num_heldout"] == 10 * N and "val" in info["split"]
    assert real["samples"]["num_images"] == 10 * N and real["samples"]["path"].endswith("val")
    assert real["judge_accuracy"] > 0.75  # the t10k images after the 28 -> 32 crop (300 of them)


def test_judge_is_right_on_real_t10k_also_after_the_pipelines_crop(raw):
    images, labels = raw["val"]
    accuracy = fashion_mnist_accuracy(images, labels)
    assert accuracy >= 0.85
    keep = np.arange(len(labels)) % 2 == 0  # 5000 images through the pipeline's 28 -> 32 crop
    cropped = np.stack([np.asarray(center_crop_adm(Image.fromarray(np.repeat(g[..., None], 3, 2), "RGB"), 32))
                        for g in images[keep]])
    through_pipeline = fashion_mnist_accuracy(cropped, labels[keep])
    direct = fashion_mnist_accuracy(images[keep], labels[keep])
    assert abs(through_pipeline - direct) <= 0.01, (through_pipeline, direct)
    assert fashion_mnist_accuracy(cropped[..., :1], labels[keep]) == fashion_mnist_accuracy(cropped, labels[keep])
    shuffled = np.random.default_rng(0).permutation(labels)
    assert abs(fashion_mnist_accuracy(images, shuffled) - 0.1) < 0.03
    print(f"judge: t10k {accuracy:.4f}")


def test_judge_lookup_and_image_mapping():
    from diffzoo.evaluate.images import ArrayImages
    from diffzoo.evaluate.judge import judge_accuracy

    assert judge_for("digits", None) is judge_accuracy and judge_for("imagenet-tar", "x") is None
    square = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28)
    np.testing.assert_array_equal(to_fashion(square), square.reshape(1, -1))
    np.testing.assert_array_equal(to_fashion(np.repeat(square[..., None], 3, -1)), square.reshape(1, -1))
    assert to_fashion(np.zeros((2, 64, 48, 3), np.uint8)).shape == (2, 784)
    with pytest.raises(DiffzooError, match="uint8"):
        to_fashion(np.zeros((2, 32, 32, 3), np.float32))
    src = ArrayImages(np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 2, 3]))
    assert judge_source(src, lambda images, labels: float(len(images))) == 4.0
