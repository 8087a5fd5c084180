"""The stage layer: one module per `diffzoo` command, the only code that reads a params file.

A module is a command (`stages/import_checkpoint.py` is `diffzoo import-checkpoint`): the first line
of its docstring is the command's help, `add_arguments(parser)` its options, `run(args)` its entry,
which reads the params, works out the paths and calls the library below with explicit, typed
arguments (diffzoo.training, diffzoo.sampling, diffzoo.data, diffzoo.evaluate, diffzoo.report, ...).
A pipeline stage also declares what the workflow engines track (gathered by diffzoo.pipeline):

    CODE = [...]                     # its source files, globs relative to the package
    def params_slice(params, run_id) # the params it reads (a change reruns the job)
    GPUS = 1 | "train_gpus"          # GPUs its job asks for: a number or a `resources` key (absent: 0)
    PER_RUN = True                   # one job per experiment (the rule's {exp} wildcard)

Adding a stage: this module, its rule in workflow/rules/, its stage in dvc.yaml (README).
"""
