"""The claims report: each claim of params' `claims:` judged by its 95% interval (results/claims.md,
results/claims.json, results/claims/<claim>.png).

What a claim's runs mean for its kind is in catalogue.py; the intervals and verdicts in stats.py. The
inputs are the runs' metrics.json (FID and its bootstrap standard error) and training summaries
(Gflops), and for the routing and cost claims the probes the claims stage measured (probes.py):
nothing here imports torch.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..utils import atomic_path, write_json
from . import stats
from .catalogue import CLAIMS, CLAIMS_JSON, CLAIMS_MD, CLAIMS_PLOTS

PLOTS = Path(CLAIMS_PLOTS)


# ---- the runs' numbers ---------------------------------------------------------------------------
def config_values(params, name: str, read) -> dict:
    """A config's runs: {name, runs, fid (per seed), fid_se (bootstrap, per seed or None), gflops,
    params, depth, width}; `read(kind, run_id)` returns a run's "metrics" or "train" summary."""
    runs = params.replicates(name)
    fids, ses = [], []
    for run_id in runs:
        m = read("metrics", run_id)
        fids.append(float(m["fid"]))
        boot = (m.get("bootstrap") or {}).get("metrics", {}).get("fid")
        ses.append(None if boot is None else float(boot["se"]))
    run = params.run(runs[0])
    train = read("train", run.trained_by)
    return {"name": name, "runs": runs, "fid": fids, "fid_se": None if None in ses else ses,
            "gflops": float(train["gflops"]), "params": train.get("params"), "model": run.model,
            "depth": run.model_args.get("depth"), "width": run.model_args.get("hidden_size")}


def _interval(c: dict) -> dict:
    return stats.mean_interval(c["fid"], c["fid_se"])


