"""`diffzoo dataset`: bring a labeled image data set into one canonical form.

OUT/train/<class_id>/<image files> plus OUT/manifest.json. Class index = position of the class id in
sorted order (as torchvision's ImageFolder, which DiT trains with). Every image is fully decoded once;
the ones that do not decode (truncated, not an image) are listed in the manifest with the reason and
left out. OUT appears only when complete: the tree is built in a temp folder beside it and renamed.

Sources: digits (scikit-learn's 8x8 handwritten digits, shipped with the package), fashion_mnist
(below), imagenet-tar (the ILSVRC2012 train tar of per-class tars, streamed), imagenet-folder
(train/<synset>/*.JPEG), imagenet-parquet (Hugging Face ILSVRC/imagenet-1k shards; needs pyarrow).

fashion_mnist: Zalando's Fashion-MNIST (28x28 grey, 10 classes) from its four gzipped IDX files, read
from --input FOLDER, else Debian's /usr/share/datasets/fashion-mnist (`apt-get install
dataset-fashion-mnist`), else downloaded into ~/.cache/diffzoo/fashion-mnist. Every file's md5 is checked
before use (the published .gz md5, or the md5 of the IDX bytes inside: Debian re-gzipped the files).
The 60000 train images go to OUT/train/, the 10000 t10k images to OUT/val/ (a held-out split the
images and reference stages carry on), as RGB PNGs with three equal channels named by file index
(train_00000.png, t10k_00000.png). Class folders 0_t-shirt-top ... 9_ankle-boot sort in label order,
so the class index is the label; the manifest lists the human names as `class_names`.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DiffzooError
from ..hub import split as split_ref
from ..utils import atomic_dir, cache_dir, describe, write_json
from . import SOURCES
from ._util import batched, check_image_bytes, worker_map

ILSVRC2012_TRAIN_MD5 = "1d675b47d978889d74fa0da5fadfb00e"  # ILSVRC2012_img_train.tar as ImageNet publishes it
MANIFEST_FORMAT = "diffzoo-dataset/1"
DIGITS_SIDE = 32  # 8x8 upscaled x4 by pixel replication
_SYNSET = re.compile(r"\bn\d{8}\b")
_CHECK_BATCH = 256  # images decoded per pool round: bounds memory while streaming


# ----------------------------------------------------------------------------------------------------
class _Collector:
    """Receives (class id, file name, bytes) in any order; decodes in batches, writes the good ones."""

    def __init__(self, train_dir: Path, mapper, max_per_class: int | None):
        self.train_dir = train_dir
        self.map = mapper
        self.max_per_class = max_per_class
        self.kept: dict[str, set] = defaultdict(set)
        self.corrupt: list[dict] = []
        self.pending: list[tuple[str, str, bytes, str]] = []
        self.in_flight = None  # (batch, iterator of reasons) being decoded

    def add_class(self, cls: str) -> None:
        if cls not in self.kept:
            _check_class_name(cls)
            (self.train_dir / cls).mkdir(parents=True, exist_ok=True)
            self.kept[cls]  # noqa: B018 - creates the entry

    def full(self, cls: str) -> bool:
        """True once the class holds max_per_class images (only meaningful after flush())."""
        return self.max_per_class is not None and len(self.kept[cls]) >= self.max_per_class

    def add(self, cls: str, name: str, data: bytes, where: str) -> None:
        self.add_class(cls)
        self.pending.append((cls, name, data, where))
        if len(self.pending) >= _CHECK_BATCH:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Start decoding the pending batch, then write the previous batch's good files.

        With a pool the decoding runs in the background while the caller reads the next batch, so at
        most two batches are in memory. wait=True also finishes the batch just started.
        """
        batch, self.pending = self.pending, []
        started = (batch, self.map(check_image_bytes, [b[2] for b in batch], 8)) if batch else None
        previous, self.in_flight = self.in_flight, started
        if previous is not None:
            self._write(*previous)
        if wait and self.in_flight is not None:
            current, self.in_flight = self.in_flight, None
            self._write(*current)

    def _write(self, batch, reasons) -> None:
        for (cls, name, data, where), reason in zip(batch, reasons, strict=True):
            if reason is None and (name.startswith(".") or "/" in name or name in ("", "..")):
                reason = "unusable file name"
            if reason is None and name in self.kept[cls]:
                reason = "duplicate file name in its class"
            if reason is not None:
                self.corrupt.append({"file": where, "class": cls, "name": name, "reason": reason})
                continue
            with open(self.train_dir / cls / name, "wb") as f:
                f.write(data)
            self.kept[cls].add(name)

    def finish(self) -> dict[str, list[str]]:
        """Flush, apply max_per_class (first N good names in sorted order), return class -> names."""
        self.flush()
        out = {}
        for cls in sorted(self.kept):
            names = sorted(self.kept[cls])
            n = self.max_per_class
            if n is not None and len(names) > n:
                for extra in names[n:]:
                    (self.train_dir / cls / extra).unlink()
                cutoff = names[n - 1]
                # report only the bad files that sort before the last kept one, as a sorted scan would
                self.corrupt = [c for c in self.corrupt if c["class"] != cls or c["name"] < cutoff]
                names = names[:n]
            out[cls] = names
        self.corrupt.sort(key=lambda c: (c["class"], c["name"], c["file"]))
        return out


