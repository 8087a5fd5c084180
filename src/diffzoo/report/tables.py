"""The papers' tables with our rows beside the published ones, and the plots (`diffzoo report`).

A table is named in params.yaml `report.tables`: "default" (and "digits_scaling", "mamba_family") hold our
experiments only; a paper's name (see TABLES) adds that paper's published rows from papers.yaml.
Every row names the feature extractor its metrics came from: published rows are the ADM suite's
Inception; ours are whatever evaluate.feature_extractor was. Numbers from different extractors are
never comparable, so the column is always there and the FID-vs-Gflops plot draws each extractor as
its own series.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from ..models import model_family
from ..utils import atomic_path
from .published import TABLES, load_papers

COLUMNS = ["source", "experiment", "model", "setting", "features", "fid", "sfid", "is", "precision", "recall",
           "class_acc", "judge_acc", "params", "gflops", "train_images", "gpu_hours"]
ADM = "inception (ADM suite)"


def _paper_rows(block: dict, model: str, source: str, extra: dict | None = None) -> list[dict]:
    rows = []
    for setting, v in block.items():
        rows.append({"source": source, "experiment": "", "model": model, "setting": setting, "features": ADM,
                     "fid": v.get("fid", v.get("fid50k")), "sfid": v.get("sfid"), "is": v.get("is"),
                     "precision": v.get("precision"), "recall": v.get("recall"),
                     "train_images": v.get("images_seen"), **(extra or {})})
    return rows


def published_rows(table: str) -> list[dict]:
    """The published rows of one paper table (papers.yaml, with its source named in each row)."""
    P = load_papers()
    dit, moe = P["dit"], P["dit_moe"]
    if table in OURS_ONLY:
        return []
    if table == "dit_table4":
        return [{"source": "DiT Table 4", "experiment": "", "model": f"DiT-{cfg}", "setting": "400K steps, no guidance",
                 "features": ADM, "fid": v["fid50k"], "gflops": v["gflops"], "params": dit["params_256"][cfg],
                 "train_images": 400_000 * 256} for cfg, v in dit["table4_256"].items()]
    if table == "dit_imagenet256":
        return _paper_rows(dit["imagenet256_xl2_7M_steps"], "DiT-XL/2", "DiT Table 2 (7M steps)",
                           {"params": dit["params_256"]["XL/2"], "gflops": dit["table4_256"]["XL/2"]["gflops"],
                            "train_images": 7_000_000 * 256})
    if table == "dit_imagenet512":
        return _paper_rows(dit["imagenet512_xl2_3M_steps"], "DiT-XL/2", "DiT Table 3 (3M steps)",
                           {"params": dit["params_512"]["XL/2"], "gflops": dit["xl2_512_gflops"],
                            "train_images": 3_000_000 * 256})
    if table == "diffussm_imagenet256":
        d = P["diffussm"]
        return _paper_rows(d["imagenet256_xl"], "DiffuSSM-XL", "DiffuSSM Table 2",
                           {"params": d["xl"]["params_approx"], "gflops": d["xl"]["gflops_256"]})
    if table == "dis_imagenet256":
        d = P["dis"]
        return _paper_rows({"guided": d["imagenet256_h2_guided"]}, "DiS-H/2", "DiS Table 3",
                           {"params": d["params_256_class_cond_p2"]["H/2"] * 1e6})
    if table == "dit_moe_imagenet256":
        c = moe["configs"]["XL/2-8E2A"]
        return _paper_rows({"guided": moe["imagenet256_xl2_guided"]}, "DiT-MoE-XL/2-8E2A", "DiT-MoE Table 3",
                           {"params": c["params_total"], "gflops": c["gflops"]})
    raise KeyError(f"unknown table {table!r}; known: {', '.join(TABLES)}")


# tables of our rows alone (no published rows)
OURS_ONLY = ("default", "digits_scaling", "mamba_family", "fashion", "claims")


def metric_columns(metrics: dict) -> dict:
    """The table's metric columns from a metrics.json."""
    return {"features": metrics["feature_extractor"]["name"], "fid": metrics.get("fid"), "sfid": metrics.get("sfid"),
            "is": metrics.get("inception_score"), "precision": metrics.get("precision"),
            "recall": metrics.get("recall"), "class_acc": metrics.get("class_accuracy"),
            "judge_acc": metrics.get("judge_accuracy")}


def objective_label(run) -> str:
    """"ddpm", or with the small-scale options named: "ddpm (v-prediction, cosine)"."""
    t = run.train
    options = [f"{t.prediction}-prediction" if t.prediction not in (None, "eps") else None,
               t.noise_schedule if t.noise_schedule not in (None, "linear") else None]
    options = [o for o in options if o and run.objective == "ddpm"]
    return run.objective + (f" ({', '.join(options)})" if options else "")


def real_row(metrics: dict) -> dict:
    """The floor: held-out real images evaluated as a sample file."""
    return {"source": "diffzoo", "experiment": "real data", "model": "-",
            "setting": f"{metrics['samples']['num_images']} held-out real images", **metric_columns(metrics)}