def _fmt_interval(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ---- one claim per kind --------------------------------------------------------------------------
def judge_trend(claim: dict, configs: list[dict]) -> dict:
    x_key = claim["x"]
    xs, ys = [], []
    for c in configs:
        xs += [math.log(c[x_key])] * len(c["fid"])
        ys += [math.log(f) for f in c["fid"]]
    fit = stats.slope_interval(xs, ys)
    return {"statistic": f"slope of log FID on log {x_key}", **fit,
            "verdict": stats.verdict(fit["lo"], fit["hi"], direction=-1),
            "ours": f"slope {_fmt_interval(fit['slope'], fit['lo'], fit['hi'])} (r = {fit['r']:.2f}, {fit['n']} runs; "
                    + ", ".join(f"{c['name']} {_fmt_interval(**_mean(c))}" for c in configs) + ")"}


def _mean(c: dict) -> dict:
    i = _interval(c)
    return {"mean": i["mean"], "lo": i["lo"], "hi": i["hi"]}


def judge_better(claim: dict, configs: list[dict]) -> dict:
    base, better = configs
    d = stats.difference_interval(base["fid"], better["fid"], base["fid_se"], better["fid_se"])
    return {"statistic": "FID(baseline) - FID(claimed better)", **d,
            "verdict": stats.verdict(d["lo"], d["hi"], direction=1),
            "ours": f"FID {base['name']} {_fmt_interval(**_mean(base))} vs {better['name']} "
                    f"{_fmt_interval(**_mean(better))}: difference {_fmt_interval(d['diff'], d['lo'], d['hi'])}"}


def judge_ranking(claim: dict, configs: list[dict]) -> dict:
    order = sorted(configs, key=lambda c: np.mean(c["fid"]))
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            d = stats.difference_interval(b["fid"], a["fid"], b["fid_se"], a["fid_se"])
            pairs.append({"better": a["name"], "worse": b["name"], **d,
                          "resolved": stats.verdict(d["lo"], d["hi"]) == stats.REPRODUCED})
    resolved = sum(p["resolved"] for p in pairs)
    ranking = " < ".join(f"{c['name']} {np.mean(c['fid']):.2f}" for c in order)
    return {"statistic": "FID of each config (mean over seeds); every pair's difference", "pairs": pairs,
            "order": [c["name"] for c in order], "verdict": f"{resolved} of {len(pairs)} pairs resolved",
            "ours": f"by mean FID: {ranking}; {resolved} of {len(pairs)} pairwise differences exclude 0"}


ROUTING_BY = {"class_mi": (0, (1, 2)), "step_mi": (1, (0, 2)), "position_mi": (2, (0, 1))}  # kept axis, summed


def routing_statistics(per_seed: list[dict]) -> dict:
    """From each seed's routing counts (layers, classes, steps, positions, experts): the normalised MI of
    expert choice with class, timestep and position per layer, and the claim's two statistics: the
    timestep's NMI minus the class's (mean over layers), the position's NMI in the first layer minus
    the last."""
    rows = []
    for r in per_seed:
        counts = np.asarray(r["counts"])
        mi = {key: [stats.normalised_mi(layer.sum(axis=summed)) for layer in counts]
              for key, (_, summed) in ROUTING_BY.items()}
        rows.append({**mi, "step_over_class": float(np.mean(np.subtract(mi["step_mi"], mi["class_mi"]))),
                     "position_drop": mi["position_mi"][0] - mi["position_mi"][-1]})
    return {"seeds": rows}


def judge_routing(claim: dict, configs: list[dict], routing: list[dict]) -> dict:
    seeds = routing_statistics(routing)["seeds"]
    over = stats.mean_interval([s["step_over_class"] for s in seeds])
    drop = stats.mean_interval([s["position_drop"] for s in seeds])
    verdict = stats.combine([stats.verdict(over["lo"], over["hi"]), stats.verdict(drop["lo"], drop["hi"])])

    def layers(key):
        return " / ".join(f"{np.mean([s[key][i] for s in seeds]):.3f}" for i in range(len(seeds[0][key])))
    return {"statistic": "normalised MI of expert choice: timestep - class (mean over layers); position, first - "
                         "last layer", "step_over_class": over, "position_drop": drop, "seeds": seeds,
            "verdict": verdict,
            "ours": f"NMI timestep - class {_fmt_interval(over['mean'], over['lo'], over['hi'], 4)}; position, first "
                    f"- last layer {_fmt_interval(drop['mean'], drop['lo'], drop['hi'], 4)} (NMI by layer: class "
                    f"{layers('class_mi')}; timestep {layers('step_mi')}; position {layers('position_mi')})"}


def _exponent(curve: list[dict], key: str, min_side: int) -> dict:
    xs, ys = [], []
    for row in curve:
        if row["side"] < min_side:
            continue
        values = row[key] if isinstance(row[key], list) else [row[key]]
        xs += [math.log(row["side"] ** 2)] * len(values)
        ys += [math.log(v) for v in values]
    fit = stats.slope_interval(xs, ys)
    fit["se"] = (fit["hi"] - fit["slope"]) / stats.t_quantile(fit["n"] - 2) if math.isfinite(fit["hi"]) else math.inf
    return fit


def judge_cost(claim: dict, configs: list[dict], curves: dict, min_side: int) -> dict:
    free, attn = (curves[c["name"]] for c in configs)
    flops = [_exponent(c, "gflops", 0)["slope"] for c in (free, attn)]
    times = [_exponent(c, "seconds", min_side) for c in (free, attn)]
    diff = times[1]["slope"] - times[0]["slope"]
    se = math.hypot(times[0]["se"], times[1]["se"])
    half = stats.t_quantile(times[0]["n"] + times[1]["n"] - 4) * se
    names = [c["name"] for c in configs]
    return {"statistic": "exponent of CPU forward time in the pixels (attention - attention-free)",
            "flops_exponents": dict(zip(names, flops, strict=True)),
            "time_exponents": dict(zip(names, times, strict=True)),
            "diff": diff, "lo": diff - half, "hi": diff + half,
            "verdict": stats.verdict(diff - half, diff + half),
            "ours": f"Gflops exponent {names[0]} {flops[0]:.2f}, {names[1]} {flops[1]:.2f}; measured time exponent "
                    f"{names[0]} {_fmt_interval(times[0]['slope'], times[0]['lo'], times[0]['hi'])}, {names[1]} "
                    f"{_fmt_interval(times[1]['slope'], times[1]['lo'], times[1]['hi'])}; difference "
                    f"{_fmt_interval(diff, diff - half, diff + half)}"}


# ---- the report ----------------------------------------------------------------------------------
def judge_all(params, read, probes: dict) -> dict:
    """Every claim's result: {claim id: {paper, claim, evidence, kind, configs, ..., verdict, ours}}."""
    out = {}
    for claim_id, names in params.claims.items():
        claim = CLAIMS[claim_id]
        configs = [config_values(params, name, read) for name in names]
        kind = claim["kind"]
        if kind == "trend":
            result = judge_trend(claim, configs)
        elif kind == "better":
            result = judge_better(claim, configs)
        elif kind == "ranking":
            result = judge_ranking(claim, configs)
        elif kind == "routing":
            result = judge_routing(claim, configs, probes["routing"][claim_id])
        else:
            result = judge_cost(claim, configs, probes["cost"][claim_id], probes["cost_min_side"])
        out[claim_id] = {"paper": claim["paper"], "claim": claim["claim"], "evidence": claim["evidence"],
                         "kind": kind, "configs": [{**c, "interval": _interval(c)} for c in configs], **result}
    return out


def markdown(results: dict, seconds: float | None = None) -> str:
    lines = ["# The papers' claims at small scale, with 95% intervals", "",
             "Each verdict is read off the interval (report/stats.py), never the point estimate: the interval "
             "on the claimed side of 0 = reproduced, on the other side = not reproduced, across 0 = "
             "inconclusive. A config's FID is the mean over its seeds; its interval uses the seeds' spread, "
             "floored by the bootstrap over samples.", "",
             "| paper | claim | the paper's evidence | ours (95% interval) | verdict |", "|---|---|---|---|---|"]
    for r in results.values():
        cells = [r["paper"], r["claim"], r["evidence"], r["ours"], f"**{r['verdict']}**"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", "## Configs", "", "| claim | config | runs | Gflops | FID per seed | bootstrap se | mean FID [95%] |",
              "|---|---|---|---|---|---|---|"]
    for claim_id, r in results.items():
        for c in r["configs"]:
            i = c["interval"]
            se = "-" if c["fid_se"] is None else " / ".join(f"{s:.2f}" for s in c["fid_se"])
            lines.append(f"| {claim_id} | {c['name']} | {len(c['runs'])} | {c['gflops']:.4f} | "
                         f"{' / '.join(f'{f:.2f}' for f in c['fid'])} | {se} | "
                         f"{_fmt_interval(i['mean'], i['lo'], i['hi'])} |")
    for claim_id, r in results.items():
        if r["kind"] == "ranking":
            lines += ["", f"## {claim_id}: every pair (FID worse - better, 95%)", "",
                      "| better | worse | difference [95%] | resolved |", "|---|---|---|---|"]
            lines += [f"| {p['better']} | {p['worse']} | {_fmt_interval(p['diff'], p['lo'], p['hi'])} | "
                      f"{'yes' if p['resolved'] else 'no'} |" for p in r["pairs"]]
    lines += ["", "Plots: results/claims/<claim>.png."]
    if seconds is not None:
        lines.append(f"The claims stage (probes, statistics, plots) took {seconds:.0f} s.")
    return "\n".join(lines) + "\n"


def write(results: dict, out: Path, probes: dict, seconds: float | None = None) -> list[Path]:
    """results/claims.md, claims.json and a plot per claim."""
    md, js = out / CLAIMS_MD, out / CLAIMS_JSON
    with atomic_path(md) as tmp:
        tmp.write_text(markdown(results, seconds))
    write_json(js, json.loads(json.dumps(results, default=_plain)), sort_keys=False)
    plots = [plot_claim(claim_id, r, probes, out / PLOTS / f"{claim_id}.png") for claim_id, r in results.items()]
    return [md, js, *plots, _plots_note(out, list(results))]


def _plots_note(out: Path, claims: list[str]) -> Path:
    """results/claims/README.md: what the folder holds (and a folder DVC does not find empty)."""
    note = out / PLOTS / "README.md"
    note.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(note) as tmp:
        tmp.write_text("One plot per claim of ../claims.md: " + (", ".join(f"{c}.png" for c in claims) or "none "
                       "(the params name no claims)") + ".\n")
    return note


def write_none(out: Path) -> list[Path]:
    """The outputs where the params name no claims: a note saying so, {} and an empty plot folder."""
    md, js = out / CLAIMS_MD, out / CLAIMS_JSON
    with atomic_path(md) as tmp:
        tmp.write_text("# The papers' claims\n\nThe params name no claims (section `claims:`); configs/claims.yaml "
                       "checks the four papers' and the Mamba family's: `snakemake --cores 2 --configfile "
                       "configs/claims.yaml`.\n")
    write_json(js, {})
    return [md, js, _plots_note(out, [])]


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def plot_claim(claim_id: str, r: dict, probes: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = r["kind"]
    if kind == "routing":
        fig = _routing_figure(plt, claim_id, r, probes["routing"][claim_id])
    elif kind == "cost":
        fig = _cost_figure(plt, r, probes["cost"][claim_id])
    else:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        configs = r["configs"]
        if kind == "trend":
            key = CLAIMS[claim_id]["x"]
            for c in configs:
                ax.scatter([c[key]] * len(c["fid"]), c["fid"], s=14, color="0.6", zorder=2)
                i = c["interval"]
                ax.errorbar([c[key]], [i["mean"]], yerr=_halves(i), fmt="o",
                            color="C0", capsize=4, zorder=3)
                ax.annotate(c["name"], (c[key], i["mean"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
            xs = np.array(sorted(c[key] for c in configs), float)
            level = np.mean([math.log(f) for c in configs for f in c["fid"]])
            center = np.mean([math.log(c[key]) for c in configs for _ in c["fid"]])
            ax.plot(xs, np.exp(level + r["slope"] * (np.log(xs) - center)), "--", color="C1",
                    label=f"fit: slope {r['slope']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(key)
            ax.legend(fontsize=8)
        else:
            order = {n: k for k, n in enumerate(r.get("order", [c["name"] for c in configs]))}
            for c in configs:
                y = order[c["name"]]
                i = c["interval"]
                ax.scatter(c["fid"], [y] * len(c["fid"]), s=14, color="0.6", zorder=2)
                ax.errorbar([i["mean"]], [y], xerr=_halves(i), fmt="o",
                            color="C0", capsize=4, zorder=3)
            ax.set_yticks(range(len(configs)), [n for n, _ in sorted(order.items(), key=lambda kv: kv[1])],
                          fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("FID (per seed: grey; mean and 95% interval: blue)")
        ax.set_ylabel("FID" if kind == "trend" else "")
        ax.set_title(f"{r['paper']}: {claim_id} -- {r['verdict']}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    if kind != "routing":  # (its colour bar spans a grid of panels: laid out by hand)
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _halves(i: dict) -> list[list[float]]:
    """An interval as error-bar half widths; an unbounded one (a single seed without a bootstrap) draws
    no bar, the report's table says inf."""
    return [[i["mean"] - i["lo"] if math.isfinite(i["lo"]) else 0.0], [i["hi"] - i["mean"] if math.isfinite(i["hi"])
                                                                       else 0.0]]


def _routing_figure(plt, claim_id: str, r: dict, per_seed: list[dict]):
    """Heat maps of expert share (relative to the expert's mean share) against class, sampling step and
    token position in the first and the last MoE layer (all seeds' counts), and the NMI per layer."""
    counts = np.sum([np.asarray(s["counts"]) for s in per_seed], axis=0)  # (layers, classes, steps, positions, E)
    fig = plt.figure(figsize=(16, 7.5))
    grid = fig.add_gridspec(2, 5, width_ratios=[1, 1, 1, 0.06, 1.4], wspace=0.55, hspace=0.3, left=0.04,
                            right=0.98, top=0.94, bottom=0.07)
    labels = {"class_mi": "class", "step_mi": "sampling step (noisy -> clean)", "position_mi": "token position"}
    for row, (layer, name) in enumerate(((0, "first"), (len(counts) - 1, "last"))):
        for col, (key, (_, summed)) in enumerate(ROUTING_BY.items()):
            ax = fig.add_subplot(grid[row, col])
            table = counts[layer].sum(axis=summed).astype(float)
            share = table / table.sum(1, keepdims=True)
            im = ax.imshow(share / share.mean(0, keepdims=True), aspect="auto", cmap="coolwarm", vmin=0.5, vmax=1.5)
            ax.set_title(f"{name} MoE layer, by {labels[key].split(' (')[0]}", fontsize=9)
            ax.set_xlabel("expert")
            ax.set_ylabel(labels[key], fontsize=8)
    fig.colorbar(im, cax=fig.add_subplot(grid[:, 3]), label="expert's share / its mean share")
    ax = fig.add_subplot(grid[:, 4])
    seeds = r["seeds"]
    layers = np.arange(1, len(seeds[0]["class_mi"]) + 1)
    for k, key in enumerate(ROUTING_BY):
        values = np.array([s[key] for s in seeds])
        ax.plot(layers, values.mean(0), "o-", color=f"C{k}", label=f"NMI(expert; {labels[key].split(' (')[0]})")
        for v in values:
            ax.plot(layers, v, color=f"C{k}", alpha=0.3, lw=0.8)
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("I(expert; v) / H(expert)")
    ax.set_xticks(layers)
    ax.legend(fontsize=8)
    ax.set_title(f"{claim_id}: {r['verdict']} (thin: each seed)", fontsize=9)
    return fig


def _cost_figure(plt, r: dict, curves: dict):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (name, curve) in enumerate(curves.items()):
        pixels = [row["side"] ** 2 for row in curve]
        axes[0].plot(pixels, [row["gflops"] for row in curve], "o-", color=f"C{k}",
                     label=f"{name}: exponent {r['flops_exponents'][name]:.2f}")
        axes[1].errorbar(pixels, [np.median(row["seconds"]) for row in curve],
                         yerr=[[np.median(row["seconds"]) - min(row["seconds"]) for row in curve],
                               [max(row["seconds"]) - np.median(row["seconds"]) for row in curve]],
                         fmt="o-", color=f"C{k}", capsize=3,
                         label=f"{name}: exponent {r['time_exponents'][name]['slope']:.2f}")
    for ax, label in ((axes[0], "forward Gflops (batch 1)"), (axes[1], "CPU forward seconds (median, min-max)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latent pixels (side^2)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title(f"cost as the resolution grows -- {r['verdict']}", fontsize=10)
    return fig
