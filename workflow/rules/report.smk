# The papers' tables with our rows beside the published ones, and the plots; flagged for
# `snakemake --report report.html` with the captions in workflow/report/ (in_report: common.smk).


rule report:
    input:
        metrics=expand(rules.evaluate.output.metrics, exp=RUNS),
        train=expand(rules.train.output.metrics, exp=EXPERIMENTS),
        logs=expand(rules.train.output.log, exp=EXPERIMENTS),
        samples=expand(rules.sample.output.samples, exp=RUNS),  # the overview of samples
        images=pipeline.images_input(PARAMS, "report"),
        reference=PATHS["reference"],  # the real-data row (held-out images)
        autoencoder=[PATHS["autoencoder_metrics"]] if PARAMS.uses_autoencoder else [],  # its reconstructions' row
        code=pipeline.code_files("report"),
    output:
        [in_report(path) for path in REPORT_OUTPUTS],
    params:
        slice=pipeline.slice_digest(PARAMS, "report"),
        code=pipeline.code_digest("report"),  # rerun on a content change, whatever its mtime
    log:
        "logs/report.log",
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo report --params \"$DIFFZOO_PARAMS\" > {log} 2>&1"


# The papers' claims, each judged by its 95% interval over seeds and samples (params `claims:`;
# configs/claims.yaml): results/claims.md, claims.json and a plot per claim.
if CLAIM_OUTPUTS:

    rule claims:
        threads: PARAMS.resources.threads
        resources:
            **pipeline.resources(PARAMS, "claims"),
        input:
            metrics=[paths(PARAMS, r)["metrics"] for r in CLAIM_RUNS],
            train=[paths(PARAMS, r)["train_metrics"] for r in CLAIM_RUNS],
            models=pipeline.stage_module("claims").routing_models(PARAMS),
            code=pipeline.code_files("claims"),
        output:
            CLAIM_OUTPUTS,
        params:
            slice=pipeline.slice_digest(PARAMS, "claims"),
            code=pipeline.code_digest("claims"),  # rerun on a content change, whatever its mtime
        log:
            "logs/claims.log",
        conda:
            "../envs/diffzoo.yaml"
        shell:
            "OMP_NUM_THREADS={threads} diffzoo claims --params \"$DIFFZOO_PARAMS\" > {log} 2>&1"
