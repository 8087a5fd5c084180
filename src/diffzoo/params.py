"""The schema of params.yaml: validation, defaults and the per-stage slices.

Every `diffzoo <stage>` call and the Snakefile validate the whole file before anything runs: an
unknown key, a wrong type or an unknown backbone gives one line naming the key and what is allowed.
Each stage reads only its slice (`stage_slice`), which is also what the workflow engines track, so a
change reruns exactly the stages whose slice changed.
"""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

from .diffusion.gaussian_diffusion import NOISE_SCHEDULES, PREDICTIONS
from .errors import DiffzooError

DEFAULT_PARAMS = "params.yaml"


class Choice:
    def __init__(self, *options):
        self.options = options

    def __repr__(self):
        return " | ".join(map(repr, self.options))


class Optional:
    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"{_type_name(self.kind)} or null"


ANY_DICT = dict  # free-form mapping (model_args: checked when the model is built)

# Section -> key -> (type, default). Types: int, float, bool, str, dict, Choice(...), Optional(t).
SCHEMA: dict[str, dict[str, tuple]] = {
    "data": {
        "name": (str, "digits"),                   # artifacts go under data/<name>/
        "source": (Choice("digits", "imagenet-tar", "imagenet-folder", "imagenet-parquet"), "digits"),
        "path": (Optional(str), None),             # archive, folder or parquet glob (ImageNet sources)
        "md5": (Optional(str), None),              # expected checksum of the archive
        "sha256": (Optional(str), None),
        "max_per_class": (Optional(int), None),    # cap per class for smoke runs; null = all images
        "resolution": (int, 16),                   # ADM center crop side in pixels
        "shard_size": (int, 10000),                # images per shard of the images stage
    },
    "latents": {
        "vae": (str, "identity"),                  # "identity" (pixel space) or a diffusers AutoencoderKL repo id
        "scale": (float, 0.18215),                 # latent scale factor (SD VAE: 0.18215)
        "batch_size": (int, 64),
        "dtype": (Choice("float32", "bfloat16"), "float32"),
        "flips": (bool, True),                     # also store the horizontal flip (DiT's augmentation)
        "grayscale": (bool, False),                # pixel space in one grey channel (identity only); samples
                                                   # are written back as three equal channels
    },
    "classifier": {                                # in-domain feature extractor for data without Inception
        "epochs": (int, 60),                       # (defaults: train_classifier's, tested equal)
        "batch_size": (int, 64),
        "lr": (float, 2.0e-3),
        "width": (int, 16),
        "noise_aug": (float, 2.0),                 # largest std of the noise added to training images
        "seed": (int, 0),
    },
    "train": {                                     # defaults for every experiment (override per experiment)
        "steps": (int, 300),
        "global_batch_size": (int, 64),            # across all GPUs; per-GPU batch = this / world size
        "lr": (float, 1.0e-4),                     # AdamW, no warmup, no clipping (DiT)
        "weight_decay": (float, 0.0),
        "ema_decay": (float, 0.9999),
        "ckpt_every": (int, 100),                  # steps between atomic checkpoints (resume points)
        "log_every": (int, 10),
        "seed": (int, 0),
        "precision": (Choice("fp32", "bf16"), "fp32"),
        "compile": (bool, False),                  # torch.compile the model (GPU)
        "grad_checkpointing": (bool, False),
        "parallel": (Choice("ddp", "fsdp"), "ddp"),  # several GPUs: replicate (DDP) or shard (FSDP2) the model
        # What the model predicts; null = the objective's own: eps for ddpm (the papers), the velocity
        # for rectified_flow (which takes only v). v or x0 are for small-scale ddpm runs (README).
        "prediction": (Optional(Choice(*PREDICTIONS)), None),
        # ddpm's beta schedule; null = linear (the papers); cosine (IDDPM). rectified_flow has none.
        "noise_schedule": (Optional(Choice(*NOISE_SCHEDULES)), None),
    },
    "sample": {
        "num_samples": (int, 500),                 # 50000 for the papers' FID-50K
        "batch_size": (int, 250),                  # per GPU
        "sampling_steps": (str, "50"),             # ddpm respacing ("250", "ddim50") or Euler steps (rectified flow)
        "sampler": (Choice("ddpm", "ddim"), "ddpm"),
        "cfg_scale": (float, 1.0),                 # 1.0 = no guidance
        "guidance": (Choice("legacy3", "all"), "all"),  # legacy3 = official DiT (channels 0..2 only)
        "seed": (int, 0),
        "grid": (int, 8),                          # the PNG grid: this many samples per class, one row per class
    },
    "evaluate": {
        "feature_extractor": (Choice("classifier", "inception"), "classifier"),
        "inception_weights": (Optional(str), None),   # local weights file for torch-fidelity's inception-v3-compat
        "reference": (Optional(str), None),           # ADM reference batch .npz; null = computed from data images
        "pr_distance_dtype": (Choice("float16", "float32"), "float16"),
        "batch_size": (int, 250),
    },
    "report": {
        "tables": (list, ["default"]),             # paper presets to assemble (see report/tables.py)
    },
    "resources": {                                 # what the SLURM profile requests per job
        "train_gpus": (int, 1),
        "sample_gpus": (int, 1),
        "gpu_model": (Optional(str), None),        # e.g. h100; null = any
    },
}
EXPERIMENT_KEYS = {
    "model": (str, None),            # registered model name, e.g. DiT-XL/2
    "model_args": (dict, {}),        # constructor overrides, e.g. {hidden_size: 64, depth: 2}
    "objective": (Choice("ddpm", "rectified_flow"), "ddpm"),
    "train": (dict, {}),             # overrides of the train section
    "sample": (dict, {}),            # overrides of the sample section
}
EXPERIMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping",
            list: "a list"}.get(kind, repr(kind))


