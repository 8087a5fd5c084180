"""The stages as the workflow engines see them: what each job reads, its code, its GPUs. Planning only.

One module per pipeline stage (its command, the work itself, is diffzoo.commands.<stage>); diffzoo.pipeline
gathers these declarations for the Snakefile, and dvc.yaml states the same (tests/test_params.py checks
that the two agree):

    CODE = [...]                     # its source files, globs relative to the package
    def params_slice(params, run_id) # the params it reads (a change reruns the job)
    GPUS = 1 | "train_gpus"          # GPUs its job asks for: a number or a `resources` key (absent: 0)
    PER_RUN = True                   # one job per experiment (the rule's {exp} wildcard)

Planning imports no torch: pyproject's import contract forbids these modules (and everything they import,
inside functions too) torch, torch-fidelity, diffusers, matplotlib, pandas and scikit-learn, so that
`snakemake -n` and params checks stay fast. Adding a stage: this module, its command, its rule in
workflow/rules/, its stage in dvc.yaml (README).
"""