def _check_class_name(cls: str) -> None:
    if not cls or cls.startswith(".") or "/" in cls or "\\" in cls:
        raise DiffzooError(f"unusable class id {cls!r}")


# ----------------------------------------------------------------------------------------------------
def build_dataset(source: str, inputs=(), out=None, *, sha256=None, md5=None, classes=None, hf_repo=None,
                  split="train", download_dir=None, max_per_class=None, workers=None, force=False) -> dict:
    """Build OUT (see module doc) and return its manifest."""
    if source not in SOURCES:
        raise DiffzooError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    if out is None:
        raise DiffzooError("--out is required")
    if max_per_class is not None and max_per_class < 1:
        raise DiffzooError(f"--max-per-class must be >= 1, got {max_per_class}")
    inputs = [Path(p) for p in (inputs or [])]
    if (sha256 or md5) and source != "imagenet-tar":
        raise DiffzooError("--sha256/--md5 apply to the imagenet-tar source")
    out = Path(out)
    if out.exists() and not force:
        raise DiffzooError(f"{out} exists; pass --force to replace it")
    with atomic_dir(out) as tmp:  # the finished tree replaces `out` by a rename
        train = tmp / "train"
        train.mkdir(parents=True)
        if source == "digits":
            if inputs:
                raise DiffzooError("the digits source is embedded; it takes no --input")
            manifest = _digits(train, max_per_class)
        elif source == "fashion_mnist":
            manifest = _fashion_mnist(tmp, inputs, max_per_class, workers)
        else:
            with worker_map(workers) as mapper:
                collector = _Collector(train, mapper, max_per_class)
                if source == "imagenet-tar":
                    archives = _imagenet_tar(inputs, collector, sha256, md5)
                elif source == "imagenet-folder":
                    archives = _imagenet_folder(inputs, collector)
                else:
                    archives = _imagenet_parquet(inputs, collector, classes, hf_repo, split, download_dir)
                per_class = collector.finish()
            manifest = _manifest(source, [str(p) for p in inputs] or ([hf_repo] if hf_repo else []),
                                 per_class, archives, collector.corrupt, max_per_class)
        write_json(tmp / "manifest.json", manifest, sort_keys=False)
    for c in manifest["corrupt"]:
        print(f"dataset: excluded {c['file']}: {c['reason']}", file=sys.stderr)
    return manifest


def _manifest(source, inputs, per_class, archives, corrupt, max_per_class) -> dict:
    classes = sorted(per_class)
    counts = {c: len(per_class[c]) for c in classes}
    return {
        "format": MANIFEST_FORMAT,
        "source": source,
        "inputs": inputs,
        "layout": "train/<class_id>/<file>; class index = position in 'classes' (sorted)",
        "classes": classes,
        "num_classes": len(classes),
        "num_images": sum(counts.values()),
        "counts": counts,
        "max_per_class": max_per_class,
        "archives": archives,
        "num_corrupt": len(corrupt),
        "corrupt": [{"file": c["file"], "class": c["class"], "name": c["name"], "reason": c["reason"]}
                    for c in corrupt],
    }


