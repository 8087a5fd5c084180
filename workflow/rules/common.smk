# The params, validated before any job is planned, and their slices and artifact paths.
#
# Which params: params.yaml, or, when --configfile is given, those files merged in order as Snakemake
# merges them (each over the one before; keys they do not set keep the typed defaults, the papers'
# base recipe), with `--config` on top (a section at a time: --config 'train={steps: 100}'). Every
# job's CLI call reads exactly that merged file, written to .snakemake/diffzoo/params.yaml.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as validate_schema

from diffzoo import pipeline
from diffzoo.estimate import cost_summary
from diffzoo.errors import DiffzooError
from diffzoo.params import check_inputs, merge, paths, read_yaml, typed_leaves, validate, write_yaml

PARAMS_FILE = ".snakemake/diffzoo/params.yaml"
try:
    _files = [str(f) for f in workflow.overwrite_configfiles] or ["params.yaml"]
    _raw = {}
    for _f in _files:
        _raw = merge(_raw, read_yaml(_f) or {})
    _raw = merge(_raw, typed_leaves(dict(workflow.config_settings.config)))
    PARAMS = validate(_raw)
except DiffzooError as err:
    _where = "" if any(str(err).startswith(f) for f in _files) else f"{', '.join(_files)}: "
    sys.exit(f"diffzoo: {_where}{err}")
validate_schema(_raw, "../schemas/params.schema.json", set_default=False)  # the schema derived from the same types
write_yaml(PARAMS_FILE, _raw)

EXPERIMENTS = list(PARAMS.experiments)  # trained, or running released weights
RELEASED = [e for e in EXPERIMENTS if PARAMS.run(e).train.checkpoint]
TRAINED = [e for e in EXPERIMENTS if e not in RELEASED]
RUNS = PARAMS.run_ids  # sampled and evaluated: the experiments and the samplings
PATHS = paths(PARAMS)
REPORT_OUTPUTS = pipeline.report_outputs(PARAMS)


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
    except DiffzooError as err:
        sys.exit(f"diffzoo: {', '.join(_files)}: {err}")
    print(cost_summary(PARAMS), file=sys.stderr)
