"""Latent precompute: images shards -> latent shards, and decoding back to pixels.

`vae: identity` trains in pixel space: a latent is the image scaled to [-1, 1]. Otherwise a diffusers
`AutoencoderKL.from_pretrained(repo, revision=commit)` (default stabilityai/sd-vae-ft-ema at its commit
in hub.PINNED; or a local folder such as the one the autoencoder stage trains) encodes each image and its
horizontal flip; we store the posterior mean and std, not one frozen sample (as fast-DiT does), so
training draws a fresh posterior sample z = (mean + std * eps) * scale at every step, which is what
DiT's own training loop computes from pixels. A one-channel VAE (in_channels 1) sees the grey image.

The scale: a number from the params (SD-VAE: 0.18215), or, with `latents.scale: null`, the
latent-diffusion paper's 1 / std of the training latents. That std is computed in closed form from the
stored posteriors, Var z = E[mean^2 + std^2] - E[mean]^2 over every element of every (unflipped)
image, and written to index.json as `data_scale`.

On disk: `DIR/shard-00000/{mean,std,mean_flip,std_flip,labels}.npy` (float16 mean/std; std absent for
identity) and `DIR/index.json`. Each shard is written to a temporary folder and renamed, so an
interrupted run keeps its finished shards and resumes after them (only when `DIR/settings.key`, a
digest of the images index and the settings, still matches; otherwise DIR starts over).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data.shards import iter_shards, load_index
from .diffusion.gaussian_diffusion import rand, randn
from .errors import DiffzooError
from .hub import is_ref, revision_of
from .utils import (Progress, atomic_dir, atomic_path, clean_stale_temps, content_hash, describe, kill_point, reading,
                    remove_tree, set_aside, write_json)


class Identity:
    """Pixel space: uint8 images <-> [-1, 1]; with `grayscale` one channel, the mean of R, G and B
    (for grey data, which is stored as three equal channels, exactly the grey value)."""

    scale = 1.0

    def __init__(self, grayscale: bool = False):
        self.grayscale = grayscale

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = images.float()
        if self.grayscale:
            x = x.mean(1, keepdim=True)
        return x / 127.5 - 1.0, None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class VAE:
    """A diffusers AutoencoderKL: encode to the posterior (mean, std), decode z / scale."""

    def __init__(self, name: str, scale: float | None, device: torch.device, dtype: torch.dtype = torch.float32):
        # A repo id is loaded at its commit (model.json files older than the pins name none).
        folder, revision = revision_of(name) if is_ref(name) and not Path(name).is_dir() else (name, None)
        try:
            from diffusers.models import AutoencoderKL
        except ImportError as err:  # pragma: no cover - diffusers is a dependency
            raise DiffzooError(f"diffusers is needed for vae={name!r}: {err}") from None
        try:
            self.vae = AutoencoderKL.from_pretrained(folder, revision=revision).to(device=device, dtype=dtype).eval()
        except OSError as err:
            raise DiffzooError(
                f"cannot load the VAE {name!r}: {str(err).splitlines()[0]} -- on a machine with network run "
                f"`huggingface-cli download {folder}{f' --revision {revision}' if revision else ''}` (it lands in "
                f"the Hugging Face cache, "
                f"$HF_HOME), or give latents.vae as a local folder saved with save_pretrained") from None
        self.scale = scale  # None: encoding only (decoding needs the scale the latents were trained at)
        self.device, self.dtype = device, dtype
        self.channels = int(self.vae.config.in_channels)

    @torch.no_grad()
    def encode(self, images: torch.Tensor):
        """uint8 NCHW images (3 channels) -> the posterior's mean and std."""
        x = images.float()
        if self.channels == 1:
            x = x.mean(1, keepdim=True)  # grey data is stored as three equal channels
        x = (x / 127.5 - 1.0).to(self.device, self.dtype)
        dist = self.vae.encode(x).latent_dist
        return dist.mean.float(), dist.std.float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (the VAE's channels)."""
        if self.scale is None:
            raise DiffzooError("decoding needs the latent scale (model.json's latents.scale)")
        return self.vae.decode((z / self.scale).to(self.device, self.dtype)).sample.float()


def make_codec(vae: str, scale: float | None, device: torch.device | str = "cpu", dtype: str = "float32",
               grayscale: bool = False):
    """Identity (pixel space) or a VAE; `grayscale` is pixel space's (a VAE's channels are its own)."""
    if vae == "identity":
        return Identity(grayscale)
    codec = VAE(vae, scale, torch.device(device), getattr(torch, dtype))
    if grayscale and codec.channels != 1:
        raise DiffzooError(f"grayscale: the VAE {vae!r} takes {codec.channels} channels, not one grey channel")
    return codec


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] images (N, C, H, W) -> uint8 (N, H, W, C) exactly as DiT's sample_ddp.py does. NaN or inf
    (a diverged model) is refused: the cast would write them as black pixels."""
    if not torch.isfinite(x).all():
        raise DiffzooError(f"{int((~torch.isfinite(x)).sum())} of {x.numel()} decoded values are NaN or inf: the "
                           "model or its sampling diverged; nothing written")
    return torch.clamp(127.5 * x + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()


def to_adm_uint8(x: torch.Tensor) -> np.ndarray:
    """to_uint8 with grey (one channel) repeated to the three channels ADM's npz format holds."""
    images = to_uint8(x)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def encode_shards(images_dir: Path, out_dir: Path, vae: str = "identity", batch_size: int = 64,
                  flips: bool = True, device: str = "cpu", dtype: str = "float32", grayscale: bool = False,
                  vae_digest: str | None = None) -> dict:
    """Encode every images shard; shards already present in out_dir are kept (resume). `vae_digest`
    identifies a local VAE folder's weights (its path alone does not)."""

    index = load_index(images_dir)
    codec = make_codec(vae, None, device, dtype, grayscale)
    # Finished shards are kept (resume) only when they were made from the same images and settings.
    key = content_hash({"images": index, "vae": vae, "vae_digest": vae_digest, "flips": flips, "dtype": dtype,
                        "grayscale": grayscale})
    # A link (an output Snakemake's cache restored) is complete and read-only: never write through it.
    if out_dir.is_symlink() or ((out_dir / "settings.key").is_file() and (out_dir / "settings.key").read_text() != key):
        remove_tree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)  # a killed run's shard temps (they would change the output's hash)
    with atomic_path(out_dir / "settings.key") as tmp:
        tmp.write_text(key)
    shards = []
    progress = Progress(len(index["shards"]), f"latents ({vae})", "shards")
    for i, (images, labels) in enumerate(iter_shards(images_dir)):
        name = f"shard-{i:05d}"
        shards.append(name)
        progress.update(1)
        if _whole_shard(out_dir / name, len(labels), flips):
            continue
        with atomic_dir(out_dir / name) as tmp:
            arrays: dict[str, list] = {}
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.array(images[start:start + batch_size])).permute(0, 3, 1, 2)
                views = {"": batch, "_flip": batch.flip(3)} if flips else {"": batch}
                for suffix, view in views.items():
                    mean, std = codec.encode(view)
                    arrays.setdefault("mean" + suffix, []).append(mean.half().cpu().numpy())
                    if std is not None:
                        arrays.setdefault("std" + suffix, []).append(std.half().cpu().numpy())
            for key, parts in arrays.items():
                np.save(tmp / f"{key}.npy", np.concatenate(parts))
            np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        kill_point("latents-shard")
    progress.close()
    if not shards:
        raise DiffzooError(f"{images_dir} holds no image shards")
    shape = list(np.load(out_dir / shards[0] / "mean.npy", mmap_mode="r").shape[1:])
    data_scale = 1.0 if vae == "identity" else round(1.0 / latent_std([out_dir / s for s in shards]), 6)
    meta = {"vae": vae, "vae_digest": vae_digest, "data_scale": data_scale, "flips": flips, "grayscale": grayscale,
            "shape": shape,
            "num_images": index["num_images"], "classes": index["classes"], "shards": shards,
            "resolution": index["resolution"]}
    write_json(out_dir / "index.json", meta)
    return meta