def _check_value(where: str, kind, value) -> Any:
    if isinstance(kind, Optional):
        return None if value is None else _check_value(where, kind.kind, value)
    if isinstance(kind, Choice):
        if value not in kind.options:
            raise DiffzooError(f"params: {where} = {value!r} is not allowed; allowed: {kind!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        raise DiffzooError(f"params: {where} = {value!r} is a string, not a number; write floats with a dot "
                           f"and a signed exponent (1.0e-4), which YAML 1.1 (Snakemake) and 1.2 (DVC) both read")
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DiffzooError(f"params: {where} must be {_type_name(kind)}, got {value!r}")
    return value


def _check_section(where: str, spec: dict, given: dict) -> dict:
    if not isinstance(given, dict):
        raise DiffzooError(f"params: {where} must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise DiffzooError(f"params: unknown key {where}.{unknown[0]}; allowed: {', '.join(spec)}")
    out = {}
    for key, (kind, default) in spec.items():
        out[key] = _check_value(f"{where}.{key}", kind, given[key]) if key in given else copy.deepcopy(default)
    return out


def validate(raw: dict) -> dict:
    """The params with defaults filled in; raises DiffzooError naming the first bad key."""
    from .models import check_model_name

    if not isinstance(raw, dict):
        raise DiffzooError("params: the file must hold a mapping of sections")
    allowed = list(SCHEMA) + ["experiments", "samplings"]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise DiffzooError(f"params: unknown section {unknown[0]!r}; allowed: {', '.join(allowed)}")
    params = {section: _check_section(section, spec, raw.get(section) or {}) for section, spec in SCHEMA.items()}
    if params["evaluate"]["reference"] and params["evaluate"]["feature_extractor"] != "inception":
        raise DiffzooError("params: evaluate.reference (an ADM batch of Inception statistics) needs "
                           "evaluate.feature_extractor = 'inception'; the classifier's reference is computed "
                           "from the data's images")
    if params["latents"]["grayscale"] and params["latents"]["vae"] != "identity":
        raise DiffzooError(f"params: latents.grayscale = true needs latents.vae = 'identity' (pixel space); "
                           f"the VAE {params['latents']['vae']!r} encodes three channels")
    from .report.tables import TABLES
    bad = [t for t in params["report"]["tables"] if t not in TABLES]
    if bad:
        raise DiffzooError(f"params: report.tables has unknown table {bad[0]!r}; allowed: {', '.join(TABLES)}")
    experiments = raw.get("experiments")
    if not isinstance(experiments, dict) or not experiments:
        raise DiffzooError("params: 'experiments' must map experiment ids to {model, model_args, objective, train, sample}")
    params["experiments"] = {}
    for exp_id, exp in experiments.items():
        where = f"experiments.{exp_id}"
        if not isinstance(exp_id, str) or not EXPERIMENT_ID.match(exp_id):
            raise DiffzooError(f"params: experiment id {exp_id!r} must be letters, digits, '_', '-', '.'")
        if not isinstance(exp, dict):
            raise DiffzooError(f"params: {where} must be a mapping")
        # dvc.yaml tracks each of these keys of each experiment, so all must be written out.
        missing = [k for k in EXPERIMENT_KEYS if k not in exp]
        if missing:
            raise DiffzooError(f"params: {where} lacks {', '.join(missing)} (write every one of "
                               f"{', '.join(EXPERIMENT_KEYS)}; use {{}} for no overrides)")
        checked = _check_section(where, EXPERIMENT_KEYS, exp)
        try:
            check_model_name(checked["model"])
        except KeyError as err:
            raise DiffzooError(f"params: {where}.model: {err.args[0]}") from None
        _check_model_args(where, checked["model"], checked["model_args"])
        for section in ("train", "sample"):
            checked[section] = _overrides(f"{where}.{section}", section, checked[section], params[section])
        _check_objective_settings(where, checked)
        params["experiments"][exp_id] = checked
    params["samplings"] = _check_samplings(raw.get("samplings"), params["experiments"])
    for run_id in run_ids(params):
        exp = experiment(params, run_id)
        where = f"{'samplings' if run_id in params['samplings'] else 'experiments'}.{run_id}.sample.sampling_steps"
        _check_sampling_steps(where, exp["objective"], exp["sample"]["sampling_steps"])
    return params


def _check_objective_settings(where: str, exp: dict) -> None:
    """Rectified flow predicts the velocity on its own time distribution: of train.prediction it takes
    only v (or null) and it has no noise_schedule."""
    if exp["objective"] != "rectified_flow":
        return
    train = exp["train"]
    if train["prediction"] not in (None, "v"):
        raise DiffzooError(f"params: {where}: train.prediction = {train['prediction']!r}; rectified_flow predicts "
                           f"the velocity: allowed v or null")
    if train["noise_schedule"] is not None:
        raise DiffzooError(f"params: {where}: train.noise_schedule = {train['noise_schedule']!r} is a setting of "
                           f"objective ddpm; rectified_flow has no beta schedule: allowed null")


def _check_sampling_steps(where: str, objective: str, value: str) -> None:
    """Respaced DDPM/DDIM steps ("250", "ddim25", "10,10"): at least 2; Euler steps: a positive integer."""
    if objective == "rectified_flow":
        if not (value.isdigit() and int(value) >= 1):
            raise DiffzooError(f"params: {where} = {value!r}: rectified flow takes a number of Euler steps, e.g. '25'")
        return
    from .diffusion.respace import space_timesteps
    try:
        steps = len(space_timesteps(1000, value))
    except ValueError as err:
        raise DiffzooError(f"params: {where} = {value!r}: {err} (write e.g. '250' or 'ddim25')") from None
    if steps < 2:
        raise DiffzooError(f"params: {where} = {value!r} gives {steps} step; a DDPM/DDIM sampler needs at least 2")


def _overrides(where: str, section: str, given: dict, base: dict) -> dict:
    """Overrides hold only the keys they set: check them, then lay them over `base`."""
    spec = SCHEMA[section]
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise DiffzooError(f"params: unknown key {where}.{unknown[0]}; allowed: {', '.join(spec)}")
    return {**base, **{k: _check_value(f"{where}.{k}", spec[k][0], v) for k, v in given.items()}}


SAMPLING_KEYS = ("experiment", "sample")


def _check_samplings(raw, experiments: dict) -> dict:
    """`samplings`: more sample settings of a trained experiment (a guidance sweep, another sampler),
    each sampled and evaluated under its own id without training again:
        samplings: {dit-xl2-cfg1.0: {experiment: dit-xl2-cfg1.5, sample: {cfg_scale: 1.0}}}
    Its sample settings are the experiment's, with the sampling's overrides laid over them."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DiffzooError("params: 'samplings' must map sampling ids to {experiment, sample}")
    out = {}
    for sid, spec in raw.items():
        where = f"samplings.{sid}"
        if not isinstance(sid, str) or not EXPERIMENT_ID.match(sid):
            raise DiffzooError(f"params: sampling id {sid!r} must be letters, digits, '_', '-', '.'")
        if sid in experiments:
            raise DiffzooError(f"params: {where}: {sid!r} is already an experiment id")
        if not isinstance(spec, dict):
            raise DiffzooError(f"params: {where} must be a mapping")
        unknown = sorted(set(spec) - set(SAMPLING_KEYS))
        if unknown or "experiment" not in spec:
            bad = f"unknown key {where}.{unknown[0]}" if unknown else f"{where} lacks experiment"
            raise DiffzooError(f"params: {bad}; allowed: {', '.join(SAMPLING_KEYS)}")
        parent = spec["experiment"]
        if parent not in experiments:
            raise DiffzooError(f"params: {where}.experiment = {parent!r} is not an experiment; allowed: "
                               f"{', '.join(experiments)}")
        sample = _overrides(f"{where}.sample", "sample", spec.get("sample") or {}, experiments[parent]["sample"])
        out[sid] = {"experiment": parent, "sample": sample}
    return out


@functools.cache
def _model_args_error(model: str, args_json: str) -> str | None:
    """Why `create_model(model, **args)` fails, or None; built on the meta device (no memory)."""
    import json

    import torch

    from .models import create_model
    try:
        with torch.device("meta"):
            create_model(model, **json.loads(args_json))
    except (TypeError, ValueError) as err:
        return str(err).splitlines()[0]
    return None


def _check_model_args(where: str, model: str, args: dict) -> None:
    import json

    error = _model_args_error(model, json.dumps(args, sort_keys=True))
    if error:
        raise DiffzooError(f"params: {where}.model_args do not build {model}: {error}")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DiffzooError(f"params file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DiffzooError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    try:
        return validate(raw)
    except DiffzooError as err:
        raise DiffzooError(f"{path}: {err}") from None


def run_ids(params: dict) -> list[str]:
    """Every id that is sampled and evaluated: the experiments, then the samplings."""
    return [*params["experiments"], *params.get("samplings", {})]


def trained_by(params: dict, exp_id: str) -> str:
    """The experiment whose training an id uses: itself, or a sampling's experiment."""
    return params.get("samplings", {}).get(exp_id, {}).get("experiment", exp_id)


def experiment(params: dict, exp_id: str) -> dict:
    """An experiment's settings; for a sampling id, its experiment's with the sampling's sample settings."""
    if exp_id in params.get("samplings", {}):
        return {**params["experiments"][trained_by(params, exp_id)], "sample": params["samplings"][exp_id]["sample"]}
    if exp_id not in params["experiments"]:
        raise DiffzooError(f"unknown experiment {exp_id!r}; params.yaml has: {', '.join(run_ids(params))}")
    return params["experiments"][exp_id]


# ---- artifact paths: one place, used by the CLI, the Snakefile and (written out) dvc.yaml ----------
def data_dir(params: dict) -> Path:
    return Path("data") / params["data"]["name"]


def paths(params: dict, exp_id: str | None = None) -> dict[str, Path]:
    d = data_dir(params)
    res = params["data"]["resolution"]
    out = {
        "raw": d / "raw",
        "images": d / f"images-{res}",
        "latents": d / f"latents-{res}",
        # The feature extractor (our classifier, or Inception) and the real images' statistics.
        "reference": d / f"reference-{res}-{params['evaluate']['feature_extractor']}",
        "results": Path("results"),
    }
    if exp_id is not None:
        e = Path("data") / "experiments" / exp_id
        trained = trained_by(params, exp_id)  # a sampling reads its experiment's model
        t = Path("data") / "experiments" / trained
        out.update({
            "exp": e,
            "checkpoints": t / "checkpoints",
            "model": t / "model.safetensors",
            "model_config": t / "model.json",
            "train_metrics": Path("results") / "train" / f"{trained}.json",
            "train_log": Path("results") / "train" / f"{trained}.tsv",
            "samples": e / "samples.npz",
            "grid": Path("results") / "samples" / f"{exp_id}.png",
            "metrics": Path("results") / "metrics" / f"{exp_id}.json",
        })
    return out
