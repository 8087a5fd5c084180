"""Hugging Face Hub references pinned by commit, written `repo@revision` as hf:// URLs write them.

A repo's files can change under the same name (sd-vae-ft-ema was re-uploaded as safetensors; the
ImageNet dataset moved from tar.gz to parquet shards), so what diffzoo downloads is named by commit:
params hold `stabilityai/sd-vae-ft-ema@f04b2c4...`, that string is part of every artifact made from
it (the latents, the models trained on them, their samples), and the download asks for that commit.
A repo named without a revision gets the commit pinned here; any other repo needs one written out
(`@main` follows the repo's newest files, unpinned, and says so in the artifact's identity).
"""
from __future__ import annotations

import re

from .errors import DiffzooError

PINNED = {
    # The DiT paper's VAEs (DiT's sample.py --vae ema|mse); the commits that hold the safetensors files.
    "stabilityai/sd-vae-ft-ema": "f04b2c4b98319346dad8c65879f680b1997b204a",
    "stabilityai/sd-vae-ft-mse": "31f26fdeee1355a5c34592e401dd41e45d25a493",
    # ILSVRC/imagenet-1k's parquet layout (data/train-*.parquet, classes.py); gated: accept its terms.
    "ILSVRC/imagenet-1k": "49e2ee26f3810fb5a7536bbf732a7b07389a47b5",
}
_REF = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w.-]+(?:/[\w.-]+)*))?")


def _match(text: str):
    """The repo id's parts, or None: Hugging Face refuses '..' in ids (and a revision of '..' parts
    would be a path, then 42 s of HTTP retries), so `../..` is a local path and `x/y@../../..` nothing."""
    m = _REF.fullmatch(text)
    return m if m and ".." not in text and not m["repo"].startswith(".") else None


def is_ref(text: str) -> bool:
    """Whether `text` is a repo id, with or without @revision (not a local path)."""
    return _match(text) is not None


def split(ref: str) -> tuple[str, str | None]:
    """"owner/name@rev" -> ("owner/name", "rev"); no revision -> None."""
    m = _match(ref)
    if m is None:
        raise ValueError(f"{ref!r} is not a Hugging Face repo id (owner/name, optionally @revision)")
    return m["repo"], m["revision"]


def revision_of(ref: str) -> tuple[str, str | None]:
    """(repo, revision) to load: the one written, else the pinned commit, else None (the repo's
    newest files: a model.json written before the pins may name an unpinned repo; loading it stays
    possible, while params and the command line refuse one, see pin)."""
    repo, revision = split(ref)
    return repo, revision or PINNED.get(repo)


def pin_argument(ref: str, option: str) -> str:
    """pin() for a command-line value: a repo without a revision is one clear line naming the option."""

    try:
        return pin(ref)
    except ValueError as err:
        raise DiffzooError(f"{option} {ref}: {err}") from None


def pin(ref: str) -> str:
    """The reference with its revision written out: the one given, else the commit pinned here."""
    repo, revision = split(ref)
    revision = revision or PINNED.get(repo)
    if revision is None:
        raise ValueError(f"{repo!r} has no revision: write {repo}@<commit> (or {repo}@main to follow the "
                         f"repo unpinned); pinned here: {', '.join(PINNED)}")
    return f"{repo}@{revision}"