def autoencoder_row(metrics: dict) -> dict:
    """The latent models' floor: the held-out images through the autoencoder (decode of the posterior
    mean), evaluated as a sample file."""
    ae = metrics["autoencoder"]
    return {"source": "diffzoo", "experiment": "autoencoder", "model": "AutoencoderKL",
            "setting": (f"{metrics['samples']['num_images']} held-out images reconstructed, "
                        f"PSNR {metrics['psnr']:.2f} dB"),
            **metric_columns(metrics), "params": ae["params"], "train_images": ae["steps"] * ae["batch_size"]}


def our_row(run, metrics: dict, train: dict) -> dict:
    """A run's row from its metrics.json and its training summary (results/train/<id>.json). The sample
    settings are those the sample job recorded (metrics' "sampling"), not the params of today."""
    drawn = metrics.get("sampling") or {}
    s = {**run.sample.model_dump(mode="json"), **drawn.get("sample", {})}  # (a record names every setting)
    sampler = "Euler" if run.objective == "rectified_flow" else s["sampler"].upper()
    trained = (f"released weights {train['released']}, our pipeline" if train.get("released")
               else f"{objective_label(run)}, {train['steps']} steps")
    n = drawn.get("num_samples", s["num_samples"])
    setting = (f"{trained}, {n} samples, {str(s['sampling_steps']).removeprefix('ddim')} {sampler} steps"
               + (f", cfg {s['cfg_scale']} ({s['guidance']})" if s["cfg_scale"] > 1 else ""))
    return {"source": "diffzoo", "experiment": run.id, "model": run.model, "setting": setting,
            "objective": objective_label(run), "cfg": s["cfg_scale"], **metric_columns(metrics),
            "params": train["params"], "gflops": train["gflops"], "train_images": train["images_seen"],
            "gpu_hours": train["gpu_hours"]}


def _fmt(value, col: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if col in ("params", "train_images"):
        v = float(value)
        return f"{v / 1e9:.2f}B" if v >= 1e9 else f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}K"
    if col in ("precision", "recall", "class_acc", "judge_acc"):
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.2f}" if col != "gflops" or value >= 0.1 else f"{value:.4f}"
    return str(value)


def frame(rows: list[dict]):
    """The rows as a DataFrame with the table's columns, in order (keys beyond them dropped)."""
    import pandas as pd

    return pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=COLUMNS, dtype=object)


def render(rows: list[dict]) -> dict[str, str]:
    """Markdown, CSV and LaTeX of the same rows, written by pandas: the CSV holds the raw values, the
    Markdown and LaTeX the rounded ones a person reads (params 675.1M, precision 0.827)."""
    df = frame(rows)
    shown = df.apply(lambda col: col.map(lambda v: _fmt(v, col.name)))
    align = ["left"] * 5 + ["right"] * (len(COLUMNS) - 5)  # the text columns, then the numbers
    return {"md": shown.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n",
            "csv": df.to_csv(index=False, lineterminator="\n"),
            "tex": shown.to_latex(index=False, escape=True, column_format="".join(a[0] for a in align))}


def _family(model: str) -> str:
    try:
        return model_family(model)
    except KeyError:
        return model.split("-")[0]


