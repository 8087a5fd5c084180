"""The one way later stages (latents, training, evaluation) read the `images` stage's output.

DIR/index.json: {"num_images", "resolution", "classes", "shards": [{"file", "num_images"}], "corrupt"}.
DIR/shard-00000.npz: `images` uint8 (N, R, R, 3), `labels` int64 (N,), `meta` (JSON string).
Shards are stored uncompressed, so `images` is memory-mapped straight out of the .npz file.
"""
from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DiffzooError
from ._util import read_json

INDEX_FORMAT = "diffzoo-images/1"


def load_index(directory) -> dict:
    """index.json of an images folder, checked for the fields the readers rely on."""
    index = read_json(Path(directory) / "index.json", "images index")
    for key in ("num_images", "resolution", "classes", "shards"):
        if key not in index:
            raise DiffzooError(f"{directory}/index.json lacks {key!r}; rerun `diffzoo images`")
    return index


def shard_paths(directory) -> list[Path]:
    directory = Path(directory)
    return [directory / s["file"] for s in load_index(directory)["shards"]]


def _member_memmap(path: Path, member: str) -> np.ndarray | None:
    """Memory-map an uncompressed .npy member of a zip (.npz); None if it is compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if header[:4] != b"PK\x03\x04":
            raise DiffzooError(f"{path}: bad zip local header for {member}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise DiffzooError(f"{path}: {member} holds Python objects")
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


def open_shard(path, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,R,R,3), labels int64 (N,)) of one shard; images memory-mapped when possible."""
    path = Path(path)
    try:
        images = _member_memmap(path, "images.npy") if mmap else None
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"]
            if images is None:
                images = z["images"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DiffzooError(f"shard {path} is unreadable: {err}") from None
    if len(images) != len(labels):
        raise DiffzooError(f"shard {path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def read_shard_meta(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def iter_shards(directory, mmap: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per shard, in index order (= class-major, sorted file names)."""
    for path in shard_paths(directory):
        yield open_shard(path, mmap=mmap)


def iter_batches(directory, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Fixed-size batches (last may be short) across shard boundaries, in index order; arrays copied."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    buf_x, buf_y, n = [], [], 0
    for images, labels in iter_shards(directory):
        start = 0
        while start < len(images):
            take = min(batch_size - n, len(images) - start)
            buf_x.append(np.asarray(images[start:start + take]))
            buf_y.append(labels[start:start + take])
            n += take
            start += take
            if n == batch_size:
                yield np.concatenate(buf_x), np.concatenate(buf_y)
                buf_x, buf_y, n = [], [], 0
    if n:
        yield np.concatenate(buf_x), np.concatenate(buf_y)


class ShardDataset(Dataset):
    """torch Dataset over the shards: item i -> (image tensor, label int).

    image: float32 (3, R, R) in [-1, 1] (DiT's ToTensor + Normalize(0.5, 0.5)) when normalize=True,
    else uint8 (3, R, R). flip=True applies DiT's random horizontal flip (p = 0.5, torch RNG).
    Shards are memory-mapped lazily in each process, so it is cheap to fork into DataLoader workers.
    """

    def __init__(self, directory, flip: bool = False, normalize: bool = True):
        self.directory = Path(directory)
        index = load_index(self.directory)
        self.classes = list(index["classes"])
        self.resolution = int(index["resolution"])
        self.flip = flip
        self.normalize = normalize
        self._files = [self.directory / s["file"] for s in index["shards"]]
        counts = [int(s["num_images"]) for s in index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, int(i - self._starts[k])

    def _shard(self, k: int):
        if k not in self._open:
            self._open[k] = open_shard(self._files[k])
        return self._open[k]

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([self._shard(k)[1] for k in range(len(self._files))]) if self._files \
            else np.zeros(0, np.int64)

    def __getitem__(self, i: int):
        k, j = self.locate(int(i))
        images, labels = self._shard(k)
        x = torch.from_numpy(np.array(images[j])).permute(2, 0, 1)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(2)
        if self.normalize:
            x = x.float().div(127.5).sub(1.0)
        return x, int(labels[j])
