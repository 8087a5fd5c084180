"""The params file as typed configs: the one source of its defaults, ranges, choices, JSON Schema,
per-stage slices and artifact paths.

Every section is a pydantic model whose field defaults are the papers' base recipe (DiT on ImageNet
256: AdamW lr 1e-4 at batch 256, EMA 0.9999, 250 DDPM steps, FID-50K with the ADM suite), so a preset
states only what differs from it (configs/) and `diffzoo preset NAME` writes the full file DVC needs.
The choices come from their owners' registries (data sources, objectives, predictions, tables).

`load_params(path)` reads a file, `validate(raw)` a mapping; both refuse bad input before any job
runs with one line naming the key, the value and what is allowed (a YAML error with its line and
column, a duplicate key, an unknown key, a value out of range, a patch size that does not divide the
latent side, ...). Each stage reads only its slice (its module's `params_slice`), which is also what
the workflow engines track, so a change reruns exactly the stages whose slice changed.
"""
from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, WithJsonSchema,
                      field_validator)
from pydantic_core import PydanticCustomError

from . import hub
from .choices import GUIDANCE_MODES, NOISE_SCHEDULES, OBJECTIVES, PREDICTIONS, SAMPLERS
from .data import SOURCES
from .errors import DiffzooError
from .plan_cache import model_error, respaced_steps, unknown_model
from .released import RELEASED, released
from .report.catalogue import check_claims
from .report.published import TABLES
from .utils import atomic_path

DEFAULT_PARAMS = "params.yaml"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a safe name: no path separator, no space, no newline
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=100)]
NAMES_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(,[A-Za-z0-9][A-Za-z0-9_.-]*)*$"  # SLURM's "gpu,gpu2"
Names = Annotated[str, StringConstraints(pattern=NAMES_PATTERN, max_length=200)]
PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]


def _choice(values) -> Any:
    return Literal.__getitem__(tuple(values))


def _int_as_str(value):
    """`sampling_steps: 250` (an integer in YAML) means the string "250"."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Section(BaseModel):
    """A params section: unknown keys refused, no silent type conversion (YAML 1.1 reads `1e-4` as a
    string, YAML 1.2 as a number: a string is never taken for a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class DataConfig(Section):
    name: Identifier = "imagenet"            # artifacts go under data/<name>/
    source: _choice(SOURCES) = "imagenet-tar"
    path: str | None = None                  # archive, folder or parquet files (ImageNet sources), or
                                             # hf://ILSVRC/imagenet-1k[@commit] to download the parquet shards
    md5: str | None = None                   # expected checksum of the archive ("ilsvrc2012" = the official tar)
    sha256: str | None = None
    max_per_class: PositiveInt | None = None  # cap images per class (smoke runs); null = all
    resolution: PositiveInt = 256            # ADM center crop side (pixels)
    shard_size: PositiveInt = 10000          # images per shard of the images stage

    @field_validator("path")
    @classmethod
    def _pinned(cls, path: str | None) -> str | None:
        """hf://repo gets its revision written out (hub.pin): the dataset's commit is its identity."""
        if path and path.startswith("hf://"):
            return "hf://" + hub.pin(path.removeprefix("hf://").removeprefix("datasets/"))
        return path


AUTOENCODER = "autoencoder"  # latents.vae: the pipeline's own AutoencoderKL (section `autoencoder`)
CODEC_KEYS = ("vae", "dtype", "flips", "grayscale")  # the latents settings that change what is encoded


class LatentsConfig(Section):
    # a diffusers AutoencoderKL: a Hugging Face repo@commit (a repo pinned in hub.PINNED may omit it), a
    # local folder, `autoencoder` (the one the pipeline trains on the data: section `autoencoder`), or
    # identity (pixel space)
    vae: str = f"stabilityai/sd-vae-ft-ema@{hub.PINNED['stabilityai/sd-vae-ft-ema']}"
    # z = posterior sample * scale. SD-VAE: 0.18215. null = 1 / std of the training latents, computed by
    # the latents stage from the stored posteriors (the latent-diffusion paper's rule); pixel space: 1
    scale: Annotated[float, Field(gt=0)] | None = 0.18215
    posterior: Literal["sample", "mean"] = "sample"  # training sees a fresh posterior sample each step
                                             # (DiT's loop), or the posterior mean (fast-DiT-style frozen codes)
    batch_size: PositiveInt = 64
    dtype: Literal["float32", "bfloat16"] = "float32"  # VAE encode/decode
    flips: bool = True                       # also store the horizontal flip (DiT's augmentation)
    grayscale: bool = False                  # one grey channel: pixel space, or the pipeline's autoencoder

    @field_validator("vae")
    @classmethod
    def _pinned(cls, vae: str) -> str:
        """A repo id gets its revision written out (hub.pin), so the commit is part of every artifact."""
        return hub.pin(vae) if vae != "identity" and hub.is_ref(vae) and not Path(vae).is_dir() else vae

    def codec(self) -> dict:
        """The settings that change what the latents stage writes (scale and posterior do not)."""
        return {k: getattr(self, k) for k in CODEC_KEYS}


class AutoencoderConfig(Section):
    """The pipeline's own latent-diffusion autoencoder (`latents.vae: autoencoder`): a diffusers
    AutoencoderKL trained on the training images with the latent-diffusion recipe's loss minus its
    perceptual and GAN terms (no LPIPS or discriminator weights can be had offline): L1 reconstruction
    summed over pixels plus kl_weight times the posterior's KL, as LDM weighs them."""

    block_out_channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 32])  # one downsampling
                                             # between blocks: 3 blocks map 32x32 to 8x8
    layers_per_block: PositiveInt = 1
    latent_channels: PositiveInt = 4
    norm_groups: PositiveInt = 8             # GroupNorm groups (divides every block's channels)
    steps: PositiveInt = 3000
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0)] = 1.0e-3
    kl_weight: Annotated[float, Field(ge=0)] = 1.0e-6  # LDM's KL-f8 setting
    seed: Count = 0

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class ClassifierConfig(Section):
    """The in-domain feature extractor for data without Inception weights (train_classifier's
    defaults, tested equal)."""

    epochs: PositiveInt = 60
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0)] = 2.0e-3
    width: PositiveInt = 16
    noise_aug: Annotated[float, Field(ge=0)] = 2.0  # largest std of the noise added to training images
    seed: Count = 0


