"""What the workflow engines need to know about each stage, gathered from the stage modules.

A stage module (src/diffzoo/stages/<stage>.py) declares `CODE` (its source files, relative to the
package), `params_slice(params, run_id)` (the params it reads), `GPUS` (how many GPUs its job asks
for: a number, or the `resources` key that holds it) and `PER_RUN` (one job per experiment). The
Snakefile reads them through this module; dvc.yaml states the same slices as `params:` keys and the
same code as `deps:` (tests/test_params.py checks that the two agree).
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from .errors import DiffzooError
from .estimate import runtime_minutes
from .params import AUTOENCODER, PARAMS_ENV, paths
from .sources import files_digest, source_files
from .utils import PACKAGE, content_hash, umask, write_json


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
    return files_digest(tuple(code_files(stage, params, run_id)))


def train_inputs(params, run_id: str) -> list[str]:
    """What a train job reads: the latents (and a fine-tuning start file), or for released weights
    the checkpoint file itself (none for a released name: the job downloads it)."""

    t = params.run(run_id).train
    if t.checkpoint:
        return [t.checkpoint] if Path(t.checkpoint).is_file() else []
    return [str(paths(params, run_id)["latents"])] + ([t.init] if t.init and Path(t.init).is_file() else [])


def latents_inputs(params, codec: str) -> list[str]:
    """What a latents job reads beyond the images: the pipeline's autoencoder when its codec uses it."""

    return [str(paths(params)["autoencoder"])] if params.codecs[codec]["vae"] == AUTOENCODER else []


def images_input(params, stage: str) -> list[str]:
    """The images stage's output for the stages that read it (sample grids, report, reference), or
    none when no stage needs the data set (released weights evaluated on an ADM batch)."""

    needed = params.reference_from_images if stage == "reference" else params.uses_data
    return [str(paths(params)["images"])] if needed else []


def stage_slice(params, stage: str, run_id: str | None = None, codec: str | None = None) -> dict:
    """The params a stage reads, with defaults filled in; the engines rerun a job when it changes. Keys
    sorted: Snakemake compares a rule's params with their order, and the order of keys in a YAML file
    means nothing (reformatting params.yaml must not retrain)."""
    piece = (stage_module(stage).params_slice(params, run_id) if codec is None
             else stage_module(stage).params_slice(params, run_id, codec=codec))
    return json.loads(json.dumps(piece, sort_keys=True))


def gpus(params, stage: str) -> int:
    """GPUs a stage's job asks for: its module's GPUS, a number or a `resources` key (0 = a CPU job); a
    command that is no pipeline stage (import-checkpoint, a file's conversion) asks for none."""
    if stage.replace("-", "_") not in pipeline_stages():
        return 0
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


# --- Artifact identity, shared by the engines --------------------------------------------------------
# Each pipeline job stamps what it made with its identity: a digest of the params slice it read and its
# code (what Snakemake compares through a rule's params, and DVC through dvc.lock). The stamp travels
# with the artifact (inside a folder output, a key of a JSON output), so DVC's cache, run-cache and
# `dvc pull` carry it. Snakemake reruns a job whose stamp names another identity: it has no record of
# what `dvc repro` made, and would otherwise take an artifact of other params as current.

STAMP = ".diffzoo-identity.json"  # inside a folder output
COMMAND_STAGE = {"import-checkpoint": "train"}  # a command whose job is another stage's (same slice, code)


def slice_digest(params, stage: str, run_id: str | None = None, codec: str | None = None) -> str:
    """A rule's `slice` param: the digest of the stage's params slice. Snakemake prints a changed param's
    whole value before and now in its rerun reason (1,100 characters for a train slice); the digest keeps
    that line short, and `changes` says which keys changed."""

    return content_hash(stage_slice(params, stage, run_id, codec))


def _identity_parts(params, stage: str, run_id: str | None, codec: str) -> tuple[dict, str]:
    per_run = getattr(stage_module(stage), "PER_RUN", False)
    run = run_id if per_run else None
    return stage_slice(params, stage, run, codec if stage == "latents" else None), code_digest(stage, params, run)


def identity(params, stage: str, run_id: str | None = None, codec: str = "") -> str:
    """The identity of a job's artifacts: its stage, params slice and code digest."""

    piece, code = _identity_parts(params, stage, run_id, codec)
    return content_hash({"stage": stage, "slice": piece, "code": code})


def stamp_location(params, stage: str, run_id: str | None = None, codec: str = "") -> tuple[Path, bool] | None:
    """Where a job's stamp lives: (path, True) for a folder output's stamp file, (path, False) for the
    JSON output holding an "identity" key; None for a job that is not stamped (the report)."""

    if stage in ("dataset", "images", "autoencoder", "reference"):
        return paths(params)["raw" if stage == "dataset" else stage] / STAMP, True
    if stage == "latents":
        return Path(f"{paths(params)['latents']}{codec}") / STAMP, True
    where = paths(params, run_id) if run_id else None
    key = {"train": "train_metrics", "sample": "sample_record", "evaluate": "metrics"}.get(stage)
    return (where[key], False) if where and key else None


def check_writable(params, command: str, run_id: str | None = None, codec: str = "") -> None:
    """One line before any work where a job's output folder cannot be written (a read-only results
    folder was once found after the report's work, in a message naming a temporary file)."""

    stage = COMMAND_STAGE.get(command, command)
    where = Path("results") if stage == "report" else (stamp_location(params, stage, run_id, codec) or (None,))[0]
    if where is None:
        return
    folder = where if stage == "report" else where.parent
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DiffzooError(f"{existing}: cannot write there (permission denied), where {command} puts "
                           f"{folder}: nothing was computed")


