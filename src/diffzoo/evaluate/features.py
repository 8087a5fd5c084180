"""Feature extractors by name: "inception" (ADM's network via torch-fidelity) and "classifier" (ours).

Every extractor maps a uint8 (B, H, W, 3) batch to a dict of float32 tensors:
  "pool"    features for FID, Precision/Recall and KID (Inception pool_3, 2048-d);
  "logits"  for the Inception Score (Inception: pool_3 x softmax weights without bias, 1008-d);
  "spatial" for sFID, Inception only: mixed_6/conv, first 7 channels, flattened H, W, C (2023-d).
``describe()`` is what metrics.json and reference files record so numbers are never mixed.

The TF graph's ``mixed_6/conv`` is the 1x1 branch of its 7th mixed block (mixed, mixed_1, mixed_2 are
torch-fidelity's Mixed_5b-d, mixed_3 is Mixed_6a, ..., mixed_6 is Mixed_6d); the tensor is that
branch's ReLU output, i.e. ``Mixed_6d.branch1x1``'s output, 192 x 17 x 17, read with a forward hook.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DiffzooError
from ..utils import describe
from .classifier import ClassifierExtractor
from .images import sha256_file
from .metrics import strict_float32

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# torch.hub convention: the name carries the sha256 prefix (a public note gives the published file's
# sha256 as 6726825d0af5f729...). A file that differs is used, but flagged in every metrics.json.
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_ENV = "DIFFZOO_INCEPTION_WEIGHTS"
SPATIAL_CHANNELS = 7
EXTRACTORS = ("inception", "classifier")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def adm_spatial_features(fmap: torch.Tensor, channels: int = SPATIAL_CHANNELS) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W*channels): the first ``channels`` channels flattened in H, W, C order,
    as ADM slices the NHWC TensorFlow tensor ``[..., :7]`` and reshapes it."""
    return fmap[:, :channels].permute(0, 2, 3, 1).reshape(fmap.shape[0], -1)


def inception_weights_hub_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def missing_weights_message(where: str) -> str:
    return (
        f"Inception weights not found ({where}): need {INCEPTION_FILE} (torch-fidelity's PyTorch port of "
        f"the TF Inception graph that ADM's evaluator uses), from {INCEPTION_URL}; pass it with "
        f"--inception-weights PATH (params: evaluate.inception_weights), set ${INCEPTION_ENV}, "
        f"or put it at {inception_weights_hub_path()}"
    )


def resolve_inception_weights(path: str | Path | None = None, allow_download: bool = True) -> Path:
    """The weights file: ``path``, else $DIFFZOO_INCEPTION_WEIGHTS, else torch.hub's checkpoints dir,
    else a download into it (when allowed and the network answers). Raises one clear line otherwise."""
    if path is None and os.environ.get(INCEPTION_ENV):
        path = os.environ[INCEPTION_ENV]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DiffzooError(missing_weights_message(f"no file {path}"))
        return path
    hub = inception_weights_hub_path()
    if hub.is_file():
        return hub
    if not allow_download:
        raise DiffzooError(missing_weights_message("downloads disabled"))
    try:
        hub.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(hub), progress=True)  # hash: see describe()
    except Exception as err:  # no network, proxy, hash mismatch: all mean the same to the user
        raise DiffzooError(missing_weights_message(f"download failed: {type(err).__name__}")) from None
    return hub


def safe_state_dict_stream(path: Path) -> io.BytesIO:
    """The weights file's tensors, re-serialised in memory for torch-fidelity, which unpickles its
    weights file with weights_only=False: read here with weights_only=True, a pickle that carries code
    is refused before anything runs, and torch-fidelity unpickles only what this wrote."""
    with warnings.catch_warnings():  # torch warns about the pickle protocol of old files
        warnings.simplefilter("ignore")
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DiffzooError(f"{path}: not a state dict of tensors")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


class InceptionExtractor:
    """torch-fidelity's ``inception-v3-compat`` with pool_3, unbiased logits and the mixed_6/conv hook."""

    name = "inception"

    def __init__(self, weights_path: str | Path | None = None, device: str | None = None,
                 allow_download: bool = True):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = resolve_inception_weights(weights_path, allow_download)
        self.device = torch.device(device or default_device())
        try:
            model = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"],
                feature_extractor_weights_path=safe_state_dict_stream(self.weights_path))
        except Exception as err:
            raise DiffzooError(f"{self.weights_path}: not loadable as {INCEPTION_FILE} ({describe(err)})") from None
        self.model = model.to(self.device)
        self.weights_sha256 = sha256_file(self.weights_path)
        self._spatial: list[torch.Tensor] = []
        self.model.Mixed_6d.branch1x1.register_forward_hook(lambda _m, _i, out: self._spatial.append(out))
        self.input_resolution = None  # any size: the network resizes to 299 itself

    def describe(self) -> dict:
        return {
            "name": self.name,
            "weights_file": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "weights_verified": self.weights_sha256.startswith(INCEPTION_SHA256_PREFIX),
            "pool": "pool_3 (2048)", "logits": "logits_unbiased (1008)",
            "spatial": "mixed_6/conv = Mixed_6d.branch1x1, channels :7, H,W,C (2023)",
        }

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
        self._spatial.clear()
        with strict_float32():
            pool, logits = self.model(x)
        spatial = adm_spatial_features(self._spatial.pop()).float()
        return {"pool": pool, "logits": logits, "spatial": spatial}


def load_extractor(name: str, weights: str | Path | None = None, device: str | None = None,
                   allow_download: bool = True):
    """"inception" (weights optional: see resolve_inception_weights) or "classifier" (weights required)."""
    if name == "inception":
        return InceptionExtractor(weights, device, allow_download)
    if name == "classifier":

        if weights is None:
            raise DiffzooError("the classifier feature extractor needs its weights: --classifier-weights "
                               "PATH.safetensors (made by `diffzoo train-classifier`)")
        return ClassifierExtractor(weights, device)
    raise DiffzooError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