class TrainConfig(Section):
    """DiT's recipe: AdamW, constant lr, no warmup, no clipping, EMA every step."""

    steps: PositiveInt = 400_000
    global_batch_size: PositiveInt = 256     # across all GPUs; per-GPU batch = this / world size
    lr: Annotated[float, Field(gt=0)] = 1.0e-4
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.9999
    ckpt_every: PositiveInt = 50_000         # steps between atomic checkpoints (resume points)
    log_every: PositiveInt = 100
    seed: Count = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast (GPU)
    compile: bool = False                    # torch.compile the model (GPU)
    grad_checkpointing: bool = False
    parallel: Literal["ddp", "fsdp"] = "ddp"  # several GPUs: replicate (DDP) or shard (FSDP2) the model
    # What the model predicts; null = the objective's own: eps for ddpm (the papers), the velocity for
    # rectified_flow (which takes only v). v or x0 are for small-scale ddpm runs (README).
    prediction: _choice(PREDICTIONS) | None = None
    # ddpm's beta schedule; null = linear (the papers); cosine (IDDPM). rectified_flow has none.
    noise_schedule: _choice(NOISE_SCHEDULES) | None = None
    # rectified flow: t in (0, 1) times time_scale is the model's timestep; null = 1000 (the 0..999
    # scale of the sinusoidal embedding), or the released checkpoint's (DiT-MoE XL/G: 1).
    time_scale: Annotated[float, Field(gt=0)] | None = None
    # Released weights instead of training: a file in its authors' format (DiT, DiT-MoE, DiS) or a
    # released name (checkpoints.RELEASED, downloaded into the cache). The experiment has no training.
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None     # pin the file (the import prints the hash it computed)
    init: str | None = None                  # fine-tune: start from this file (authors' format or ours)


class SampleConfig(Section):
    num_samples: PositiveInt = 50_000        # FID-50K
    batch_size: PositiveInt = 250            # per GPU
    # ddpm: respacing ("250" as the papers, "ddim50", "10,10"); rectified_flow: Euler steps
    sampling_steps: Annotated[str, BeforeValidator(_int_as_str),
                              WithJsonSchema({"type": ["string", "integer"]})] = "250"
    sampler: _choice(SAMPLERS) = "ddpm"
    cfg_scale: Annotated[float, Field(ge=1.0)] = 1.5  # 1.0 = no guidance
    # which output channels guidance mixes: all, or legacy3 = the official DiT's forward_with_cfg (0..2
    # only); null = the weights' own protocol: legacy3 for a released DDPM file (DiT, DiT-MoE S/B), all
    # for the rest (rectified flow guides every velocity channel; the models trained here)
    guidance: _choice(GUIDANCE_MODES) | None = None
    seed: Count = 0
    grid: PositiveInt = 8                    # the PNG grid: this many samples per class, one row per class


class EvaluateConfig(Section):
    feature_extractor: Literal["classifier", "inception"] = "inception"  # inception = the papers' ADM suite
    inception_weights: str | None = None     # local weights file for torch-fidelity's inception-v3-compat
    reference: str | None = None             # an ADM reference batch .npz; null = computed from the images
    pr_distance_dtype: Literal["float16", "float32"] = "float16"
    batch_size: PositiveInt = 250
    # bootstrap replicates over the samples (0 = none): each metric's standard error and 95% interval from
    # resampling the generated images with replacement (evaluate/bootstrap.py), in metrics.json
    bootstrap: Count = 0


class ReportConfig(Section):
    tables: list[_choice(TABLES)] = Field(default_factory=lambda: ["default"])  # see report/tables.py


class ResourcesConfig(Section):
    """What each job asks for (Snakemake's threads and resources; the SLURM profile requests them)."""

    train_gpus: Count = 1                    # 0 = a CPU job
    sample_gpus: Count = 1
    gpus: Count = 1                          # each job of the one-GPU stages: autoencoder, latents, reference,
                                             # evaluate (0 = CPU jobs); dataset, images and report use none
    gpu_model: Identifier | None = None      # e.g. h100 (a GRES type name); null = any
    threads: PositiveInt = 1                 # CPU threads of a train/sample/latents/reference/evaluate job
                                             # (OMP_NUM_THREADS); Snakemake caps it at --cores
    data_threads: PositiveInt | None = None  # the images stage's threads; null = all of --cores when local,
                                             # `threads` as a cluster job
    # SLURM (the executor plugin; a local run ignores them): null = the cluster's default / none
    partition: Names | None = None           # the jobs that ask for no GPU (a, or a,b: any of them)
    gpu_partition: Names | None = None       # the jobs that ask for GPUs (null = `partition`)
    account: Identifier | None = None        # sbatch --account


