"""What the workflow engines need to know about each stage, gathered from the stage modules.

A stage module (src/diffzoo/stages/<stage>.py) declares `CODE` (its source files, relative to the
package), `params_slice(params, run_id)` (the params it reads), `GPUS` (how many GPUs its job asks
for: a number, or the `resources` key that holds it) and `PER_RUN` (one job per experiment). The
Snakefile reads them through this module; dvc.yaml states the same slices as `params:` keys and the
same code as `deps:` (tests/test_params.py checks that the two agree).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
from pathlib import Path

from .estimate import runtime_minutes
from .utils import PACKAGE, source_files


def stage_module(stage: str):
    return importlib.import_module(f"diffzoo.stages.{stage.replace('-', '_')}")


def pipeline_stages() -> list[str]:
    """The commands that are pipeline stages: the stage modules that declare their CODE."""
    names = [p.stem for p in sorted((PACKAGE / "stages").glob("*.py")) if not p.name.startswith("_")]
    return [n for n in names if hasattr(stage_module(n), "CODE")]


def code_files(stage: str, params=None, run_id: str | None = None) -> list[str]:
    """The stage's source files; for train and sample also the backbone's own files."""
    model = params.run(run_id).model if stage in ("train", "sample") and params is not None and run_id else None
    return source_files(stage_module(stage).CODE, model)


def code_digest(stage: str, params=None, run_id: str | None = None) -> str:
    """sha256 over the names and contents of the stage's source files (code_files): a rule's param, so
    Snakemake reruns a job when its code's content changes, as DVC does, and not only when a file's
    modification time is newer than the outputs (rsync -a, cp -p, tar x or clock skew keep old times)."""
    return _digest_of(tuple(code_files(stage, params, run_id)))


@functools.cache
def _digest_of(files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for f in files:
        path = Path(f).resolve()
        name = path.relative_to(PACKAGE.resolve()) if path.is_relative_to(PACKAGE.resolve()) else path
        h.update(f"{name.as_posix()}\0".encode())  # package-relative: a moved or copied project agrees
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def train_inputs(params, run_id: str) -> list[str]:
    """What a train job reads: the latents (and a fine-tuning start file), or for released weights
    the checkpoint file itself (none for a released name: the job downloads it)."""
    from .params import paths

    t = params.run(run_id).train
    if t.checkpoint:
        return [t.checkpoint] if Path(t.checkpoint).is_file() else []
    return [str(paths(params, run_id)["latents"])] + ([t.init] if t.init and Path(t.init).is_file() else [])


def latents_inputs(params, codec: str) -> list[str]:
    """What a latents job reads beyond the images: the pipeline's autoencoder when its codec uses it."""
    from .params import AUTOENCODER, paths

    return [str(paths(params)["autoencoder"])] if params.codecs[codec]["vae"] == AUTOENCODER else []


def images_input(params, stage: str) -> list[str]:
    """The images stage's output for the stages that read it (sample grids, report, reference), or
    none when no stage needs the data set (released weights evaluated on an ADM batch)."""
    from .params import paths

    needed = params.reference_from_images if stage == "reference" else params.uses_data
    return [str(paths(params)["images"])] if needed else []


def stage_slice(params, stage: str, run_id: str | None = None) -> dict:
    """The params a stage reads, with defaults filled in; the engines rerun a job when it changes."""
    return stage_module(stage).params_slice(params, run_id)


def gpus(params, stage: str) -> int:
    """GPUs a stage's job asks for: its module's GPUS, a number or a `resources` key (0 = a CPU job)."""
    n = getattr(stage_module(stage), "GPUS", 0)
    return getattr(params.resources, n) if isinstance(n, str) else n


def resources(params, stage: str) -> dict:
    """A rule's resources for the SLURM executor plugin: `gpu` (and `gpu_model`) where the stage asks
    for GPUs, the partition and account where params set them (else the cluster's default, or what the
    user's profile sets), and for train and sample a `runtime` (minutes) from the estimated work of each
    experiment. A local run ignores them."""
    res = params.resources
    n = gpus(params, stage)
    out: dict = {}
    if n:
        out["gpu"] = n
        if res.gpu_model:
            out["gpu_model"] = res.gpu_model
    partition = (res.gpu_partition or res.partition) if n else res.partition
    if partition:
        out["slurm_partition"] = partition
    if res.account:
        out["slurm_account"] = res.account
    if stage in ("train", "sample"):
        out["runtime"] = lambda wildcards: runtime_minutes(params, stage, wildcards.exp, n)
    return out


def report_outputs(params) -> list[str]:
    return stage_module("report").outputs(params)