def is_job(command: str, run_id: str | None) -> bool:
    """A command run as a pipeline job (a per-run stage needs its run id: `sample --ckpt` is not one)."""
    stage = COMMAND_STAGE.get(command, command)
    return stage in pipeline_stages() and (bool(run_id) or not getattr(stage_module(stage), "PER_RUN", False))


def write_stamp(params, command: str, run_id: str | None = None, codec: str = "", engine: str | None = None) -> None:
    """After a job succeeded: its identity into its stamp (nothing for commands that are not jobs), with
    the engine that ran it (dvc: $DVC_STAGE is set; snakemake: $DIFFZOO_PARAMS is; else cli)."""


    if not is_job(command, run_id):
        return
    stage = COMMAND_STAGE.get(command, command)
    where = stamp_location(params, stage, run_id, codec)
    if where is None:
        return
    path, own_file = where
    if not path.parent.is_dir() or (not own_file and not path.is_file()):
        return  # nothing was made (a stage that writes elsewhere in this form)
    record = {} if own_file else json.loads(path.read_text())
    record["identity"] = identity(params, stage, run_id, codec)
    record["slice"], record["code"] = _identity_parts(params, stage, run_id, codec)  # for `changes`
    record["engine"] = engine or ("dvc" if "DVC_STAGE" in os.environ else "snakemake" if PARAMS_ENV in os.environ
                                  else "cli")
    write_json(path, record)


def recorded_stamp(path: Path) -> dict:
    """What a stamp records ({} when there is none: an older diffzoo's artifact, or none at all)."""

    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("identity"), str) else {}


def jobs(params) -> list[tuple[str, str | None, str]]:
    """Every stamped job of the params: (stage, run id, codec)."""
    out = [("dataset", None, ""), ("images", None, ""), ("reference", None, "")]
    if params.uses_autoencoder:
        out.append(("autoencoder", None, ""))
    out += [("latents", None, codec) for codec in params.codecs]
    out += [("train", e, "") for e in params.experiments]
    out += [(stage, r, "") for r in params.run_ids for stage in ("sample", "evaluate")]
    return out


MARKERS = Path(".snakemake") / "diffzoo" / "rerun"


def stale_markers(params, engine: str) -> list[tuple[str, str | None, str]]:
    """The jobs whose artifacts exist stamped with another identity by another engine than `engine` (which
    has no record of them, so would take them as current), each with a marker file (created now, named by
    the job and the identity it will make): (stage, run id or codec, marker path)."""
    found = []
    for stage, run_id, codec in jobs(params):
        path, _ = stamp_location(params, stage, run_id, codec)
        record = recorded_stamp(path)
        wanted = identity(params, stage, run_id, codec)
        if record and record.get("engine") != engine and record["identity"] != wanted:
            marker = MARKERS / f"{stage}-{run_id or codec or '_'}-{wanted}"
            if not marker.is_file():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            found.append((stage, run_id or codec or None, str(marker)))
    return found


def private_output_cache(cache: str | Path) -> None:
    """Snakemake's between-workflow output cache makes every entry 0666 (folders 0777), meant for a
    cache that several users share; the outputs are links into it, so any local user could rewrite a
    trained model or a latents shard. Here entries follow the user's umask instead (022: only the owner
    writes), both the ones stored from now on and the ones an earlier run left (the caller's own)."""
    from snakemake.caching.local import OutputFileCache


    mask = umask()

    def chmod_tree(entry: Path) -> None:
        for path in [entry, *entry.rglob("*")] if entry.is_dir() and not entry.is_symlink() else [entry]:
            if path.is_symlink() or path.lstat().st_uid != os.getuid():
                continue
            mode = 0o777 if path.is_dir() else (0o777 if path.stat().st_mode & 0o100 else 0o666)
            if path.stat().st_mode & 0o777 != mode & ~mask:
                path.chmod(mode & ~mask)

    OutputFileCache.set_permissions = lambda self, entry: chmod_tree(Path(entry))
    for entry in Path(cache).iterdir() if Path(cache).is_dir() else []:
        if entry.lstat().st_mode & mask:  # left more open than the umask allows (e.g. by an earlier run)
            chmod_tree(entry)


def changes(params) -> list[str]:
    """One line per job whose artifacts were made under other params or code, naming what changed
    (`train dit-s2: train.steps 1200 -> 2400`), from the slice its stamp recorded."""
    out = []
    for stage, run_id, codec in jobs(params):
        path, _ = stamp_location(params, stage, run_id, codec)
        record = recorded_stamp(path)
        if not record or "slice" not in record or record["identity"] == identity(params, stage, run_id, codec):
            continue
        piece, code = _identity_parts(params, stage, run_id, codec)
        what = _differences(record["slice"], piece, "data." if stage in ("dataset", "images") else "")
        if record.get("code") != code:
            what.append(f"the {stage} code")
        more = f" (+{len(what) - 4} more)" if len(what) > 4 else ""
        out.append(f"{stage}{' ' + (run_id or codec) if run_id or codec else ''}: {'; '.join(what[:4])}{more}")
    return out


def _differences(before, now, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        return [d for k in sorted(set(before) | set(now), key=str)
                for d in _differences(before.get(k, "(none)"), now.get(k, "(none)"), f"{prefix}{k}.")]
    if before == now:
        return []

    def short(v) -> str:
        text = json.dumps(v) if not isinstance(v, str) else v
        return text if len(text) <= 40 else text[:37] + "..."
    return [f"{prefix.rstrip('.')} {short(before)} -> {short(now)}"]
