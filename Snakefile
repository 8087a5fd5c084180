# diffzoo: params.yaml -> the papers' tables. Thin: the rules live in workflow/rules, each one call of
# the `diffzoo` CLI; which params and code each job depends on comes from the stage modules
# (src/diffzoo/stages, gathered by src/diffzoo/pipeline.py); which params file: workflow/rules/common.smk.
#   snakemake --cores 2                                        # the embedded default, params.yaml
#   snakemake --cores 8 --configfile configs/dit_table4.yaml   # a paper preset (instead of params.yaml)
#   snakemake --cores 2 --config 'train={steps: 100}'          # params.yaml with a value changed
import os
from pathlib import Path

localrules: all, report

# The between-workflow output cache (enabled by the default profile) lives with the project unless
# the user points it elsewhere.
os.environ.setdefault("SNAKEMAKE_OUTPUT_CACHE", str(Path(".cache/snakemake").resolve()))
Path(os.environ["SNAKEMAKE_OUTPUT_CACHE"]).mkdir(parents=True, exist_ok=True)
# ... with its entries writable only as the user's umask allows (Snakemake's own are 0666/0777).
from diffzoo.pipeline import private_output_cache
private_output_cache(os.environ["SNAKEMAKE_OUTPUT_CACHE"])

envvars:
    "SNAKEMAKE_OUTPUT_CACHE",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_OUTPUTS,
        CLAIM_OUTPUTS,
        expand(rules.sample.output.grid, exp=RUNS),


onsuccess:
    # The results, where the run ends (the report job's own output went to logs/report.log).
    if Path(REPORT_OUTPUTS[0]).is_file():
        from diffzoo.commands.report import print_tables
        print_tables(PARAMS, stream=sys.stderr)
