"""The ImageNet forms (per-class tar, folder tree, HF parquet) give the same canonical data set."""
import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from diffzoo import cli
from diffzoo.data.dataset import ILSVRC2012_TRAIN_MD5, build_dataset, hf_file_name, read_class_list
from diffzoo.data.images import build_images
from diffzoo.errors import DiffzooError

SYNSETS = ["n01440764", "n01443537", "n02102040"]  # written to disk out of order below


def _jpeg(seed, w, h):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).resize((w, h), Image.BILINEAR).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _files():
    """synset -> {file name: bytes}: 3 good JPEGs each, one truncated JPEG, one non-image file."""
    sizes = [(200, 150), (90, 160), (333, 250)]
    files = {}
    for s, syn in enumerate(SYNSETS):
        files[syn] = {f"{syn}_{100 + i}.JPEG": _jpeg(10 * s + i, *sizes[i]) for i in range(3)}
    whole = files[SYNSETS[1]][f"{SYNSETS[1]}_101.JPEG"]
    files[SYNSETS[1]][f"{SYNSETS[1]}_050.JPEG"] = whole[: len(whole) * 2 // 3]  # truncated
    files[SYNSETS[2]][f"{SYNSETS[2]}_000.JPEG"] = b"<html>403 Forbidden</html>\n"  # not an image
    return files


def _tar_add(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _make_tar(path, files):
    with tarfile.open(path, "w") as outer:
        for syn in reversed(SYNSETS):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for name, data in reversed(list(files[syn].items())):
                    _tar_add(inner, name, data)
            _tar_add(outer, f"{syn}.tar", buf.getvalue())


def _make_folder(root, files):
    for syn, items in files.items():
        (root / "train" / syn).mkdir(parents=True)
        for name, data in items.items():
            (root / "train" / syn / name).write_bytes(data)


def _tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "train").rglob("*")) if p.is_file()}


def _summary(manifest):
    return (manifest["classes"], manifest["counts"],
            sorted((c["class"], c["name"]) for c in manifest["corrupt"]))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("inet")
    files = _files()
    _make_tar(base / "train.tar", files)
    _make_folder(base / "folder", files)
    return base, files


cli_main = cli.main


def test_tar_and_folder_identical(sources, tmp_path):
    base, files = sources
    m_tar = build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "a", workers=1)
    m_dir = build_dataset("imagenet-folder", [base / "folder"], tmp_path / "b", workers=2)
    assert m_tar["classes"] == SYNSETS == m_dir["classes"]
    assert m_tar["counts"] == {s: 3 for s in SYNSETS}
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _summary(m_tar) == _summary(m_dir)
    assert sorted((c["class"], c["name"]) for c in m_tar["corrupt"]) == [
        (SYNSETS[1], f"{SYNSETS[1]}_050.JPEG"), (SYNSETS[2], f"{SYNSETS[2]}_000.JPEG")]
    assert m_tar["num_corrupt"] == 2 and all(c["reason"] for c in m_tar["corrupt"])
    # same bytes as the inputs, good files only
    for syn in SYNSETS:
        for name, data in files[syn].items():
            p = tmp_path / "a" / "train" / syn / name
            assert p.is_file() == (name not in (f"{SYNSETS[1]}_050.JPEG", f"{SYNSETS[2]}_000.JPEG"))
            if p.is_file():
                assert p.read_bytes() == data
    assert m_tar["archives"][0]["sha256"] == hashlib.sha256((base / "train.tar").read_bytes()).hexdigest()
    # and the images stage makes identical shards from both
    build_images(tmp_path / "a", tmp_path / "ia", 64, workers=1)
    build_images(tmp_path / "b", tmp_path / "ib", 64, workers=1)
    assert (tmp_path / "ia" / "shard-00000.npz").read_bytes() == (tmp_path / "ib" / "shard-00000.npz").read_bytes()


