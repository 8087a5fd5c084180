"""the papers' tables (published rows beside ours) and the plots

`diffzoo report --params P`: results/tables/<table>.{md,csv,tex} for every `report.tables` entry,
results/plots/fid_vs_gflops.png, loss.png and samples.png (every run's samples side by side), and
results/index.html (one page with all of it, report/page.py), from the metrics and training summaries
of every run (diffzoo.report holds the tables and figures).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DiffzooError
from ..evaluate.reference import REAL
from ..params import load_params, paths
from ..report.figures import OVERVIEW, save_overview
from ..report.page import write_index
from ..report.tables import (autoencoder_row, compact_markdown, objective_label, our_row, plot_fid_vs_gflops,
                             plot_losses, real_row, write_tables)
from ..stages.report import HEADLINE
from ..utils import TIMES_DIR, write_json


def _read(path: Path, stage: str, run_id: str) -> dict:
    if not path.is_file():
        raise DiffzooError(f"{path} does not exist: run the {stage} stage of {run_id!r} first")
    return json.loads(path.read_text())


def our_rows(params) -> list[dict]:
    """The real-data row (when the reference has one), the autoencoder's reconstructions (when a codec
    uses it), then every experiment and sampling."""

    real = paths(params)["reference"] / REAL
    rows = [real_row(json.loads(real.read_text()))] if real.is_file() else []
    if params.uses_autoencoder:
        rows.append(autoencoder_row(_read(paths(params)["autoencoder_metrics"], "autoencoder", "autoencoder")))
    for run_id in params.run_ids:
        where = paths(params, run_id)
        rows.append(our_row(params.run(run_id), _read(where["metrics"], "evaluate", run_id),
                            _read(where["train_metrics"], "train", run_id)))
    return rows


def report(params, out: Path = Path("results"), params_path: str | Path = "params.yaml") -> list[Path]:
    written, all_rows = write_tables(params.report.tables, our_rows(params), out)
    plot_fid_vs_gflops(all_rows, out / "plots" / "fid_vs_gflops.png")
    groups: dict[str, dict[str, Path]] = {}
    for exp_id in params.experiments:
        groups.setdefault(objective_label(params.run(exp_id)), {})[exp_id] = paths(params, exp_id)["train_log"]
    plot_losses(groups, out / "plots" / "loss.png")
    per_class = min(params.run(r).sample.grid for r in params.run_ids)
    images = paths(params)["images"] if params.uses_data else None
    save_overview(images, {r: paths(params, r)["samples"] for r in params.run_ids}, per_class, out / OVERVIEW)
    runs = {r: {"metrics": paths(params, r)["metrics"], "grid": paths(params, r)["grid"]} for r in params.run_ids}
    page = write_index(params, params_path, runs, out)
    headline = write_headline(params, out / HEADLINE)
    return written + [out / "plots" / "fid_vs_gflops.png", out / "plots" / "loss.png", out / OVERVIEW, page, headline]


def write_headline(params, path: Path) -> Path:
    """results/headline.json: each run's FID and judge accuracy, {run: {fid, judge_acc}}, the two numbers
    a sweep is read by; `dvc exp show --only-changed` shows them first, as <run>.fid and <run>.judge_acc.
    (Every other figure is in results/metrics/<run>.json, the training summaries in results/train/.)"""

    out = {}
    for run_id in params.run_ids:
        m = json.loads(paths(params, run_id)["metrics"].read_text())
        pairs = (("fid", "fid"), ("judge_acc", "judge_accuracy"))
        out[run_id] = {k: m[key] for k, key in pairs if m.get(key) is not None}
    write_json(path, out, sort_keys=False)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


def print_tables(params, out: Path = Path("results"), stream=None) -> None:
    """The report's tables as a person reads them at the end of a run (markdown), then where the
    files are."""


    stream = stream or sys.stdout
    for table in params.report.tables:
        md = out / "tables" / f"{table}.md"
        if md.is_file():  # (the columns with one value in every row left out: the files have them)
            print(compact_markdown(md.read_text()).rstrip() + "\n", file=stream)
    claims = out / "claims.json"
    if params.claims and claims.is_file():  # one line per claim: its verdict, then what decided it
        results = json.loads(claims.read_text())
        print("claims (results/claims.md; 95% intervals):", file=stream)
        for claim_id, r in results.items():
            print(f"  {claim_id}: {r['verdict']} -- {r['ours']}", file=stream)
        print(file=stream)
    runs = params.run_ids
    once = {"check", "dataset", "images", "autoencoder", "latents", "reference", "report", "claims"}
    times = stage_times(names=once | {
        f"{command}-{run_id}" for command in ("train", "import-checkpoint", "sample", "evaluate") for run_id in runs})
    if times is not None:
        print("time per stage (the last run of each, with the attempts it resumed; logs/benchmarks/*.tsv):\n"
              + times + "\n", file=stream)
    print(f"results page: {out / 'index.html'}  tables: {out / 'tables'}/  plots: {out / 'plots'}/  "
          f"sample grids: {out / 'samples'}/", file=stream)


def stage_times(names: set[str], folder: Path | None = None) -> str | None:
    """The last recorded run of each of these stages (logs/benchmarks/<stage>[-<id>].tsv, written by
    the CLI) as a Markdown table, slowest first; None when none is recorded. A run that resumed after
    failed or interrupted attempts counts them too (the table once showed only the resumed part; a
    kill -9 leaves no row, so its time is not there)."""
    import pandas as pd


    rows = []
    for tsv in sorted((folder or TIMES_DIR).glob("*.tsv")):
        if tsv.stem not in names:
            continue
        try:
            table = pd.read_csv(tsv, sep="\t")
            last = table.iloc[-1]
            ok = [i for i, status in enumerate(table["status"][:-1]) if status == "ok"]
            attempts = table.iloc[(ok[-1] + 1) if ok else 0:]  # the last run and the failed ones it resumed
            rows.append({"stage": tsv.stem, "seconds": float(attempts["s"].sum()),
                         "cpu seconds": float(attempts["cpu_time"].sum()), "peak MB": float(attempts["max_rss"].max()),
                         "attempts": len(attempts), "status": last["status"], "started": attempts.iloc[0]["started"]})
        except (ValueError, IndexError, KeyError, pd.errors.ParserError):
            continue  # an empty or foreign file: not ours to judge here
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values("seconds", ascending=False)
    return df.to_markdown(index=False, floatfmt=".1f")


def run(args) -> int:
    params = load_params(args.params)
    report(params, params_path=args.params)
    print_tables(params)
    return 0
