"""Image sources for evaluation, all streamed in uint8 batches (N, H, W, 3).

Three on-disk forms are read:
- ADM sample / reference files: ``.npz`` with ``arr_0`` uint8 NHWC (and ``labels`` int64 when the
  samples are class-conditional). ``arr_0`` is read from the zip member batch by batch (stored or
  deflated), so 50K images never sit in memory at once.
- the images stage's shard directories: ``DIR/index.json`` plus ``DIR/shard-XXXXX.npz`` each holding
  ``images`` (uint8 N,H,W,3) and ``labels`` (int64).
- image folders (PNG/JPEG/...), flat or in the ImageNet layout ``DIR/<class>/<image>``; with class
  sub-folders the label is the index of the folder name in sorted order.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator

import numpy as np

from ..errors import DiffzooError
from ..utils import sha256_file  # noqa: F401  (re-exported: the evaluate modules import it from here)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def check_image_array(shape: tuple, dtype, what: str) -> None:
    """ADM's layout: uint8, (N, H, W, 3). Raise one clear line otherwise."""
    if np.dtype(dtype) != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise DiffzooError(
            f"{what}: expected uint8 images of shape (N, H, W, 3) as ADM writes them, "
            f"got {np.dtype(dtype).name} of shape {tuple(shape)}"
        )
    if shape[0] == 0:
        raise DiffzooError(f"{what}: holds no images")


