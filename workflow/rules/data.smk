# dataset -> images -> latents, and the evaluation's reference (feature extractor + statistics).


rule dataset:
    input:
        pipeline.code_files("dataset"),
    output:
        directory(PATHS["raw"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "dataset"),
        file=PARAMS_FILE,
    log:
        "logs/dataset.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo dataset --params {params.file:q} > {log} 2>&1"


rule images:
    input:
        PATHS["raw"],
        pipeline.code_files("images"),
    output:
        directory(PATHS["images"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "images"),
        file=PARAMS_FILE,
    threads: workflow.cores
    log:
        "logs/images.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo images --params {params.file:q} > {log} 2>&1"


rule latents:
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "latents"),
    input:
        PATHS["images"],
        pipeline.code_files("latents"),
    output:
        directory(PATHS["latents"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "latents"),
        file=PARAMS_FILE,
    log:
        "logs/latents.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo latents --params {params.file:q} > {log} 2>&1"


rule reference:
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "reference"),
    input:
        pipeline.images_input(PARAMS, "reference"),
        pipeline.code_files("reference"),
    output:
        directory(PATHS["reference"]),
    params:
        slice=pipeline.stage_slice(PARAMS, "reference"),
        file=PARAMS_FILE,
    log:
        "logs/reference.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo reference --params {params.file:q} > {log} 2>&1"
