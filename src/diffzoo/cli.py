"""`diffzoo <stage>`: the only entry point. Every Snakemake rule and DVC stage is one call of it.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`; modules
are imported only when their subcommand runs, so `diffzoo --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DiffzooError

# subcommand -> (module, one-line help)
COMMANDS = {
    "models": ("diffzoo.commands.models", "list registered backbones with parameters and Gflops"),
    "import-checkpoint": ("diffzoo.checkpoints", "verify an official DiT checkpoint and store it as safetensors"),
    "dataset": ("diffzoo.data.dataset", "bring a labeled image data set into the canonical folder layout"),
    "images": ("diffzoo.data.images", "ADM center crop of every image to the resolution, in shards"),
    "latents": ("diffzoo.latents", "encode images shards to latents (VAE posterior mean/std, or identity)"),
    "train": ("diffzoo.train", "train one experiment (resumable; torchrun on several GPUs)"),
    "sample": ("diffzoo.sample", "sample N images of one experiment to an ADM-format npz and a grid PNG"),
    "cost": ("diffzoo.commands.cost", "estimated GPU-hours of every experiment in a params file"),
    "code-digest": ("diffzoo.pipeline", "digest of an experiment's backbone source files (what DVC tracks)"),
    "reference": ("diffzoo.evaluate.stage", "feature extractor and real-image statistics for the evaluate stage"),
    "reference-stats": ("diffzoo.evaluate.reference_command", "ADM-format reference statistics of a data set's images for one feature extractor, cached by content"),
    "train-classifier": ("diffzoo.evaluate.classifier_command", "train the in-domain digits classifier used as feature extractor (deterministic, CPU)"),
    "report": ("diffzoo.report.tables", "the papers' tables (published rows beside ours) and the plots"),
    "evaluate": ("diffzoo.evaluate.command", "FID, sFID, IS, Precision, Recall of a sample file (ADM definitions)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffzoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily (below) so that only the chosen module is imported.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Find the subcommand first, then let its module add its arguments and parse again.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(known._module)
    sub_parser = argparse.ArgumentParser(prog=f"diffzoo {known.command}", description=COMMANDS[known.command][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except DiffzooError as err:
        print(f"diffzoo {known.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
