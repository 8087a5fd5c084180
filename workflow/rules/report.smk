# The papers' tables with our rows beside the published ones, and the plots.


rule report:
    input:
        metrics=expand(rules.evaluate.output.metrics, exp=RUNS),
        train=expand(rules.train.output.metrics, exp=EXPERIMENTS),
        logs=expand(rules.train.output.log, exp=EXPERIMENTS),
        samples=expand(rules.sample.output.samples, exp=RUNS),  # the overview of samples
        images=pipeline.images_input(PARAMS, "report"),
        reference=PATHS["reference"],  # the real-data row (held-out images)
        code=pipeline.code_files("report"),
    output:
        REPORT_OUTPUTS,
    params:
        slice=pipeline.stage_slice(PARAMS, "report"),
        file=PARAMS_FILE,
    log:
        "logs/report.log",
    shell:
        "OMP_NUM_THREADS={threads} diffzoo report --params {params.file:q} 2> {log}"
