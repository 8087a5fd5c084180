"""`diffzoo <command>`: the only entry point. Every Snakemake rule and DVC stage is one call of it.

Each command is a module of diffzoo.commands (`import-checkpoint` is commands/import_checkpoint.py) with
`add_arguments(parser)` and `run(args) -> int`; the first line of its docstring is its help. Only the
chosen module is imported, so `diffzoo --help` stays fast, and a new module is a new command.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import os
import re
import sys
import time
from pathlib import Path

from .errors import DiffzooError
from .params import ID_PATTERN, load_params
from .pipeline import check_writable, is_job, write_stamp
from .slurm import slurm_task_env
from .utils import describe, stage_lock, time_record

COMMANDS_DIR = Path(__file__).with_name("commands")
_T0 = time.perf_counter()  # a stage's time counts its imports (torch's among them), as Snakemake's benchmark does


def commands() -> dict[str, str]:
    """command -> one-line help, read from the command modules' docstrings without importing them."""
    out = {}
    for path in sorted(COMMANDS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        out[path.stem.replace("_", "-")] = doc.splitlines()[0] if doc else ""
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    table = commands()
    parser = argparse.ArgumentParser(prog="diffzoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in table.items():
        # (argparse %-formats help texts: "95% intervals" must reach it as "95%% intervals")
        sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text.replace("%", "%%"))
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    try:
        argv = _experiment_of_dvc_stage(argv)
    except DiffzooError as err:
        return _fail(known.command, str(err))
    module = importlib.import_module(f"diffzoo.commands.{known.command.replace('-', '_')}")
    sub_parser = argparse.ArgumentParser(prog=f"diffzoo {known.command}",
                                         description=table[known.command].replace("%", "%%"))
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        os.environ.update(slurm_task_env(dict(os.environ)))  # a rank of `srun --ntasks=N`: before the lock
        with _lock(known.command, module, args), _timed(known.command, module, args):
            if _artifact_writer(module, args):
                _check_writable(known.command, args)
            code = int(module.run(args) or 0)
            if code == 0 and _artifact_writer(module, args):
                _stamp(known.command, args)
            return code
    except DiffzooError as err:
        return _fail(known.command, str(err))
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT from an engine stopping its jobs: one line, not a traceback
        if os.environ.get("DIFFZOO_DEBUG"):
            raise
        print(f"diffzoo {known.command}: interrupted; what was finished is kept (checkpoints, sample parts), "
              "a rerun resumes from there", file=sys.stderr)
        return 130
    except OSError as err:  # permission denied, no space left on the device, a vanished file
        if os.environ.get("DIFFZOO_DEBUG"):
            raise
        where = f"{err.filename}: " if err.filename else ""
        return _fail(known.command, f"{where}{err.strerror or describe(err)}")


DVC_STAGE_FLAG = "--experiment-of-dvc-stage"


def _experiment_of_dvc_stage(argv: list[str]) -> list[str]:
    """`--experiment-of-dvc-stage` (dvc.yaml's per-experiment stages): `--experiment ID` with ID the part
    after '@' of $DVC_STAGE, which DVC sets for each stage it runs (`train@ID`). So no id from the params
    ever stands in a DVC command line, where the shell would read it: DVC stages may run without the
    `check` stage that validates ids (`dvc repro -s`, `--downstream`). The id is checked here."""
    if DVC_STAGE_FLAG not in argv:
        return argv

    stage = os.environ.get("DVC_STAGE", "")
    run_id = stage.partition("@")[2]
    if not run_id:
        raise DiffzooError(f"{DVC_STAGE_FLAG} reads the experiment from DVC_STAGE (set by DVC: train@ID); "
                           f"got {stage!r}")
    if not re.fullmatch(ID_PATTERN.strip("^$"), run_id):
        raise DiffzooError(f"DVC stage {stage[:80]!r}: the id is not a safe name (letters, digits, _ - . only; "
                           "not starting with . _ or -): rename it in params.yaml")
    return [a for a in argv if a != DVC_STAGE_FLAG] + ["--experiment", run_id]


def _fail(command: str, message: str) -> int:
    """The single error path: one line, no traceback (DIFFZOO_DEBUG=1 shows the traceback)."""
    print(f"diffzoo {command}: error: {message}", file=sys.stderr)
    return 2


def _artifact_writer(module, args) -> bool:
    """A pipeline stage run (a --params form of a command that writes pipeline artifacts). A module's
    `standalone(args)` names its other form (sample --ckpt, import-checkpoint --out), which writes only
    its --out and leaves the folder it runs from as it was: no lock, no time record there."""
    standalone = getattr(module, "standalone", None)
    return (getattr(module, "LOCK", True) and bool(getattr(args, "params", None))
            and not (standalone and standalone(args)))


def _stamp(command: str, args) -> None:
    """A pipeline job's identity, stamped on what it made (diffzoo.pipeline.write_stamp), so either
    engine can tell an artifact made under other params or code."""

    run_id = getattr(args, "experiment", None)
    if is_job(command, run_id) and int(os.environ.get("RANK", "0")) == 0:  # one writer (torchrun / srun ranks)
        write_stamp(load_params(args.params), command, run_id, getattr(args, "codec", ""))


def _check_writable(command: str, args) -> None:
    run_id = getattr(args, "experiment", None)
    if is_job(command, run_id):
        check_writable(load_params(args.params), command, run_id, getattr(args, "codec", "") or "")


def _timed(command: str, module, args):
    """A pipeline stage run's time record (utils.time_record: logs/benchmarks/<command>[-<id>].tsv)."""
    if not _artifact_writer(module, args):
        return contextlib.nullcontext()
    experiment = getattr(args, "experiment", None)
    return time_record(f"{command}-{experiment}" if experiment else command, _T0)


def _lock(command: str, module, args):
    """The stage's advisory lock when it writes pipeline artifacts (a --params form): one writer per
    artifact, named by what it writes (.diffzoo/locks/<command>-<id>.lock for an experiment's stages,
    <command>-data-<data.name>.lock for the data set's). import-checkpoint writes the model train
    writes: one lock. LOCK = False in a module opts out."""
    if not _artifact_writer(module, args):
        return contextlib.nullcontext()
    experiment = getattr(args, "experiment", None)
    name = "train" if command == "import-checkpoint" else command
    if experiment:
        return stage_lock(f"{name}-{experiment}")
    return stage_lock(f"{name}-data-{load_params(args.params).data.name}")


if __name__ == "__main__":
    sys.exit(main())
