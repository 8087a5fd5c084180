# The params, validated before any job is planned, and their slices and artifact paths.
#
# Which params: params.yaml, or, when --configfile is given, those files merged in order as Snakemake
# merges them (each over the one before; keys they do not set keep the typed defaults, the papers'
# base recipe), with `--config` on top (a section at a time: --config 'train={steps: 100}').
#
# Every job of a run reads that run's own snapshot of the merged params, named by its content
# (.snakemake/diffzoo/params-<digest>.yaml, written once, never overwritten) and handed to the jobs
# as $DIFFZOO_PARAMS: a second Snakemake call during a run (`snakemake -n` after an edit, a call
# refused by the lock) writes a snapshot of its own, which no job of the first run reads. A cluster
# job's re-parse reads the snapshot of the run that submitted it, not params.yaml as it is now.
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as validate_schema

from diffzoo import pipeline
from diffzoo.estimate import cost_summary
from diffzoo.errors import DiffzooError
from diffzoo.params import PARAMS_ENV, check_inputs, merge, paths, read_yaml, typed_leaves, validate, write_snapshot

_files = [str(f) for f in workflow.overwrite_configfiles] or ["params.yaml"]
_job_parse = workflow.remote_exec or workflow.subprocess_exec  # a cluster job's (or subprocess's) parse
_submitted = os.environ.get(PARAMS_ENV) if _job_parse else None
try:
    if _submitted:  # a cluster job: the params of the run that submitted it
        _files = [_submitted]
        _raw = read_yaml(_submitted)
    else:
        _raw = {}
        for _f in _files:
            _raw = merge(_raw, read_yaml(_f) or {})
        _raw = merge(_raw, typed_leaves(dict(workflow.config_settings.config)))
    PARAMS = validate(_raw)
except DiffzooError as err:
    _given = _files + (["--config"] if workflow.config_settings.config and not _submitted else [])
    _where = "" if any(str(err).startswith(f) for f in _files) else f"{' + '.join(_given)}: "
    sys.exit(f"diffzoo: {_where}{err}")
validate_schema(_raw, "../schemas/params.schema.json", set_default=False)  # the schema derived from the same types
PARAMS_FILE = _submitted or write_snapshot(_raw)
os.environ[PARAMS_ENV] = PARAMS_FILE  # what every job's command reads (shell: --params "$DIFFZOO_PARAMS")


# Artifacts that `dvc repro` (or the CLI) made under other params or code are rerun: Snakemake has no
# record of them and would take them as current. Their identity stamps tell (pipeline.stale); such a
# job gets a fresh marker file among its inputs, which Snakemake's mtime trigger reruns it for.
STALE = {(stage, run): marker for stage, run, marker in pipeline.stale_markers(PARAMS, "snakemake")}
if STALE and not _job_parse:
    print(f"diffzoo: {len(STALE)} job(s) to rerun, their outputs made by another engine under other params or "
          f"code: {', '.join(stage + (f' {run}' if run else '') for stage, run in STALE)}", file=sys.stderr)
# What changed since the outputs were made, in one line per job (Snakemake's own reasons name only a
# changed digest: the rules' `slice` params are digests, see pipeline.slice_digest).
_CHANGES = [] if _job_parse else pipeline.changes(PARAMS)
if _CHANGES:
    print("diffzoo: made under other params or code (these jobs rerun):\n  " + "\n  ".join(_CHANGES),
          file=sys.stderr)


def rerun_marker(stage, run=None):
    """An input of a stamped job: its rerun marker when another engine made its outputs under other params."""
    return [STALE[stage, run]] if (stage, run) in STALE else []


envvars:
    PARAMS_ENV,  # passed to cluster jobs by executors that do not export the whole environment


EXPERIMENTS = list(PARAMS.experiments)  # trained, or running released weights
RELEASED = [e for e in EXPERIMENTS if PARAMS.run(e).train.checkpoint]
TRAINED = [e for e in EXPERIMENTS if e not in RELEASED]
RUNS = PARAMS.run_ids  # sampled and evaluated: the experiments and the samplings
PATHS = paths(PARAMS)
REPORT_OUTPUTS = pipeline.report_outputs(PARAMS)
CLAIM_RUNS = pipeline.stage_module("claims").claim_runs(PARAMS)  # the runs the claims read (none: no claims)
CLAIM_OUTPUTS = pipeline.stage_module("claims").outputs(PARAMS)


def one_of(ids):
    """A wildcard constraint matching exactly these ids (and nothing when there are none)."""
    return "|".join(map(re.escape, ids)) or "(?!)"


# Outputs flagged for `snakemake --report`, with their captions (workflow/report/*.rst).
CAPTIONS = {"fid_vs_gflops.png": "fid_vs_gflops", "loss.png": "loss", "samples.png": "samples"}


def in_report(path):
    """An output, flagged for Snakemake's HTML report when a person should see it there."""
    name = Path(path).name
    if name.endswith(".csv"):
        return report(path, caption="../report/table.rst", category="Tables")
    if name in CAPTIONS:
        return report(path, caption=f"../report/{CAPTIONS[name]}.rst", category="Plots")
    return path


def data_threads():
    """The images stage's threads: resources.data_threads, else every core of a local run (--cores),
    else (a cluster job, which has no --cores) resources.threads."""
    if PARAMS.resources.data_threads:
        return PARAMS.resources.data_threads
    if workflow.local_exec and not workflow.remote_exec:  # not the main process of a cluster run nor its job
        try:
            return workflow.cores
        except WorkflowError:  # planning without --cores
            pass
    return PARAMS.resources.threads


def exp_path(key):
    """The path pattern of a per-experiment artifact, with the {exp} wildcard."""
    return str(paths(PARAMS, "{exp}")[key])


def run_path(key):
    """An input function: the artifact `key` of the job's run (a sampling's model is its experiment's)."""
    return lambda w: str(paths(PARAMS, w.exp)[key])


wildcard_constraints:
    exp=one_of(RUNS),


onstart:
    # The files and weights the jobs will read, checked before the first job runs (not when only
    # planning: `snakemake -n` of a preset works on a machine without its data).
    try:
        check_inputs(PARAMS)
        if workflow.local_exec:  # the jobs run here: the GPUs the params ask for must be here
            from diffzoo.runtime import check_params_gpus
            check_params_gpus(PARAMS)
    except DiffzooError as err:
        sys.exit(f"diffzoo: {', '.join(_files)}: {err}")
    print(cost_summary(PARAMS), file=sys.stderr)