def latent_std(shards: list[Path]) -> float:
    """The std of z = mean + std * eps over every element of the stored (unflipped) posteriors, in closed
    form: Var z = E[mean^2 + std^2] - E[mean]^2 (float64 sums over the float16 arrays)."""
    n, s1, s2 = 0, 0.0, 0.0
    for shard in shards:
        mean = np.load(shard / "mean.npy", mmap_mode="r").astype(np.float64)
        std = np.load(shard / "std.npy", mmap_mode="r").astype(np.float64)
        n, s1, s2 = n + mean.size, s1 + mean.sum(), s2 + (mean ** 2 + std ** 2).sum()
    var = s2 / n - (s1 / n) ** 2
    if not var > 0:
        raise DiffzooError(f"the latents in {shards[0].parent} have no spread (variance {var}): the VAE encodes "
                           "every image alike")
    return float(np.sqrt(var))


def _whole_shard(shard: Path, count: int, flips: bool) -> bool:
    """Whether an encoded shard is there and readable with `count` rows in every array; one that is
    not is moved out of the output (beside it, under aside/) and encoded again."""
    if not shard.exists():
        return False
    names = {"labels", "mean"} | ({"mean_flip"} if flips else set())
    try:
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in shard.glob("*.npy")}
        if names <= set(arrays) and all(len(a) == count for a in arrays.values()):
            return True
        why = f"arrays {sorted(arrays)} do not all hold {count} rows"
    except Exception as err:  # truncated or not an npy file
        why = f"unreadable ({describe(err)})"
    set_aside(shard, shard.parent.parent / "aside", f"corrupt latents shard: {why}; it is encoded again")
    return False


