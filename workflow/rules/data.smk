# dataset -> images -> latents, and the evaluation's reference (feature extractor + statistics).


rule dataset:
    input:
        pipeline.code_files("dataset"),
    output:
        directory(PATHS["raw"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "dataset"),
    log:
        "logs/dataset.log",
    cache: True
    shell:
        "OMP_NUM_THREADS={threads} diffzoo dataset --params {PARAMS_FILE} 2> {log}"


rule images:
    input:
        PATHS["raw"],
        pipeline.code_files("images"),
    output:
        directory(PATHS["images"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "images"),
    threads: workflow.cores
    log:
        "logs/images.log",
    cache: True
    shell:
        "OMP_NUM_THREADS={threads} diffzoo images --params {PARAMS_FILE} 2> {log}"


rule latents:
    resources:
        **pipeline.resources(PARAMS, "latents"),
    input:
        PATHS["images"],
        pipeline.code_files("latents"),
    output:
        directory(PATHS["latents"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "latents"),
    log:
        "logs/latents.log",
    cache: True
    shell:
        "OMP_NUM_THREADS={threads} diffzoo latents --params {PARAMS_FILE} 2> {log}"


rule reference:
    resources:
        **pipeline.resources(PARAMS, "reference"),
    input:
        PATHS["images"],
        pipeline.code_files("reference"),
    output:
        directory(PATHS["reference"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "reference"),
    log:
        "logs/reference.log",
    cache: True
    shell:
        "OMP_NUM_THREADS={threads} diffzoo reference --params {PARAMS_FILE} 2> {log}"
