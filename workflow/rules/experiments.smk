# Per experiment: train -> sample -> evaluate; per sampling (params `samplings`): sample -> evaluate
# from its experiment's model. Each job reruns when its params slice (compared by
# value), its inputs, or the source files of its code (the backbone's own files for train) change.


rule train:
    threads: PARAMS.resources.threads
    wildcard_constraints:
        exp=one_of(TRAINED),
    resources:
        **pipeline.resources(PARAMS, "train"),
    input:
        data=lambda w: pipeline.train_inputs(PARAMS, w.exp),  # the latents (and a fine-tuning start)
        code=lambda w: pipeline.code_files("train", PARAMS, w.exp),
        rerun=lambda w: rerun_marker("train", w.exp),
    output:
        model=exp_path("model"),
        config=exp_path("model_config"),
        metrics=exp_path("train_metrics"),
        log=exp_path("train_log"),
    params:
        slice=lambda w: pipeline.slice_digest(PARAMS, "train", w.exp),
        code=lambda w: pipeline.code_digest("train", PARAMS, w.exp),  # rerun on a content change
    log:
        "logs/train-{exp}.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo train --params \"$DIFFZOO_PARAMS\" --experiment {wildcards.exp:q} > {log} 2>&1"


rule import_weights:  # experiments with train.checkpoint: the released file is the model, no training
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "import_checkpoint"),
    wildcard_constraints:
        exp=one_of(RELEASED),
    input:
        data=lambda w: pipeline.train_inputs(PARAMS, w.exp),  # the checkpoint file (a released name: none)
        code=pipeline.code_files("train"),
        rerun=lambda w: rerun_marker("train", w.exp),
    output:
        model=exp_path("model"),
        config=exp_path("model_config"),
        metrics=exp_path("train_metrics"),
        log=exp_path("train_log"),
    params:
        slice=lambda w: pipeline.slice_digest(PARAMS, "train", w.exp),
        code=lambda w: pipeline.code_digest("train", PARAMS, w.exp),  # rerun on a content change
    log:
        "logs/import-{exp}.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo import-checkpoint --params \"$DIFFZOO_PARAMS\" --experiment {wildcards.exp:q} > {log} 2>&1"


rule sample:
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "sample"),
    input:
        model=run_path("model"),  # a sampling's: its experiment's
        images=pipeline.images_input(PARAMS, "sample"),  # the real images' panel of the grid
        code=lambda w: pipeline.code_files("sample", PARAMS, w.exp),
        rerun=lambda w: rerun_marker("sample", w.exp),
    output:
        samples=exp_path("samples"),
        record=exp_path("sample_record"),  # how they were drawn (and the job's identity stamp)
        grid=report(exp_path("grid"), caption="../report/grid.rst", category="Sample grids", subcategory="{exp}"),
    params:
        slice=lambda w: pipeline.slice_digest(PARAMS, "sample", w.exp),
        code=lambda w: pipeline.code_digest("sample", PARAMS, w.exp),  # rerun on a content change
    log:
        "logs/sample-{exp}.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo sample --params \"$DIFFZOO_PARAMS\" --experiment {wildcards.exp:q} > {log} 2>&1"


rule evaluate:
    threads: PARAMS.resources.threads
    resources:
        **pipeline.resources(PARAMS, "evaluate"),
    input:
        samples=exp_path("samples"),
        reference=PATHS["reference"],
        code=pipeline.code_files("evaluate"),
        rerun=lambda w: rerun_marker("evaluate", w.exp),
    output:
        metrics=exp_path("metrics"),
    params:
        slice=lambda w: pipeline.slice_digest(PARAMS, "evaluate", w.exp),
        code=pipeline.code_digest("evaluate"),  # rerun on a content change, whatever its mtime
    log:
        "logs/evaluate-{exp}.log",
    cache: True
    conda:
        "../envs/diffzoo.yaml"
    shell:
        "OMP_NUM_THREADS={threads} diffzoo evaluate --params \"$DIFFZOO_PARAMS\" --experiment {wildcards.exp:q} > {log} 2>&1"
