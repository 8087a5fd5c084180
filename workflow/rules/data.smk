# dataset -> images -> latents, and the evaluation's reference (feature extractor + statistics).


rule dataset:
    resources:
        **pipeline.resources(PARAMS, "dataset"),
    input:
        pipeline.code_files("dataset"),
        rerun_marker("dataset"),
    output:
        directory(PATHS["raw"]),
    params:
        slice=pipeline.slice_digest(PARAMS, "dataset"),
        code=pipeline.code_digest("dataset"),  # rerun on a content change, whatever its mtime
    log:
        "logs/dataset.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo dataset --params \"$DIFFZOO_PARAMS\" > {log} 2>&1"


rule images:
    input:
        PATHS["raw"],
        pipeline.code_files("images"),
        rerun_marker("images"),
    output:
        directory(PATHS["images"]),
    params:
        slice=pipeline.slice_digest(PARAMS, "images"),
        code=pipeline.code_digest("images"),  # rerun on a content change, whatever its mtime
    threads: data_threads()
    resources:
        **pipeline.resources(PARAMS, "images"),
    log:
        "logs/images.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo images --params \"$DIFFZOO_PARAMS\" > {log} 2>&1"


rule autoencoder:  # latents.vae: autoencoder -- the latent-diffusion autoencoder trained on the images
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "autoencoder"),
    input:
        PATHS["images"],
        PATHS["reference"],  # the reconstructions are evaluated against it
        pipeline.code_files("autoencoder"),
        rerun_marker("autoencoder"),
    output:
        model=directory(PATHS["autoencoder"]),
        metrics=PATHS["autoencoder_metrics"],
        grid=report(PATHS["autoencoder_grid"], caption="../report/autoencoder.rst", category="Autoencoder"),
    params:
        slice=pipeline.slice_digest(PARAMS, "autoencoder"),
        code=pipeline.code_digest("autoencoder"),  # rerun on a content change, whatever its mtime
    log:
        "logs/autoencoder.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo autoencoder --params \"$DIFFZOO_PARAMS\" > {log} 2>&1"


rule latents:  # one job per codec: the latents section's ("" suffix) and any an experiment sets
    threads: PARAMS.resources.threads
    wildcard_constraints:
        codec=one_of(PARAMS.codecs) + "|",
    resources:
        **pipeline.resources(PARAMS, "latents"),
    input:
        PATHS["images"],
        lambda w: pipeline.latents_inputs(PARAMS, w.codec),  # the autoencoder, when the codec uses it
        pipeline.code_files("latents"),
        lambda w: rerun_marker("latents", w.codec or None),
    output:
        directory(str(PATHS["latents"]) + "{codec}"),
    params:
        slice=lambda w: pipeline.slice_digest(PARAMS, "latents", codec=w.codec),
        code=pipeline.code_digest("latents"),  # rerun on a content change, whatever its mtime
    log:
        "logs/latents{codec}.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo latents --params \"$DIFFZOO_PARAMS\" --codec={wildcards.codec:q} > {log} 2>&1"


rule reference:
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "reference"),
    input:
        pipeline.images_input(PARAMS, "reference"),
        pipeline.code_files("reference"),
        rerun_marker("reference"),
    output:
        directory(PATHS["reference"]),
    params:
        slice=pipeline.slice_digest(PARAMS, "reference"),
        code=pipeline.code_digest("reference"),  # rerun on a content change, whatever its mtime
    log:
        "logs/reference.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo reference --params \"$DIFFZOO_PARAMS\" > {log} 2>&1"