def plot_fid_vs_gflops(rows: list[dict], path: Path) -> tuple[float, float]:
    """DiT's scaling figure: FID against forward Gflops, one line per backbone family and objective
    (per patch size where a family's rows vary both size and patch, as DiT's Table 4)
    (and per source and feature extractor: numbers of different extractors are never on one line), a
    colour and a marker per family (ours filled, published hollow on dashed lines),
    with the Pearson correlation of log Gflops and log FID of each line of 3 or more points (DiT
    reports -0.93). Guided rows (cfg > 1) are drawn apart, as stars joined to nothing. Returns the
    x axis's limits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(8, 6.5))
    series: dict[tuple, list] = {}
    for r in rows:
        if r.get("fid") is not None and r.get("gflops"):
            guided = (r.get("cfg") or 1.0) > 1.0
            key = (_family(r["model"]), r.get("objective", ""), r["source"], r["features"], guided, "")
            series.setdefault(key, []).append(r)
    for key, rs in list(series.items()):  # a grid of sizes x patches (DiT's Table 4): a line per patch
        patch = {r["model"]: m.group(1) for r in rs if (m := re.search(r"/(\d+)$", r["model"]))}
        if len(set(patch.values())) > 1 and len({m.split("/")[0] for m in patch}) > 1 and not key[4]:
            del series[key]
            for r in rs:
                series.setdefault(key[:5] + (f"patch {patch.get(r['model'], '?')}",), []).append(r)
    families = sorted({key[0] for key in series})
    colors = dict(zip(families, plt.get_cmap("tab10").colors, strict=False))
    markers = dict(zip(families, "osD^vP<>Xh", strict=False))  # a family keeps its marker in print, too
    objectives = sorted({key[1] for key in series})
    styles = dict(zip(objectives, ["-", ":", "-.", (0, (5, 1))], strict=False))
    fids = [r["fid"] for rs in series.values() for r in rs]
    for (family, objective, source, features, guided, patch), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["gflops"])
        x, y = [r["gflops"] for r in rs], [r["fid"] for r in rs]
        ours = source == "diffzoo"
        what = ", ".join(w for w in (family, patch, objective) if w)
        label = f"{what} ({source}; {features})"
        if guided:
            ax.scatter(x, y, marker="*", s=90, color=colors[family], label=f"{what}, guided (cfg > 1)")
        else:
            if len(rs) >= 3:
                label += f", r = {np.corrcoef(np.log(x), np.log(y))[0, 1]:.2f}"
            ax.plot(x, y, marker=markers[family], linestyle=styles.get(objective, "-") if ours else "--",
                    color=colors[family], markerfacecolor=colors[family] if ours else "none", label=label)
        for i, r in enumerate(rs):
            name = r["experiment"] or r["model"]
            if guided:
                name = f"cfg {r['cfg']:g}"
            ax.annotate(name, (r["gflops"], r["fid"]), fontsize=7, textcoords="offset points",
                        xytext=(5, 3 if i % 2 == 0 else -9))
    for r in rows:
        if r.get("experiment") == "real data" and r.get("fid") is not None:
            ax.axhline(r["fid"], color="grey", linestyle="--", linewidth=1,
                       label=f"real data, the floor ({r['setting']}; {r['features']})")
            fids.append(r["fid"])
    log_axes = [ax.xaxis] + ([ax.yaxis] if fids and max(fids) > 10 * min(fids) else [])
    ax.set_xscale("log")
    if len(log_axes) == 2:
        ax.set_yscale("log")
    for axis in log_axes:  # ticks at 1, 2, 5 x 10^k, written as plain numbers
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    flops = [r["gflops"] for rs in series.values() for r in rs]
    if flops and max(flops) < 4 * min(flops):  # near-equal models: at least a factor 16 of axis, centred
        middle = (max(flops) * min(flops)) ** 0.5  # (matplotlib zoomed into 0.003412-0.003416 for two)
        ax.set_xlim(min(middle / 4, min(flops) / 1.5), max(middle * 4, max(flops) * 1.5))
    ax.set_xlabel("forward Gflops (batch 1)", fontsize=10)
    ax.set_ylabel("FID (lower is better)", fontsize=10)
    ax.set_title("FID against forward Gflops, one line per backbone family and objective", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    limits = ax.get_xlim()
    plt.close(fig)
    return limits


def plot_losses(groups: dict[str, dict[str, Path]], path: Path) -> None:
    """Training loss per experiment (label -> {experiment: loss TSV}), one panel per objective: their
    losses are different quantities."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (label, logs) in zip(axes[0], sorted(groups.items()), strict=True):
        for exp_id, tsv in logs.items():
            rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:] if line]
            ax.plot([int(r[0]) for r in rows], [float(r[1]) for r in rows], label=exp_id)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


FLOOR_ROWS = ("real data", "autoencoder")  # the tables' rows that are floors, not models


def compact_markdown(md: str) -> str:
    """A Markdown table without the columns that hold one value in every row (the console and the results
    page: `source`, `sfid`, `gpu_hours` on the default say nothing there; the floor rows' "-" does not make
    a column vary); the files keep every column."""
    lines = md.rstrip("\n").splitlines()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
    if len(rows) < 4:  # a header, its separator and at least two rows to compare
        return md
    body = rows[2:]
    name = rows[0].index("experiment") if "experiment" in rows[0] else 0
    runs = [r for r in body if r[name] not in FLOOR_ROWS]  # the floors' "-" cells say nothing of a column
    runs = runs if len(runs) >= 2 else body

    def says_something(i: int) -> bool:
        values = {r[i] for r in runs}
        return len(values) > 1 or any(r[i] not in values | {"-", ""} for r in body)
    keep = [i for i in range(len(rows[0])) if i == name or says_something(i)]
    widths = [max(len(r[i]) if k != 1 else 3 for k, r in enumerate(rows)) for i in keep]
    out = []
    for k, r in enumerate(rows):
        if k == 1:
            cells = [(":" if r[i].startswith(":") else "-") + "-" * (w - 2) + (":" if r[i].endswith(":") else "-")
                     for i, w in zip(keep, widths, strict=True)]
        else:
            cells = [r[i].rjust(w) if rows[1][i].endswith(":") and not rows[1][i].startswith(":") else r[i].ljust(w)
                     for i, w in zip(keep, widths, strict=True)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_tables(tables: list[str], ours: list[dict], out: Path) -> tuple[list[Path], list[dict]]:
    """results/tables/<table>.{md,csv,tex}: each table's published rows above ours. Returns the
    files and every row drawn (ours and the published ones) for the plots."""
    written, all_rows = [], list(ours)
    for table in tables:
        rows = published_rows(table) + ours
        all_rows += [r for r in rows if r["source"] != "diffzoo"]
        for ext, text in render(rows).items():
            path = out / "tables" / f"{table}.{ext}"
            with atomic_path(path) as tmp:
                tmp.write_text(text)
            written.append(path)
    return written, all_rows