class TrackConfig(Section):
    """Live tracking of training (TensorBoard event files under logs/tensorboard/<id>/). Read by the train
    stage but in no stage's slice: turning it on or off reruns nothing."""

    tensorboard: bool = True                 # loss, learning rate, throughput (every train.log_every steps)
    preview_every: Count = 0                 # a grid of EMA samples every N steps (0 = none), with the
                                             # experiment's sample settings, also saved as PNG beside the events
    preview_per_class: PositiveInt = 4       # samples per class in a preview grid (the first 10 classes)


SECTIONS: dict[str, type[Section]] = {
    "data": DataConfig, "latents": LatentsConfig, "autoencoder": AutoencoderConfig, "classifier": ClassifierConfig,
    "train": TrainConfig,
    "sample": SampleConfig, "evaluate": EvaluateConfig, "report": ReportConfig, "resources": ResourcesConfig,
    "track": TrackConfig,
}


def _overrides_of(section: str):
    """An experiment's `train:` / `sample:`: only the keys it sets, checked against the section (their
    values are checked when the run is resolved, against the section's own types and ranges)."""
    def check(value):
        if not isinstance(value, dict):
            raise PydanticCustomError("dict_type", "must be a mapping")
        unknown = sorted(set(value) - set(SECTIONS[section].model_fields))
        if unknown:
            raise PydanticCustomError("unknown_key", "unknown key", {"key": unknown[0], "section": section})
        return value
    return BeforeValidator(check)


class ExperimentConfig(Section):
    """An experiment as written: dvc.yaml tracks each of these keys, so all are written out."""

    model: str                               # a registered model name, e.g. DiT-XL/2
    model_args: dict[str, Any]               # constructor overrides, e.g. {hidden_size: 64, depth: 2}
    objective: _choice(OBJECTIVES)
    train: Annotated[dict[str, Any], _overrides_of("train")]    # overrides of the train section
    sample: Annotated[dict[str, Any], _overrides_of("sample")]  # overrides of the sample section
    # overrides of the latents section: another scale or posterior use trains on the same latents; another
    # codec (vae, grayscale, flips, dtype) gets latents of its own (Snakemake only: check --dvc refuses)
    latents: Annotated[dict[str, Any], _overrides_of("latents")] = Field(default_factory=dict)
    # training seeds: the experiment becomes one run per seed, <id>-seed<s>, with train.seed and sample.seed
    # = s (so are its samplings, <sampling>-seed<s>); validate() expands them, so no run carries it
    seeds: list[Count] | None = Field(default=None, exclude=True)

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        error = unknown_model(name)
        if error:
            raise ValueError(error)
        return name


class SamplingConfig(Section):
    """More sample settings of a trained experiment, sampled and evaluated under its own id without
    training again: `samplings: {dit-xl2-cfg1.0: {experiment: dit-xl2, sample: {cfg_scale: 1.0}}}`."""

    experiment: Identifier
    sample: Annotated[dict[str, Any], _overrides_of("sample")] = Field(default_factory=dict)


class Run(BaseModel):
    """An experiment or sampling with its settings resolved: the section defaults under its overrides."""

    model_config = ConfigDict(frozen=True)

    id: str
    model: str
    model_args: dict[str, Any]
    objective: str
    train: TrainConfig
    sample: SampleConfig
    latents: LatentsConfig
    trained_by: str                          # the experiment whose model it samples (itself, or a sampling's)

    @property
    def objective_args(self) -> dict:
        """The objective's settings that training and sampling must share (kept in model.json): ddpm's
        prediction and noise schedule, with null as the papers' eps and linear."""
        if self.objective == "rectified_flow":
            return {"time_scale": self.train.time_scale} if self.train.time_scale is not None else {}
        return {"prediction": self.train.prediction or "eps", "noise_schedule": self.train.noise_schedule or "linear"}