def test_flat_tar_of_the_tree(sources, tmp_path):
    base, files = sources
    with tarfile.open(tmp_path / "flat.tar", "w") as tf:
        for syn in SYNSETS:
            for name, data in files[syn].items():
                _tar_add(tf, f"train/{syn}/{name}", data)
    build_dataset("imagenet-tar", [tmp_path / "flat.tar"], tmp_path / "a", workers=1)
    build_dataset("imagenet-folder", [base / "folder" / "train"], tmp_path / "b", workers=1)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def test_max_per_class_same_selection(sources, tmp_path):
    base, _ = sources
    m1 = build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "a", workers=1, max_per_class=2)
    m2 = build_dataset("imagenet-folder", [base / "folder"], tmp_path / "b", workers=1, max_per_class=2)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b") and m1["num_images"] == 6
    assert _summary(m1) == _summary(m2)


def test_checksums(sources, tmp_path):
    base, _ = sources
    sha = hashlib.sha256((base / "train.tar").read_bytes()).hexdigest()
    md5 = hashlib.md5((base / "train.tar").read_bytes()).hexdigest()
    m = build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "ok", sha256=sha, md5=md5, workers=1)
    assert m["archives"][0]["md5"] == md5
    with pytest.raises(DiffzooError, match="sha256"):
        build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "bad", sha256="0" * 64, workers=1)
    with pytest.raises(DiffzooError, match=f"md5 {md5} != expected {ILSVRC2012_TRAIN_MD5}"):
        build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "bad", md5="ilsvrc2012", workers=1)
    assert not (tmp_path / "bad").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def _boundary(tar_path):
    """Byte offset where the second outer member's header starts (end of the first member's data)."""
    with tarfile.open(tar_path) as tf:
        first = tf.getmembers()[0]
        return first.offset_data + (first.size + 511) // 512 * 512


@pytest.mark.parametrize("where", ["middle", "boundary", "header"])
def test_truncated_tar_stops_with_clear_error(sources, tmp_path, where, capsys):
    base, _ = sources
    data = (base / "train.tar").read_bytes()
    cut = {"middle": len(data) // 2, "boundary": _boundary(base / "train.tar"),
           "header": _boundary(base / "train.tar") + 100}[where]
    bad = tmp_path / "cut.tar"
    bad.write_bytes(data[:cut])
    out = tmp_path / "out"
    with pytest.raises(DiffzooError, match=r"cut\.tar is truncated"):
        build_dataset("imagenet-tar", [bad], out, workers=1)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cut.tar"]
    assert cli_main(["dataset", "--source", "imagenet-tar", "--input", str(bad), "--out", str(out),
                     "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.tar" in err[0] and "byte" in err[0]


def test_hf_names_and_class_lists(tmp_path):
    assert hf_file_name("n01440764_10026_n01440764.JPEG", "n01440764") == "n01440764_10026.JPEG"
    assert hf_file_name("train/n01440764_10026.JPEG", "n01440764") == "n01440764_10026.JPEG"
    assert hf_file_name(None, "n01440764") is None
    (tmp_path / "classes.py").write_text(
        "IMAGENET2012_CLASSES = OrderedDict({\n 'n01440764': 'tench, Tinca tinca',\n"
        " 'n01443537': 'goldfish',\n 'n02102040': 'English springer'})\n")
    assert read_class_list(tmp_path / "classes.py") == SYNSETS
    (tmp_path / "map.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    assert read_class_list(tmp_path / "map.txt") == SYNSETS[:2]


# ------------------------------------------------------------------------------------------- parquet
def _parquet_rows(files, with_path=True):
    rows = []
    for label, syn in enumerate(SYNSETS):  # HF labels: index in sorted synset order
        for name, data in files[syn].items():
            stem = name.rsplit(".", 1)[0]
            path = f"{stem}_{syn}.JPEG" if with_path else None
            rows.append({"image": {"bytes": data, "path": path}, "label": label})
    rng = np.random.default_rng(3)
    return [rows[i] for i in rng.permutation(len(rows))]


def test_parquet_identical_to_tar(sources, tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is needed by the imagenet-parquet source")
    import pyarrow.parquet as pq

    base, files = sources
    rows = _parquet_rows(files)
    shard_dir = tmp_path / "hf" / "data"
    shard_dir.mkdir(parents=True)
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())])
    half = len(rows) // 2
    for i, part in enumerate([rows[:half], rows[half:]]):
        pq.write_table(pa.Table.from_pylist(part, schema=schema), shard_dir / f"train-{i:05d}-of-00002.parquet")
    m_pq = build_dataset("imagenet-parquet", [tmp_path / "hf"], tmp_path / "p", workers=1)
    m_tar = build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "t", workers=1)
    assert _tree(tmp_path / "p") == _tree(tmp_path / "t")
    assert _summary(m_pq) == _summary(m_tar)
    assert len(m_pq["archives"]) == 2
    # without paths the classes list maps labels; names then come from the shard and row
    (tmp_path / "nopath").mkdir()
    pq.write_table(pa.Table.from_pylist(_parquet_rows(files, with_path=False), schema=schema),
                   tmp_path / "nopath" / "train.parquet")
    (tmp_path / "classes.txt").write_text("\n".join(SYNSETS) + "\n")
    with pytest.raises(DiffzooError, match="--classes"):
        build_dataset("imagenet-parquet", [tmp_path / "nopath"], tmp_path / "q", workers=1)
    m = build_dataset("imagenet-parquet", [tmp_path / "nopath"], tmp_path / "q", workers=1,
                      classes=tmp_path / "classes.txt")
    assert m["counts"] == m_tar["counts"]
    decoded = {p.read_bytes() for p in (tmp_path / "q" / "train").rglob("*")if p.is_file()}
    assert decoded == {p.read_bytes() for p in (tmp_path / "t" / "train").rglob("*") if p.is_file()}