class LatentDataset(torch.utils.data.Dataset):
    """Latents for training: item i -> (z, label), z a fresh posterior sample of image i or of its
    flip (p = 0.5) -- or with posterior "mean" the posterior mean --, times the scale (None: the
    data's, 1 / std of the training latents). Shards are memory-mapped."""

    def __init__(self, latents_dir: Path, scale: float | None = None, posterior: str = "sample"):
        latents_dir = Path(latents_dir)
        index_path = latents_dir / "index.json"
        if not index_path.is_file():
            raise DiffzooError(f"{latents_dir} has no index.json: run the latents stage first")
        self.meta = json.loads(index_path.read_text())
        if "data_scale" not in self.meta:
            raise DiffzooError(f"{latents_dir} was written by an older diffzoo (no data_scale): rerun the latents "
                               "stage")
        self.scale = 1.0 if self.meta["vae"] == "identity" else (scale or self.meta["data_scale"])
        self.posterior = posterior
        self.arrays = []
        for name in self.meta["shards"]:
            d = latents_dir / name
            arrays = {}
            for p in sorted(d.glob("*.npy")):
                with reading(p, "latents array (rerun the latents stage)"):
                    arrays[p.stem] = np.load(p, mmap_mode="r")
            self.arrays.append(arrays)
        self.labels = np.concatenate([a["labels"] for a in self.arrays])
        self.offsets = np.cumsum([0] + [len(a["labels"]) for a in self.arrays])

    def __len__(self):
        return int(self.offsets[-1])

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    def get(self, i: int, flip: bool, eps: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - int(self.offsets[s])
        arr = self.arrays[s]
        suffix = "_flip" if flip and "mean_flip" in arr else ""
        mean = torch.from_numpy(np.asarray(arr["mean" + suffix][j], dtype=np.float32))
        if "std" + suffix in arr and eps is not None:
            mean = mean + torch.from_numpy(np.asarray(arr["std" + suffix][j], dtype=np.float32)) * eps
        return mean * self.scale, int(arr["labels"][j])

    def batch(self, indices, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch: flips and posterior noise drawn from `generator`, or from a list of
        per-sample generators (resumable by seed, independent of the GPU count)."""

        flips = rand((len(indices),), generator) < 0.5
        eps = randn((len(indices), *self.meta["shape"]), generator)  # drawn either way: same stream
        if self.posterior == "mean":
            eps = [None] * len(indices)
        items = [self.get(int(i), bool(f), e) for i, f, e in zip(indices, flips, eps, strict=True)]
        return torch.stack([z for z, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)
