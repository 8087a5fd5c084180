# diffzoo: params.yaml -> the papers' tables. Thin: the rules live in workflow/rules, each one call of
# the `diffzoo` CLI; which params and code each job depends on comes from src/diffzoo/params.py.
#   snakemake --cores 2                                   # the embedded default
#   snakemake --cores 8 --configfile configs/dit_table4.yaml   # a paper preset
import os
from pathlib import Path

configfile: "params.yaml"

localrules: all, report

# The between-workflow output cache (enabled by the default profile) lives with the project unless
# the user points it elsewhere.
os.environ.setdefault("SNAKEMAKE_OUTPUT_CACHE", str(Path(".cache/snakemake").resolve()))
Path(os.environ["SNAKEMAKE_OUTPUT_CACHE"]).mkdir(parents=True, exist_ok=True)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_OUTPUTS,
        expand(rules.sample.output.grid, exp=RUNS),