class Params(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    latents: LatentsConfig = Field(default_factory=LatentsConfig)
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    experiments: Annotated[dict[Identifier, ExperimentConfig], Field(min_length=1)]
    samplings: dict[Identifier, SamplingConfig] = Field(default_factory=dict)
    # the papers' claims to check on these runs (report/catalogue.py): claim id -> the run names it compares
    claims: dict[str, list[Identifier]] = Field(default_factory=dict)

    # ---- derived --------------------------------------------------------------------------------
    @property
    def run_ids(self) -> list[str]:
        """Every id that is sampled and evaluated: the experiments, then the samplings."""
        return [*self.experiments, *self.samplings]

    def run(self, run_id: str) -> Run:
        """An experiment's or sampling's resolved settings."""
        if run_id in self.samplings:
            s = self.samplings[run_id]
            base = self.run(s.experiment)
            sample = self.sample.model_validate({**base.sample.model_dump(), **s.sample})
            return base.model_copy(update={"id": run_id, "sample": sample})
        if run_id not in self.experiments:
            raise DiffzooError(f"unknown experiment {run_id!r}; params has: {', '.join(self.run_ids)}")
        e = self.experiments[run_id]
        train = TrainConfig.model_validate({**self.train.model_dump(), **e.train})
        sample = SampleConfig.model_validate({**self.sample.model_dump(), **e.sample})
        if sample.guidance is None:
            sample = sample.model_copy(update={"guidance": guidance_protocol(train.checkpoint, e.objective)})
        return Run(id=run_id, model=e.model, model_args=e.model_args, objective=e.objective, train=train,
                   sample=sample, latents=LatentsConfig.model_validate({**self.latents.model_dump(), **e.latents}),
                   trained_by=run_id)

    @property
    def reference_from_images(self) -> bool:
        """The reference stage computes its statistics from the images (no ADM batch given)."""
        return self.evaluate.feature_extractor == "classifier" or not self.evaluate.reference

    @property
    def uses_data(self) -> bool:
        """Whether any stage needs the data set's images: an experiment that trains (not released
        weights), or a reference computed from the images. Without them, grids show samples only."""
        return self.reference_from_images or any(not self.run(e).train.checkpoint for e in self.experiments)

    def latent_shape(self, run_id: str | None = None) -> tuple[int, int]:
        """(channels, side) of what a run's backbone sees (default: the latents section's): pixels, the
        pipeline autoencoder's latents, or a VAE's (4, R/8)."""
        lat = self.run(run_id).latents if run_id else self.latents
        if lat.vae == "identity":
            return (1 if lat.grayscale else 3), self.data.resolution
        if lat.vae == AUTOENCODER:
            return self.autoencoder.latent_channels, self.data.resolution // self.autoencoder.downsample
        return 4, self.data.resolution // 8

    @property
    def codecs(self) -> dict[str, dict]:
        """Latents folder suffix -> codec settings, for every codec a trained experiment uses ("" is the
        latents section's own)."""
        out = {"": self.latents.codec()}
        for e in self.experiments:
            codec = self.run(e).latents.codec()
            if codec != out[""]:
                out[codec_tag(codec)] = codec
        return out

    @property
    def uses_autoencoder(self) -> bool:
        return any(c["vae"] == AUTOENCODER for c in self.codecs.values())

    @property
    def autoencoder_channels(self) -> int:
        """The pipeline autoencoder's channels: 1 when the codecs that use it are grey, else 3."""
        grey = {c["grayscale"] for c in self.codecs.values() if c["vae"] == AUTOENCODER}
        return 1 if grey == {True} else 3

    def replicates(self, name: str) -> list[str]:
        """The runs a name stands for: the run itself, or every seed of an experiment (or sampling) that
        was written with `seeds:` (<name>-seed<s>, in seed order)."""
        if name in self.run_ids:
            return [name]
        pattern = re.compile(re.escape(name) + r"-seed(\d+)")
        found = [(int(m.group(1)), r) for r in self.run_ids if (m := pattern.fullmatch(r))]
        return [r for _, r in sorted(found)]

    def dump(self) -> dict:
        """The full params as plain data (what `diffzoo preset` writes and DVC reads)."""
        return self.model_dump(mode="json")


def codec_tag(codec: dict) -> str:
    """The latents folder suffix of a codec other than the latents section's: pixel[-grey], or a digest."""
    if codec["vae"] == "identity":
        return "-pixel" + ("-grey" if codec["grayscale"] else "") + ("-flips" if codec["flips"] else "")
    return "-" + json_digest(codec)[:8]


def json_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def validate(raw) -> Params:
    """The params with defaults filled in; raises DiffzooError naming the first bad key."""
    if not isinstance(raw, dict):
        raise DiffzooError("params: the file must hold a mapping of sections")
    unknown = sorted(set(raw) - set(Params.model_fields))
    if unknown:
        raise DiffzooError(f"params: unknown section {unknown[0]!r}; allowed: {', '.join(Params.model_fields)}")
    if not isinstance(raw.get("experiments"), dict) or not raw["experiments"]:
        raise DiffzooError("params: 'experiments' must map experiment ids to {model, model_args, objective, "
                           "train, sample}")
    raw = {k: ({} if v is None and (k in SECTIONS or k == "claims") else v) for k, v in raw.items()}
    raw = expand_seeds(raw)
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise DiffzooError(f"params: {_one_line(err, raw)}") from None
    _check_across_sections(params)
    for run_id in params.run_ids:
        _check_run(params, run_id)
    problem = check_claims(params.claims, params.replicates, lambda r: params.run(r).model)
    if problem:
        raise DiffzooError(f"params: {problem}")
    return params


def expand_seeds(raw: dict) -> dict:
    """Each experiment written with `seeds: [s, ...]` as one experiment per seed, <id>-seed<s>, whose
    train.seed and sample.seed are s; its samplings likewise (<sampling>-seed<s> of <id>-seed<s>).
    Returns a new mapping (the input is not changed); a bad `seeds` value is named."""
    exps = raw.get("experiments")
    if not isinstance(exps, dict) or not any(isinstance(e, dict) and "seeds" in e for e in exps.values()):
        return raw
    out, seeded = {}, {}
    for exp_id, e in exps.items():
        if not (isinstance(e, dict) and "seeds" in e):
            out[exp_id] = e
            continue
        seeds = e["seeds"]
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            _raise(f"experiments.{exp_id}.seeds", f" = {seeds!r}: a list of distinct seeds (integers >= 0), "
                   f"e.g. [0, 1, 2]")
        for section in ("train", "sample"):
            if isinstance(e.get(section), dict) and "seed" in e[section]:
                _raise(f"experiments.{exp_id}.{section}.seed", " is set by seeds: give one or the other")
        seeded[exp_id] = seeds
        for s in seeds:
            rid = f"{exp_id}-seed{s}"
            if rid in exps:
                _raise(f"experiments.{exp_id}.seeds", f": {rid!r} is also written as an experiment")
            out[rid] = {**{k: v for k, v in e.items() if k != "seeds"},
                        **{sec: {**(e.get(sec) or {}), "seed": s} for sec in ("train", "sample")
                           if isinstance(e.get(sec) or {}, dict)}}
    raw = {**raw, "experiments": out}
    samplings = raw.get("samplings")
    if isinstance(samplings, dict):
        expanded = {}
        for sid, smp in samplings.items():
            trained = smp.get("experiment") if isinstance(smp, dict) else None
            if trained not in seeded:
                expanded[sid] = smp
                continue
            for s in seeded[trained]:
                expanded[f"{sid}-seed{s}"] = {**smp, "experiment": f"{trained}-seed{s}",
                                              "sample": {**(smp.get("sample") or {}), "seed": s}}
        raw["samplings"] = expanded
    return raw


# ---- error messages ----------------------------------------------------------------------------------
def _lookup(raw, loc):
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _did_you_mean(key: str, fields: list[str]) -> str:
    close = difflib.get_close_matches(key, fields, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _one_line(err: ValidationError, raw: dict) -> str:
    """The first error as one line: the key, the value and what is allowed."""
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    where, value, kind, msg = ".".join(map(str, loc)), e.get("input"), e["type"], e["msg"]
    if kind == "unknown_key":
        fields = list(SECTIONS[e["ctx"]["section"]].model_fields)
        hint = _did_you_mean(e["ctx"]["key"], fields)
        return f"unknown key {where}.{e['ctx']['key']}{hint}; allowed: {', '.join(fields)}"
    if loc and isinstance(loc[-1], int):  # an item of a list
        where, value = ".".join(map(str, loc[:-1])), value
        if kind == "literal_error":
            allowed = msg.removeprefix("Input should be ").replace("'", "").replace(" or ", ", ")
            return f"{where} has unknown entry {value!r}; allowed: {allowed}"
    if kind == "extra_forbidden":
        parent = _lookup(raw, loc[:-1]) if len(loc) > 1 else raw
        model = _model_at(loc[:-1])
        fields = list(model.model_fields) if model else []
        hint = _did_you_mean(str(loc[-1]), fields)
        return (f"unknown key {where}{hint}; allowed: {', '.join(fields)}" if parent is not None
                else f"unknown key {where}{hint}")
    if kind == "missing":
        if len(loc) >= 3 and loc[0] == "experiments":
            return (f"{'.'.join(map(str, loc[:2]))} lacks {loc[-1]} (write every one of "
                    f"{', '.join(ExperimentConfig.model_fields)}; use {{}} for no overrides)")
        return f"{where} is missing"
    if kind == "literal_error":
        allowed = msg.removeprefix("Input should be ").replace(" or ", " | ").replace(", ", " | ")
        return f"{where} = {value!r} is not allowed; allowed: {allowed}"
    if kind == "float_type" and isinstance(value, str):
        return (f"{where} = {value!r} is a string, not a number; write floats with a dot and a signed exponent "
                f"(1.0e-4), which YAML 1.1 (Snakemake) and 1.2 (DVC) both read")
    if kind in ("int_type", "float_type", "bool_type", "string_type", "dict_type", "list_type"):
        return f"{where} must be {_KIND_NAMES[kind]}, got {value!r}"
    if kind == "string_pattern_mismatch":
        names = "names separated by ','" if e.get("ctx", {}).get("pattern") == NAMES_PATTERN else "a name"
        return f"{where} = {value!r} must be {names} of letters, digits, '_', '-', '.' (no path, space or newline)"
    if kind == "value_error":
        return f"{where}: {msg.removeprefix('Value error, ')}"
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than": ("<", "lt"),
              "less_than_equal": ("<=", "le")}
    if kind in bounds:
        op, key = bounds[kind]
        return f"{where} = {value!r} must be {op} {e['ctx'][key]}"
    return f"{where} = {value!r}: {msg}"


_KIND_NAMES = {"int_type": "an integer", "float_type": "a number", "bool_type": "true/false",
               "string_type": "a string", "dict_type": "a mapping", "list_type": "a list"}


def _model_at(loc: tuple):
    model = Params
    for part in loc:
        if model is Params and part in ("experiments", "samplings"):
            model = {"experiments": ExperimentConfig, "samplings": SamplingConfig}[part]
            continue
        if model in (ExperimentConfig, SamplingConfig) and part not in model.model_fields:
            continue  # the experiment id
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        model = SECTIONS.get(part, field.annotation if isinstance(field.annotation, type) else None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _raise(where: str, message: str):
    raise DiffzooError(f"params: {where}{message}")


# ---- checks across keys ------------------------------------------------------------------------------
def _check_run(params: Params, run_id: str) -> None:
    """A run's merged train/sample values, its objective's settings, sampling steps and the model."""
    kind = "samplings" if run_id in params.samplings else "experiments"
    if kind == "samplings" and params.samplings[run_id].experiment not in params.experiments:
        _raise(f"samplings.{run_id}.experiment", f" = {params.samplings[run_id].experiment!r} is not an experiment; "
               f"allowed: {', '.join(params.experiments)}")
    if kind == "samplings" and run_id in params.experiments:
        _raise(f"samplings.{run_id}", f": {run_id!r} is already an experiment id")
    try:
        run = params.run(run_id)
    except ValidationError as err:
        section = "sample" if kind == "samplings" else err.title.removesuffix("Config").lower()
        _raise(f"{kind}.{run_id}.{section}.", _one_line(err, {}))
    where = f"{kind}.{run_id}"
    if run.objective == "ddpm" and run.train.time_scale is not None and kind == "experiments":
        _raise(f"{where}: ", f"train.time_scale = {run.train.time_scale} is a setting of objective rectified_flow")
    if run.objective == "rectified_flow" and kind == "experiments":
        if run.train.prediction not in (None, "v"):
            _raise(f"{where}: ", f"train.prediction = {run.train.prediction!r}; rectified_flow predicts the "
                   f"velocity: allowed v or null")
        if run.train.noise_schedule is not None:
            _raise(f"{where}: ", f"train.noise_schedule = {run.train.noise_schedule!r} is a setting of objective "
                   f"ddpm; rectified_flow has no beta schedule: allowed null")
    _check_sampling_steps(f"{where}.sample.sampling_steps", run.objective, run.sample.sampling_steps)
    if kind == "experiments":
        _check_weights_files(where, run)
        if run.train.checkpoint and run.latents.scale is None and run.latents.vae != "identity":
            _raise(f"{where}: ", "latents.scale = null (computed from the data) cannot apply to released weights: "
                   "give the scale they were trained with (SD-VAE: 0.18215)")
        channels, side = params.latent_shape(run_id)
        error = model_error(run.model, {"input_size": side, "in_channels": channels, **run.model_args})
        if error:
            _raise(f"{where}.model_args", f" do not build {run.model} for {channels}x{side}x{side} inputs: {error}")
        gpus = params.resources.train_gpus
        if gpus > 1 and run.train.global_batch_size % gpus:
            _raise(f"{where}.train.global_batch_size", f" = {run.train.global_batch_size} is not divisible by "
                   f"resources.train_gpus = {gpus}")


def _check_weights_files(where: str, run: Run) -> None:
    """train.checkpoint / train.init: an existing file or a released name, and a released checkpoint
    fits the experiment's model and objective."""

    for key in ("checkpoint", "init"):
        value = getattr(run.train, key)
        if value is None:
            continue
        spec = released(value)
        if spec is None and not Path(value).is_file():
            _raise(f"{where}.train.{key}", f" = {value!r}: no such file, and not a released name "
                   f"({', '.join(RELEASED)})")
        if spec is not None and Path(value).name != value and not Path(value).is_file():
            _raise(f"{where}.train.{key}", f" = {value!r}: no such file (the released name alone, "
                   f"{Path(value).name}, downloads it into the cache)")
        if key == "checkpoint" and spec is not None:
            for field, want in (("model", spec.model), ("objective", spec.objective)):
                if getattr(run, field) != want:
                    _raise(f"{where}.{field}", f" = {getattr(run, field)!r}, but {Path(value).name} is a {want} "
                           f"checkpoint" + (" (trained with that objective)" if field == "objective" else ""))
    if run.train.checkpoint and run.train.init:
        _raise(f"{where}.train", ": checkpoint (released weights, no training) and init (fine-tuning) exclude "
               "each other")


def guidance_protocol(checkpoint: str | None, objective: str) -> str:
    """The guidance mode the weights' authors sample with: legacy3 (DiT's forward_with_cfg guides the
    first 3 channels) for released DDPM files, all for rectified flow (the DiT-MoE XL/G sampler guides
    every velocity channel) and for every model trained here."""

    spec = released(checkpoint) if checkpoint else None
    return "legacy3" if spec is not None and objective == "ddpm" else "all"


def _check_sampling_steps(where: str, objective: str, value: str) -> None:
    """Respaced DDPM/DDIM steps ("250", "ddim25", "10,10"): at least 2; Euler steps: a positive integer."""
    if objective == "rectified_flow":
        if not (value.isdigit() and int(value) >= 1):
            _raise(where, f" = {value!r}: rectified flow takes a number of Euler steps, e.g. '25'")
        return
    steps = respaced_steps(value)
    if isinstance(steps, str):
        _raise(where, f" = {value!r}: {steps} (write e.g. '250' or 'ddim25')")
    if steps < 2:
        _raise(where, f" = {value!r} gives {steps} step; a DDPM/DDIM sampler needs at least 2")


def _check_across_sections(params: Params) -> None:
    data, latents, ev = params.data, params.latents, params.evaluate
    if data.source not in EMBEDDED_OR_DEFAULT_PATH and not data.path and params.uses_data:
        _raise("data.path", f" is null; data.source {data.source!r} reads an archive, folder or parquet files there")
    if data.source == "digits" and data.path:
        _raise("data.path", f" = {data.path!r}: the digits source is embedded and reads no path (use null)")
    ae = params.autoencoder
    for group in ae.block_out_channels:
        if group % ae.norm_groups:
            _raise("autoencoder.block_out_channels", f" = {ae.block_out_channels}: every width must be a multiple "
                   f"of autoencoder.norm_groups = {ae.norm_groups}")
    runs = {"latents": latents, **{f"experiments.{e}.latents": _run_latents(params, e) for e in params.experiments}}
    grey = {where: lat.grayscale for where, lat in runs.items() if lat.vae == AUTOENCODER}
    if len(set(grey.values())) > 1:
        _raise(f"{next(w for w, g in grey.items() if g != latents.grayscale)}.grayscale", ": the pipeline trains one "
               "autoencoder; every latents setting that uses it must agree on grayscale")
    for where, lat in runs.items():
        if lat.grayscale and lat.vae not in ("identity", AUTOENCODER):
            _raise(f"{where}.grayscale", f" = true needs vae 'identity' (pixel space) or 'autoencoder' (the "
                   f"pipeline's own, trained on one grey channel); the VAE {lat.vae!r} encodes three channels")
        factor = ae.downsample if lat.vae == AUTOENCODER else 8
        if lat.vae != "identity" and data.resolution % factor:
            _raise("data.resolution", f" = {data.resolution}: the VAE {lat.vae!r} downsamples by {factor}; use a "
                   f"multiple of {factor}")
    if ev.reference and ev.feature_extractor != "inception":
        _raise("evaluate.reference", " (an ADM batch of Inception statistics) needs evaluate.feature_extractor = "
               "'inception'; the classifier's reference is computed from the data's images")


def _run_latents(params: Params, exp_id: str) -> LatentsConfig:
    """An experiment's latents settings (its overrides over the section), checked."""
    try:
        return params.run(exp_id).latents
    except ValidationError as err:
        section = err.title.removesuffix("Config").lower()
        _raise(f"experiments.{exp_id}.{section}.", _one_line(err, {}))


EMBEDDED_OR_DEFAULT_PATH = ("digits", "fashion_mnist")  # sources that need no data.path


def check_inputs(params: Params) -> None:
    """What the jobs will read from outside the project, checked before the first job (Snakemake's
    onstart, DVC's first stage `diffzoo check`), so that a missing file fails before upstream work:
    the data set's path, the VAE (a diffusers folder or a Hugging Face repo id; offline, it must be
    in the cache), and the Inception weights and ADM reference batch when they are named."""

    data, ev = params.data, params.evaluate
    remote = (data.path or "").startswith("hf://")  # downloaded by the dataset stage
    if params.uses_data and data.path and not remote and not glob.glob(os.path.expanduser(data.path)):
        _raise("data.path", f" = {data.path!r}: no such file or folder (data.source {data.source!r} reads it)")
    for codec in params.codecs.values():
        if codec["vae"] not in ("identity", AUTOENCODER):
            _check_vae(codec["vae"])
    for key, value in (("evaluate.inception_weights", ev.inception_weights), ("evaluate.reference", ev.reference)):
        if value and not Path(value).is_file():
            _raise(key, f" = {value!r}: no such file")


def _check_vae(vae: str) -> None:
    if Path(vae).is_dir():
        if not (Path(vae) / "config.json").is_file():
            _raise("latents.vae", f" = {vae!r}: the folder has no config.json (a diffusers AutoencoderKL folder)")
        return
    if not hub.is_ref(vae):
        _raise("latents.vae", f" = {vae!r}: neither 'identity', a local diffusers AutoencoderKL folder, nor a "
               "Hugging Face repo id (e.g. stabilityai/sd-vae-ft-ema)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        repo, revision = hub.split(vae)
        if not isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str):
            _raise("latents.vae", f" = {vae!r}: not in the Hugging Face cache, and HF_HUB_OFFLINE is set "
                   f"(download it once online: huggingface-cli download {repo} --revision {revision})")


# ---- reading files -------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML 1.1 as Snakemake reads it, but a key written twice is an error (DVC refuses it too)."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: str | Path) -> Any:
    """A YAML file; errors are one line with the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise DiffzooError(f"params file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise DiffzooError(f"{path}: {size:,} bytes; a params file is at most {MAX_PARAMS_BYTES:,} bytes")
    loader = _UniqueKeyLoader(path.read_text())
    try:
        node = loader.get_single_node()  # composed (aliases are shared nodes), measured, then constructed
        if node is None:
            return None
        try:
            values = _expanded_size(node, {}, set())
        except DiffzooError as err:
            raise DiffzooError(f"{path}: {err}") from None
        if values > MAX_PARAMS_VALUES:
            raise DiffzooError(f"{path}: its YAML aliases expand to more than {MAX_PARAMS_VALUES:,} values, the "
                               "most a params file may hold (an alias bomb?)")
        return loader.construct_document(node)
    except RecursionError:  # [[[[... thousands deep: the composer recurses per level
        raise DiffzooError(f"{path}: nested too deeply (lists or mappings hundreds of levels deep; a params file "
                           "needs a few)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DiffzooError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


MAX_PARAMS_BYTES = 1_000_000   # the largest preset is about 4 KB
MAX_PARAMS_VALUES = 100_000    # values after expanding aliases (a billion-laughs file: 10^9 from 1.6 KB)


def _expanded_size(node, sizes: dict, open_nodes: set) -> int:
    """How many values a YAML node stands for once every alias is expanded (each shared node counted
    once per use, computed once: a bomb is measured without being expanded); a node that contains
    itself is refused."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        mark = node.start_mark
        raise DiffzooError(f"line {mark.line + 1}, column {mark.column + 1}: a YAML alias that contains itself")
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(v, sizes, open_nodes) for v in node.value)
    else:
        n = 1
    open_nodes.discard(key)
    sizes[key] = min(n, 10 * MAX_PARAMS_VALUES)  # enough to refuse; keeps the sums small
    return sizes[key]


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    try:
        return validate(read_yaml(path))
    except DiffzooError as err:
        if str(err).startswith(str(path)):
            raise
        raise DiffzooError(f"{path}: {err}") from None


def write_yaml(path: str | Path, raw: dict) -> None:
    """A params mapping as YAML (atomically; floats as YAML 1.1 and 1.2 both read them)."""

    with atomic_path(Path(path)) as tmp:
        tmp.write_text(yaml.safe_dump(raw, sort_keys=False))


PARAMS_ENV = "DIFFZOO_PARAMS"  # the Snakemake run's params snapshot, which every job of the run reads
SNAPSHOT_DIR = Path(".snakemake") / "diffzoo"


def write_snapshot(raw: dict, folder: Path = SNAPSHOT_DIR) -> str:
    """The merged params of a run as `folder/params-<digest>.yaml`, named by their content: written once
    (atomically) and never overwritten, so a later call with other params cannot change what the jobs
    of a run in progress read. Returns the path."""
    path = folder / f"params-{json_digest(raw)[:16]}.yaml"
    if not path.is_file():
        write_yaml(path, raw)
    return str(path)


def typed_leaves(value):
    """Snakemake's `--config KEY=VALUE` reads a nested VALUE with YAML's BaseLoader, which makes every
    leaf a string (`train={steps: 30}` gives steps '30'): read each leaf again as the YAML scalar it
    was written as (30, 1.0e-4, true, null), keeping the text where it is no scalar."""
    if isinstance(value, dict):
        return {k: typed_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed_leaves(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value
    return value


def merge(base: dict, override: dict) -> dict:
    """`override` laid over `base` key by key, recursively (as Snakemake merges config files)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---- artifact paths: one place, used by the CLI, the Snakefile and (written out) dvc.yaml -------------
def data_dir(params: Params) -> Path:
    return Path("data") / params.data.name


def paths(params: Params, run_id: str | None = None) -> dict[str, Path]:
    d = data_dir(params)
    res = params.data.resolution
    out = {
        "raw": d / "raw",
        "images": d / f"images-{res}",
        "latents": d / f"latents-{res}",  # the latents section's codec; a run's own: latents-<R><codec_tag>
        "autoencoder": d / f"autoencoder-{res}",
        # The feature extractor (our classifier, or Inception) and the real images' statistics.
        "reference": d / f"reference-{res}-{params.evaluate.feature_extractor}",
        "results": Path("results"),
        # the autoencoder's held-out reconstructions: metrics (the latent models' floor) and a picture
        "autoencoder_metrics": Path("results") / "autoencoder" / "metrics.json",
        "autoencoder_grid": Path("results") / "autoencoder" / "reconstructions.png",
    }
    if run_id is not None:
        e = Path("data") / "experiments" / run_id
        trained = params.samplings[run_id].experiment if run_id in params.samplings else run_id
        t = Path("data") / "experiments" / trained
        if run_id in params.run_ids:  # (not for the "{exp}" pattern of the rules)
            codec = params.run(trained).latents.codec()
            if codec != params.latents.codec():
                out["latents"] = d / f"latents-{res}{codec_tag(codec)}"
        out.update({
            "exp": e,
            "checkpoints": t / "checkpoints",
            "model": t / "model.safetensors",
            "model_config": t / "model.json",
            "train_metrics": Path("results") / "train" / f"{trained}.json",
            "train_log": Path("results") / "train" / f"{trained}.tsv",
            "samples": e / "samples.npz",
            "sample_record": e / "samples.json",  # how they were drawn, and how many (the table's setting)
            "grid": Path("results") / "samples" / f"{run_id}.png",
            "metrics": Path("results") / "metrics" / f"{run_id}.json",
        })
    return out


def json_schema() -> dict:
    """The JSON Schema of a params file (workflow/schemas/params.schema.json; the Snakefile checks the
    merged config with it)."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Params.model_json_schema()}
    # Snakemake checks with Python's re.search, where "$" also matches before a final newline.
    text = json.dumps(schema)
    for pattern in (ID_PATTERN, NAMES_PATTERN):
        text = text.replace(json.dumps(pattern)[1:-1], json.dumps(r"\A" + pattern[1:-1] + r"\Z")[1:-1])
    schema = json.loads(text)
    schema["title"] = "diffzoo params"
    return schema


__all__ = ["Params", "Run", "SECTIONS", "load_params", "validate", "check_inputs", "merge", "typed_leaves", "read_yaml",
           "write_yaml", "write_snapshot", "PARAMS_ENV", "paths", "data_dir", "json_schema"]
