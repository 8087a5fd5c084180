"""Which source files an artifact depends on, and their digest: a stage's own files (the patterns its
module declares as CODE) and a backbone's (the model registry's), which both engines track by content."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from .plan_cache import model_files
from .utils import PACKAGE


def source_files(patterns, model: str | None = None) -> list[str]:
    """The package's files matching `patterns` (globs relative to src/diffzoo), and with `model` also
    that backbone's own files; relative to the working directory where they lie below it."""
    files = {f for pattern in patterns for f in PACKAGE.glob(pattern)}
    if model is not None:
        files |= {PACKAGE / p for p in model_files(model)}
    return sorted(_relative(f) for f in files)


@functools.cache
def files_digest(files: tuple[str, ...]) -> str:
    """Short sha256 of source files' names (package-relative: a moved or copied project agrees) and bytes."""
    h = hashlib.sha256()
    for f in files:
        path = Path(f).resolve()
        name = path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path
        h.update(f"{name.as_posix()}\0".encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