@dataclass
class ImageSource:
    """A sized, re-iterable stream of uint8 (B, H, W, 3) image batches with optional labels."""

    path: str
    num_images: int
    height: int
    width: int
    labels: np.ndarray | None = field(default=None, repr=False)

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.height, self.width)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def digest(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The images at sorted ``indices`` (uint8 NHWC), read in one streaming pass."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        start = filled = 0
        for batch in self.batches(batch_size):
            stop = start + len(batch)
            lo, hi = np.searchsorted(indices, [start, stop])
            out[filled:filled + hi - lo] = batch[indices[lo:hi] - start]
            filled += hi - lo
            start = stop
        return out


class ArrayImages(ImageSource):
    """Images already in memory (tests, benchmarks, the reference subset)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, path: str = "<array>"):
        check_image_array(images.shape, images.dtype, path)
        super().__init__(path, len(images), images.shape[1], images.shape[2], labels)
        self.images = images

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(0, self.num_images, batch_size):
            yield self.images[i:i + batch_size]

    def digest(self) -> str:
        h = hashlib.sha256(repr(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).data)
        return h.hexdigest()


def _npy_header(fp) -> tuple[tuple, bool, np.dtype]:
    major, _minor = np.lib.format.read_magic(fp)
    if major == 1:
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def npz_member_header(path: str | Path, key: str) -> tuple[tuple, np.dtype] | None:
    """(shape, dtype) of array ``key`` in an npz without reading its data; None when absent."""
    with zipfile.ZipFile(path) as zf:
        if f"{key}.npy" not in zf.namelist():
            return None
        with zf.open(f"{key}.npy") as fp:
            shape, _fortran, dtype = _npy_header(fp)
    return tuple(shape), np.dtype(dtype)


MAX_LABELS_BYTES = 1 << 30


def _read_labels(zf: zipfile.ZipFile, path: Path) -> np.ndarray:
    """labels.npy of a sample file: whole numbers >= 0, never a pickle, of a size the member holds."""
    with zf.open("labels.npy") as fp:
        shape, _fortran, dtype = _npy_header(fp)
        size = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
        if size > min(zf.getinfo("labels.npy").file_size, MAX_LABELS_BYTES):
            raise DiffzooError(f"{path}: labels claims {size:,} bytes that the file does not hold")
    if not np.issubdtype(np.dtype(dtype), np.integer):
        raise DiffzooError(f"{path}: labels are {np.dtype(dtype)}; class labels are whole numbers (int64)")
    labels = np.load(zf.open("labels.npy"), allow_pickle=False)
    if labels.size and labels.min() < 0:
        raise DiffzooError(f"{path}: labels has {labels.min()}; class labels are 0 or more")
    return labels


class NpzImages(ImageSource):
    """``arr_0`` (or another key) of an ADM-format npz, decoded from the zip member in batches."""

    def __init__(self, path: str | Path, key: str = "arr_0"):
        path = Path(path)
        if not path.is_file():
            raise DiffzooError(f"{path}: no such file")
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if f"{key}.npy" not in names:
                    keys = ", ".join(n[:-4] for n in names) or "nothing"
                    raise DiffzooError(f"{path}: no '{key}' array (holds {keys}); ADM sample files keep images "
                                       "in arr_0")
                with zf.open(f"{key}.npy") as fp:
                    shape, fortran, dtype = _npy_header(fp)
                    header_bytes = fp.tell()
                stored = zf.getinfo(f"{key}.npy").file_size
                labels = _read_labels(zf, path) if "labels.npy" in names else None
        except zipfile.BadZipFile as err:
            raise DiffzooError(f"{path}: not an .npz file ({err})") from None
        except (ValueError, OSError, EOFError, zlib.error) as err:  # a bad magic or header, a broken member
            raise DiffzooError(f"{path}: not a readable sample file: {err}") from None
        check_image_array(shape, dtype, f"{path} {key}")
        if fortran:
            raise DiffzooError(f"{path} {key}: Fortran-ordered arrays are not supported; save it C-ordered")
        claimed = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
        if header_bytes + claimed > stored:  # checked before anything is allocated for that many images
            raise DiffzooError(f"{path}: {key} claims {shape[0]:,} images of {shape[1]}x{shape[2]} "
                               f"({claimed:,} bytes) but holds {max(stored - header_bytes, 0):,} bytes: truncated "
                               "or a forged header")
        if labels is not None and labels.shape != (shape[0],):
            raise DiffzooError(f"{path}: labels has shape {labels.shape}, expected ({shape[0]},)")
        super().__init__(str(path), shape[0], shape[1], shape[2], labels)
        self.key = key

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        row = self.height * self.width * 3
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as fp:
            _npy_header(fp)
            for start in range(0, self.num_images, batch_size):
                n = min(batch_size, self.num_images - start)
                buf = fp.read(n * row)
                if len(buf) != n * row:
                    raise DiffzooError(f"{self.path}: {self.key} is truncated at image {start}")
                yield np.frombuffer(bytearray(buf), dtype=np.uint8).reshape(n, self.height, self.width, 3)

    def digest(self) -> str:
        return sha256_file(self.path)


class ShardImages(ImageSource):
    """The images stage's output: ``index.json`` and ``shard-XXXXX.npz`` files (images, labels)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        try:
            index = json.loads((directory / "index.json").read_text())
        except (OSError, ValueError) as err:
            raise DiffzooError(f"{directory}: cannot read index.json ({err})") from None
        self.directory = directory
        self.index = index
        self.shards = [directory / (s if isinstance(s, str) else s.get("path") or s["file"]) for s in index["shards"]]
        labels, count, hw = [], 0, None
        for shard in self.shards:
            header = npz_member_header(shard, "images") if shard.is_file() else None
            if header is None:
                raise DiffzooError(f"{shard}: missing, or holds no 'images' array")
            check_image_array(header[0], header[1], f"{shard} images")
            if hw is not None and header[0][1:3] != hw:
                raise DiffzooError(f"{shard}: images are {header[0][1:3]}, earlier shards {hw}")
            hw = header[0][1:3]
            count += header[0][0]
            with np.load(shard) as z:
                labels.append(z["labels"].astype(np.int64) if "labels" in z.files else None)
        if hw is None:
            raise DiffzooError(f"{directory}: index.json lists no shards")
        if int(index.get("num_images", count)) != count:
            raise DiffzooError(f"{directory}: index.json says {index['num_images']} images, the shards hold {count}")
        all_labels = None if any(lab is None for lab in labels) else np.concatenate(labels)
        super().__init__(str(directory), count, hw[0], hw[1], all_labels)
        self.classes = list(index.get("classes", []))
        self.class_names = list(index.get("class_names") or [])  # human names where the data set has them

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for shard in self.shards:
            with np.load(shard) as z:
                images = z["images"]
            for i in range(0, len(images), batch_size):
                yield images[i:i + batch_size]

    def digest(self) -> str:
        h = hashlib.sha256((self.directory / "index.json").read_bytes())
        for shard in self.shards:
            sha256_file(shard, h)
        return h.hexdigest()


class FolderImages(ImageSource):
    """Image files under a folder, sorted by relative path; class sub-folders give labels."""

    def __init__(self, directory: str | Path):
        from PIL import Image

        directory = Path(directory)
        files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DiffzooError(f"{directory}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        with Image.open(files[0]) as im:
            width, height = im.size
        subdirs = sorted({p.parent.relative_to(directory).parts[0] for p in files if p.parent != directory})
        labels = None
        if subdirs and all(p.parent != directory for p in files):
            lookup = {name: i for i, name in enumerate(subdirs)}
            labels = np.array([lookup[p.relative_to(directory).parts[0]] for p in files], dtype=np.int64)
        super().__init__(str(directory), len(files), height, width, labels)
        self.files = files
        self.classes = subdirs if labels is not None else []

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        from PIL import Image

        for i in range(0, len(self.files), batch_size):
            batch = []
            for f in self.files[i:i + batch_size]:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"))
                if arr.shape[:2] != (self.height, self.width):
                    raise DiffzooError(f"{f}: {arr.shape[1]}x{arr.shape[0]} image among "
                                       f"{self.width}x{self.height} ones")
                batch.append(arr)
            yield np.stack(batch)

    def digest(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(str(f.relative_to(self.path)).encode())
            sha256_file(f, h)
        return h.hexdigest()


def open_images(path: str | Path) -> ImageSource:
    """An ADM npz, an images-stage shard directory, or an image folder."""
    path = Path(path)
    if path.is_dir():
        return ShardImages(path) if (path / "index.json").is_file() else FolderImages(path)
    if path.suffix == ".npz" or path.is_file():
        return NpzImages(path)
    raise DiffzooError(f"{path}: no such file or directory")