class _Sink:
    """Stand-in for the collector: records what a parquet row turns into (no pyarrow needed)."""

    def __init__(self):
        self.added, self.corrupt = [], []

    def add_class(self, cls):
        pass

    def add(self, cls, name, data, where):
        self.added.append((cls, name, data))


def test_parquet_row_mapping_without_pyarrow(tmp_path):
    from pathlib import Path

    from diffzoo.data.dataset import _parquet_row

    sink = _Sink()
    rec = {"image": {"bytes": b"x", "path": "n01443537_7_n01443537.JPEG"}, "label": 1}
    _parquet_row(rec, 0, Path("s.parquet"), "s:0", SYNSETS, sink)
    _parquet_row(rec, 0, Path("s.parquet"), "s:0", None, sink)
    _parquet_row({"image": {"bytes": b"y", "path": None}, "label": 2}, 7, Path("s.parquet"), "s:7", SYNSETS, sink)
    assert sink.added == [(SYNSETS[1], "n01443537_7.JPEG", b"x")] * 2 + [(SYNSETS[2], "s_0000007.JPEG", b"y")]
    with pytest.raises(DiffzooError, match="path says"):
        _parquet_row(dict(rec, label=0), 0, Path("s.parquet"), "s:0", SYNSETS, sink)
    with pytest.raises(DiffzooError, match="outside"):
        _parquet_row(dict(rec, label=5), 0, Path("s.parquet"), "s:0", SYNSETS, sink)


def test_pipelined_batches_with_a_pool(sources, tmp_path, monkeypatch):
    import diffzoo.data.dataset as ds

    base, _ = sources
    ref = build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "ref", workers=1)
    monkeypatch.setattr(ds, "_CHECK_BATCH", 2)  # many batches in flight while the tar streams
    m = build_dataset("imagenet-tar", [base / "train.tar"], tmp_path / "a", workers=2)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "ref") and _summary(m) == _summary(ref)
    m = build_dataset("imagenet-folder", [base / "folder"], tmp_path / "b", workers=2, max_per_class=2)
    m1 = build_dataset("imagenet-folder", [base / "folder"], tmp_path / "c", workers=1, max_per_class=2)
    assert _tree(tmp_path / "b") == _tree(tmp_path / "c") and _summary(m) == _summary(m1)
