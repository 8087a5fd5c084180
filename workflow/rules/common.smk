# Validates the params before any job is planned, and exposes their slices and artifact paths.
import re
import sys
from diffzoo.errors import DiffzooError
from diffzoo import pipeline

PARAMS_FILE = str(workflow.overwrite_configfiles[-1]) if workflow.overwrite_configfiles else "params.yaml"
try:
    PARAMS = pipeline.load(PARAMS_FILE)
except DiffzooError as err:
    sys.exit(f"diffzoo: {err}")

EXPERIMENTS = list(PARAMS["experiments"])  # trained
RUNS = pipeline.run_ids(PARAMS)  # sampled and evaluated: the experiments and the samplings
PATHS = pipeline.paths(PARAMS)
REPORT_OUTPUTS = pipeline.report_outputs(PARAMS)


def exp_path(key):
    """The path pattern of a per-experiment artifact, with the {exp} wildcard."""
    return str(pipeline.paths(PARAMS, "{exp}")[key])


wildcard_constraints:
    exp="|".join(map(re.escape, RUNS)),


onstart:
    print(pipeline.cost_summary(PARAMS), file=sys.stderr)
