"""Small helpers used by every stage: atomic writes and content hashes."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | Path):
    """Yield a temporary path beside `final`; on success it is renamed to `final` (os.replace, atomic
    on one file system), on any error it is removed. Readers never see a half-written artifact."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_tree(path: str | Path) -> None:
    """Remove a file, a folder or a symbolic link (only the link: an output that Snakemake's cache
    restored is a link into the cache, whose content must stay); nothing if absent."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Like atomic_path for a directory: build it under a temporary name, then swap it in."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        remove_tree(final)
        os.replace(tmp, final)
    finally:
        remove_tree(tmp)


def write_json(path: str | Path, obj, sort_keys: bool = True) -> None:
    """JSON written atomically (see atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=sort_keys) + "\n")


def sha256_file(path: str | Path, h=None) -> str:
    """sha256 of a file's bytes (hex); with `h` given, feed that hash object and return its digest."""
    h = hashlib.sha256() if h is None else h
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def content_hash(obj) -> str:
    """Short sha256 of a JSON-serialisable object with sorted keys (identity of a params slice)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


PACKAGE = Path(__file__).resolve().parent


def source_files(patterns, model: str | None = None) -> list[str]:
    """The package's files matching `patterns` (globs relative to src/diffzoo), and with `model` also
    that backbone's own files; relative to the working directory where they lie below it."""
    files = {f for pattern in patterns for f in PACKAGE.glob(pattern)}
    if model is not None:
        from .models import model_source_files
        files |= {p.resolve() for p in model_source_files(model)}
    return sorted(_relative(f) for f in files)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cache_dir(kind: str) -> Path:
    """diffzoo's cache of `kind` (evaluate, checkpoints): $DIFFZOO_CACHE/<kind>, else
    $XDG_CACHE_HOME/diffzoo/<kind> (~/.cache/diffzoo/<kind>)."""
    base = os.environ.get("DIFFZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffzoo"
    return Path(base) / kind
