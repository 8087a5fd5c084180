"""The commands: one module per `diffzoo` command, the only code that reads a params file to do work.

A module is a command (`commands/import_checkpoint.py` is `diffzoo import-checkpoint`): the first line
of its docstring is the command's help, `add_arguments(parser)` its options, `run(args)` its entry,
which reads the params, works out the paths and calls the library below with explicit, typed
arguments (diffzoo.training, diffzoo.sampling, diffzoo.data, diffzoo.evaluate, diffzoo.report, ...).
Only the chosen command's module is imported (diffzoo.cli), so a command imports what it runs (torch
among it) at the top. A command that is a pipeline stage has its plan in diffzoo.stages.<stage>: what
the engines track (code, params slice, GPUs), which planning reads without importing the work.
"""