# ---------------------------------------------------------------------------------------------- digits
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (1797, 32, 32, 3) images and int64 labels.

    Gray values 0..16 map to round(v * 255 / 16); each pixel becomes a 4x4 block; gray is replicated
    to three channels.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.rint(d.images.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    k = DIGITS_SIDE // gray.shape[1]
    big = gray.repeat(k, axis=1).repeat(k, axis=2)
    return np.repeat(big[..., None], 3, axis=3), d.target.astype(np.int64)


def _digits_source_file() -> Path | None:
    import sklearn.datasets

    p = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    return p if p.is_file() else None


def _digits(train: Path, max_per_class) -> dict:
    images, labels = digits_images()
    per_class: dict[str, list[str]] = {f"digit_{c}": [] for c in range(10)}
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        cls = f"digit_{int(lab)}"
        if max_per_class is not None and len(per_class[cls]) >= max_per_class:
            continue
        name = f"{cls}_{i:04d}.png"
        (train / cls).mkdir(exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format="PNG", compress_level=6)
        (train / cls / name).write_bytes(buf.getvalue())
        per_class[cls].append(name)
    src = _digits_source_file()
    archives = [_file_digest(src)] if src else []
    if archives:
        archives[0]["path"] = "sklearn/datasets/data/digits.csv.gz"
    return _manifest("digits", [], per_class, archives, [], max_per_class)


def _file_digest(path: Path, md5: bool = False) -> dict:
    h = hashlib.sha256()
    m = hashlib.md5() if md5 else None
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            if m:
                m.update(chunk)
    rec = {"path": str(path), "bytes": path.stat().st_size, "sha256": h.hexdigest()}
    if m:
        rec["md5"] = m.hexdigest()
    return rec


# --------------------------------------------------------------------------------------- Fashion-MNIST
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # torchvision's mirror
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")  # label order
# Class folders sort in label order, so the class index (position in sorted order) is the label.
FASHION_MNIST_DIRS = tuple(f"{i}_{re.sub(r'[^a-z0-9]+', '-', n.lower())}" for i, n in enumerate(FASHION_MNIST_CLASSES))
# name: (md5 of the .gz as published -- torchvision's FashionMNIST.resources, Zalando's README --,
#        md5 of the uncompressed IDX file, as other public Fashion-MNIST readers list it; torchvision
#        lists only the .gz md5s). Debian's package (0.0~git20200523) re-gzipped the files (no file
# name in the gzip header, a 2020-06-05 timestamp), so its .gz md5s differ while the IDX bytes
# inside match the published md5s: a file is accepted when either md5 matches.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
_IDX_MAGIC = {2051: 3, 2049: 1}  # unsigned-byte images (N, rows, cols), labels (N,)
_FASHION_SPLITS = (("train", "train", 60000), ("val", "t10k", 10000))  # tree folder, file prefix, count


def _fashion_where(name: str) -> str:
    return (f"get it with `apt-get install dataset-fashion-mnist` (into {FASHION_MNIST_DEBIAN}) or from "
            f"{FASHION_MNIST_URL}{name}.gz")


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """An uncompressed IDX file (unsigned bytes) -> uint8 array of its dimensions (big-endian header)."""
    if len(data) < 8:
        raise DiffzooError(f"{what} is truncated: {len(data)} bytes, shorter than an IDX header")
    magic = int.from_bytes(data[0:4], "big")
    if magic not in _IDX_MAGIC:
        raise DiffzooError(f"{what} is not an unsigned-byte IDX file of images or labels "
                           f"(magic number {magic}, expected 2051 or 2049)")
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DiffzooError(f"{what} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "too long"
        raise DiffzooError(f"{what} is {state}: {len(data)} bytes, its header {dims} says {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def fashion_mnist_folder(path=None, download: bool = True) -> Path:
    """Where the four files are: `path`, else Debian's folder, else ~/.cache/diffzoo/fashion-mnist
    (downloaded there when a file is missing and `download`)."""
    if path is not None:
        path = Path(path)
        if not path.is_dir():
            raise DiffzooError(f"Fashion-MNIST folder {path} is not a folder (give the folder of the four IDX "
                               f"files; {_fashion_where('train-images-idx3-ubyte')})")
        return path
    if FASHION_MNIST_DEBIAN.is_dir():
        return FASHION_MNIST_DEBIAN

    cache = cache_dir("fashion-mnist")
    missing = [n for n in FASHION_MNIST_FILES if not _idx_file(cache, n)]
    if missing and download:
        _download_fashion_mnist(cache, missing)
    return cache


def _idx_file(folder: Path, name: str) -> Path | None:
    for p in (folder / f"{name}.gz", folder / name):  # torchvision's raw folder holds both forms
        if p.is_file():
            return p
    return None


def _download_fashion_mnist(folder: Path, names) -> None:
    import urllib.request

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        url = f"{FASHION_MNIST_URL}{name}.gz"
        dest = folder / f"{name}.gz"
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        print(f"dataset: downloading {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except OSError as err:  # URLError, timeouts, refused connections: no network
            tmp.unlink(missing_ok=True)
            raise DiffzooError(f"Fashion-MNIST is not installed ({FASHION_MNIST_DEBIAN} is absent) and the download "
                               f"of {url} failed ({err}); install it with `apt-get install dataset-fashion-mnist` "
                               f"or put the four .gz files from {FASHION_MNIST_URL} in {folder}") from None
        md5, published = hashlib.md5(tmp.read_bytes()).hexdigest(), FASHION_MNIST_FILES[name][0]
        if md5 != published:
            tmp.unlink()
            raise DiffzooError(f"the download of {url} has md5 {md5}, not the published {published}; "
                               "install the data with `apt-get install dataset-fashion-mnist` instead")
        os.replace(tmp, dest)


def _read_fashion_file(folder: Path, name: str) -> tuple[np.ndarray, dict]:
    """One of the four files, its md5 checked, parsed -> (array, archive record)."""
    path = _idx_file(folder, name)
    if path is None:
        raise DiffzooError(f"Fashion-MNIST file {folder / (name + '.gz')} is missing; {_fashion_where(name)}")
    raw = path.read_bytes()
    gz_md5, idx_md5 = FASHION_MNIST_FILES[name]
    file_md5 = hashlib.md5(raw).hexdigest()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise DiffzooError(f"Fashion-MNIST file {path} is truncated or corrupt ({describe(err)}; md5 {file_md5}, "
                               f"published {gz_md5}); {_fashion_where(name)}") from None
    else:
        data = raw
    content_md5 = file_md5 if data is raw else hashlib.md5(data).hexdigest()
    if file_md5 != gz_md5 and content_md5 != idx_md5:
        raise DiffzooError(f"Fashion-MNIST file {path} has the wrong md5 ({file_md5}; published {gz_md5} for the .gz, "
                           f"{idx_md5} for the IDX inside); {_fashion_where(name)}")
    array = parse_idx(data, f"Fashion-MNIST file {path}")  # cannot fail once the md5 matched, but says why if so
    rec = {"path": str(path), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "md5": file_md5,
           "idx_md5": content_md5}
    return array, rec


def read_fashion_mnist(folder=None, download: bool = True) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list]:
    """{'train': (images uint8 (60000, 28, 28), labels uint8), 'val': the t10k split}, archive records.
    Every file's md5 is checked first; counts and shapes are checked against each other."""
    folder = fashion_mnist_folder(folder, download)
    splits, archives = {}, []
    for split, prefix, count in _FASHION_SPLITS:
        images, rec_i = _read_fashion_file(folder, f"{prefix}-images-idx3-ubyte")
        labels, rec_l = _read_fashion_file(folder, f"{prefix}-labels-idx1-ubyte")
        archives += [rec_i, rec_l]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[1:] != (28, 28):
            raise DiffzooError(f"Fashion-MNIST {prefix}: images {images.shape}, labels {labels.shape}; "
                               "expected (N, 28, 28) and (N,)")
        if len(images) != len(labels) or len(images) != count:
            raise DiffzooError(f"Fashion-MNIST {prefix}: {len(images)} images and {len(labels)} labels, "
                               f"expected {count} of each")
        if labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DiffzooError(f"Fashion-MNIST {prefix}: label {labels.max()} outside the 10 classes")
        splits[split] = (images, labels)
    return splits, archives


def _png_rgb(grey: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _write_pngs(job) -> int:
    """Worker: write one chunk of (path, grey image) as RGB PNGs."""
    for path, grey in job:
        with open(path, "wb") as f:
            f.write(_png_rgb(grey))
    return len(job)


def _fashion_mnist(tmp: Path, inputs: list[Path], max_per_class, workers) -> dict:
    if len(inputs) > 1:
        raise DiffzooError("fashion_mnist takes at most one --input: the folder holding its four IDX files")
    splits, archives = read_fashion_mnist(inputs[0] if inputs else None)
    per_split: dict[str, dict[str, list[str]]] = {}
    jobs = []
    for split, prefix, _ in _FASHION_SPLITS:
        images, labels = splits[split]
        per_class: dict[str, list[str]] = {d: [] for d in FASHION_MNIST_DIRS}
        for d in FASHION_MNIST_DIRS:
            (tmp / split / d).mkdir(parents=True, exist_ok=True)
        for i, lab in enumerate(labels.tolist()):
            names = per_class[FASHION_MNIST_DIRS[lab]]
            if max_per_class is not None and len(names) >= max_per_class:
                continue
            name = f"{prefix}_{i:05d}.png"
            names.append(name)
            jobs.append((str(tmp / split / FASHION_MNIST_DIRS[lab] / name), images[i]))
        per_split[split] = per_class
    start = time.perf_counter()
    with worker_map(workers) as mapper:
        for _ in mapper(_write_pngs, list(batched(jobs, 500)), 1):
            pass
    print(f"dataset: wrote {len(jobs)} PNGs in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    base = _manifest("fashion_mnist", [str(p) for p in inputs], per_split["train"], archives, [], max_per_class)
    val_counts = {c: len(per_split["val"][c]) for c in sorted(per_split["val"])}
    manifest = {}
    for key, value in base.items():
        manifest[key] = value
        if key == "layout":
            manifest[key] = ("train/<class_id>/<file> (train-*-ubyte) and val/<class_id>/<file> (t10k-*-ubyte); "
                             "class index = position in 'classes' (sorted) = the Fashion-MNIST label")
        elif key == "classes":
            manifest["class_names"] = list(FASHION_MNIST_CLASSES)  # human names, in label order
        elif key == "counts":
            manifest["num_val_images"] = sum(val_counts.values())
            manifest["val_counts"] = val_counts
    return manifest


# ------------------------------------------------------------------------------------------ ImageNet tar
class _HashingReader:
    """File wrapper that hashes every byte read, so one sequential pass both extracts and verifies."""

    def __init__(self, raw, md5: bool):
        self.raw = raw
        self.pos = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if md5 else None

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.pos += len(data)
        self.sha256.update(data)
        if self.md5:
            self.md5.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _tar_error(path: Path, reader: _HashingReader, size: int, where: str, err: BaseException) -> DiffzooError:
    return DiffzooError(
        f"archive {path} is truncated or corrupt: it broke at byte {reader.pos} of {size} while reading "
        f"{where} ({err})")


def _imagenet_tar(inputs: list[Path], collector: _Collector, sha256, md5) -> list[dict]:
    if len(inputs) != 1:
        raise DiffzooError("imagenet-tar takes exactly one --input: the train tar")
    path = inputs[0]
    if not path.is_file():
        raise DiffzooError(f"archive not found: {path}")
    if md5 and md5.lower() == "ilsvrc2012":
        md5 = ILSVRC2012_TRAIN_MD5
    size = path.stat().st_size
    with open(path, "rb") as raw:
        reader = _HashingReader(raw, md5=bool(md5))
        where = "the first header"
        try:
            with tarfile.open(fileobj=reader, mode="r|") as outer:
                for member in outer:
                    where = repr(member.name)
                    if not member.isfile():
                        continue
                    parts = [p for p in member.name.split("/") if p not in ("", ".")]
                    f = outer.extractfile(member)
                    if parts[-1].endswith(".tar"):  # the official layout: one tar per synset
                        cls = parts[-1][: -len(".tar")]
                        collector.add_class(cls)
                        with tarfile.open(fileobj=f, mode="r|") as inner:
                            for im in inner:
                                where = repr(f"{member.name}/{im.name}")
                                if im.isfile():
                                    data = inner.extractfile(im).read()
                                    collector.add(cls, im.name.split("/")[-1], data,
                                                  f"{path.name}:{member.name}/{im.name}")
                    elif len(parts) >= 2:  # a tar of the folder tree: [train/]<synset>/<file>
                        collector.add(parts[-2], parts[-1], f.read(), f"{path.name}:{member.name}")
                    else:
                        collector.corrupt.append({"file": f"{path.name}:{member.name}", "class": "",
                                                  "name": parts[-1], "reason": "not inside a class"})
                end = outer.offset
            reader.drain()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise _tar_error(path, reader, size, where, err) from None
    # tarfile stops quietly when the file ends at (or inside) a header: demand the end-of-archive block
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(512)
    if len(tail) < 512 or tail.count(0) != 512:
        raise DiffzooError(
            f"archive {path} is truncated: it ends at byte {size} after member {where} without the "
            f"end-of-archive blocks (expected at byte {end})")
    rec = {"path": str(path), "bytes": size, "sha256": reader.sha256.hexdigest()}
    if sha256 and rec["sha256"] != sha256.lower():
        raise DiffzooError(f"archive {path}: sha256 {rec['sha256']} != expected {sha256}")
    if md5:
        rec["md5"] = reader.md5.hexdigest()
        if rec["md5"] != md5.lower():
            raise DiffzooError(f"archive {path}: md5 {rec['md5']} != expected {md5}")
    return [rec]


# --------------------------------------------------------------------------------------- ImageNet folder
def _imagenet_folder(inputs: list[Path], collector: _Collector) -> list[dict]:
    if len(inputs) != 1:
        raise DiffzooError("imagenet-folder takes exactly one --input: the folder holding train/")
    root = inputs[0]
    if (root / "train").is_dir():
        root = root / "train"
    if not root.is_dir():
        raise DiffzooError(f"folder not found: {root}")
    class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not class_dirs:
        raise DiffzooError(f"no class folders in {root}")
    for cls in class_dirs:
        collector.add_class(cls)
        files = []
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames.sort()
            files.extend(Path(dirpath) / n for n in sorted(filenames))
        files.sort(key=lambda p: p.name)
        for chunk in batched(files, _CHECK_BATCH):
            for p in chunk:
                collector.add(cls, p.name, p.read_bytes(), str(p.relative_to(root.parent)))
            collector.flush()
            if collector.full(cls):
                break
    return []


# -------------------------------------------------------------------------------------- ImageNet parquet
def read_class_list(path) -> list[str]:
    """Synsets in label order from a text/JSON/classes.py file: every n######## token, first seen order."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise DiffzooError(f"classes file {path} is unreadable: {err}") from None
    seen = {}
    for s in _SYNSET.findall(text):
        seen.setdefault(s, None)
    if not seen:
        raise DiffzooError(f"no synset ids (n########) in classes file {path}")
    return list(seen)


def _parquet_files(inputs: list[Path]) -> list[Path]:
    files = []
    for p in inputs:
        if any(ch in str(p) for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matched:
                raise DiffzooError(f"no parquet files match {p}")
            files.extend(matched)
        elif p.is_dir():
            files.extend(sorted(p.rglob("*.parquet")))
        elif p.is_file():
            files.append(p)
        else:
            raise DiffzooError(f"parquet input not found: {p}")
    if not files:
        raise DiffzooError("no parquet files given")
    return files


def _hf_download(ref: str, split: str, download_dir) -> tuple[list[Path], Path | None]:
    """The split's parquet shards of `ref` (owner/name@revision) at that revision."""
    from huggingface_hub import snapshot_download


    repo, revision = split_ref(ref)
    try:
        local = snapshot_download(repo_id=repo, revision=revision, repo_type="dataset",
                                  token=os.environ.get("HF_TOKEN"), local_dir=download_dir,
                                  allow_patterns=[f"data/{split}-*.parquet", "classes.py"])
    except Exception as err:  # network, auth (gated repo: accept its terms, set HF_TOKEN)
        raise DiffzooError(f"download of {repo} failed: {err}") from None
    local = Path(local)
    files = sorted((local / "data").glob(f"{split}-*.parquet"))
    if not files:
        raise DiffzooError(f"no data/{split}-*.parquet files in {repo}")
    classes = local / "classes.py"
    return files, classes if classes.is_file() else None


def hf_file_name(path: str | None, synset: str) -> str | None:
    """Original ImageNet name from the HF `path` ('n01440764_10026_n01440764.JPEG' -> 'n01440764_10026.JPEG')."""
    if not path:
        return None
    name = path.replace("\\", "/").split("/")[-1]
    stem, dot, ext = name.rpartition(".")
    if dot and stem.endswith("_" + synset) and stem != synset:
        name = f"{stem[: -len(synset) - 1]}.{ext}"
    return name


def _imagenet_parquet(inputs, collector: _Collector, classes, hf_repo, split, download_dir) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DiffzooError("the imagenet-parquet source needs pyarrow (pip install pyarrow)") from None
    if hf_repo:
        if inputs:
            raise DiffzooError("give either --input parquet files or --hf-repo, not both")
        files, hf_classes = _hf_download(hf_repo, split, download_dir)
        classes = classes or hf_classes
    else:
        files = _parquet_files(inputs)
    class_list = read_class_list(classes) if classes else None
    archives = []
    for fpath in files:
        archives.append(_file_digest(fpath))
        try:
            pf = pq.ParquetFile(fpath)
            names = set(pf.schema_arrow.names)
            if not {"image", "label"} <= names:
                raise DiffzooError(f"{fpath}: expected columns image and label, found {sorted(names)}")
            row = 0
            for batch in pf.iter_batches(batch_size=128, columns=["image", "label"]):
                for rec in batch.to_pylist():
                    where = f"{fpath.name}:row {row}"
                    if isinstance(rec.get("image"), dict) and rec["image"].get("path"):
                        where += f" ({rec['image']['path']})"
                    _parquet_row(rec, row, fpath, where, class_list, collector)
                    row += 1
        except DiffzooError:
            raise
        except Exception as err:  # pyarrow.ArrowInvalid, OSError on a truncated shard
            raise DiffzooError(f"parquet file {fpath} is unreadable: {err}") from None
    return archives


def _parquet_row(rec, row, fpath, where, class_list, collector) -> None:
    label, image = rec.get("label"), rec.get("image") or {}
    path = image.get("path") if isinstance(image, dict) else None
    data = image.get("bytes") if isinstance(image, dict) else None
    from_path = None
    if path:
        m = _SYNSET.search(path.replace("\\", "/").split("/")[-1].replace("_", " "))
        from_path = m.group(0) if m else None
    from_label = None
    if class_list is not None and label is not None:
        if not 0 <= label < len(class_list):
            raise DiffzooError(f"{where}: label {label} outside the {len(class_list)} classes given")
        from_label = class_list[label]
    if from_label and from_path and from_label != from_path:
        raise DiffzooError(f"{where}: label {label} is {from_label} in the classes list but the path says "
                           f"{from_path} ({path})")
    cls = from_label or from_path
    if cls is None:
        raise DiffzooError(f"{where}: cannot tell the synset of label {label} (no synset in the path); "
                           f"pass --classes")
    name = hf_file_name(path, cls) or f"{fpath.stem}_{row:07d}.JPEG"
    if data is None:
        collector.add_class(cls)
        collector.corrupt.append({"file": where, "class": cls, "name": name, "reason": "no image bytes"})
        return
    collector.add(cls, name, bytes(data), where)
