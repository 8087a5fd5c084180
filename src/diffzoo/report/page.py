"""results/index.html: one page with every result of a run, for a person to open in a browser.

It opens on the results tables (rounded, the columns that say something), the real-data floor named
as such, then the plots, every run's sample grid side by side (with its FID and judge accuracy), the
loss curves, the papers' claims (a link to the claims stage's report, when the params name claims), the
params the run read and the code version. Plain HTML and CSS with relative links to
the PNGs beside it (no JavaScript, no server): it works from a file:// URL, a DVC remote or a zip.
"""
from __future__ import annotations

import html
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from ..sources import files_digest
from ..utils import PACKAGE, atomic_path
from .catalogue import CLAIMS, CLAIMS_JSON, CLAIMS_MD, CLAIMS_PLOTS
from .tables import compact_markdown

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1600px; }
h1 { margin-bottom: 4px; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; } th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.floor td { background: #eef6ee; font-style: italic; }
.note { color: #555; font-size: 13px; max-width: 1100px; }
.grids { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; } figure img { border: 1px solid #ddd; max-width: 520px; image-rendering: pixelated; }
figcaption { font-size: 13px; color: #444; }
.plots img { max-width: 640px; border: 1px solid #ddd; margin-right: 12px; }
pre { background: #f7f7f7; padding: 8px; font-size: 12px; max-height: 420px; overflow: auto; }
"""

FLOORS = ("real data", "autoencoder")  # rows that are floors, not models (report.tables)


def markdown_table_html(md: str) -> str:
    """A pandas Markdown table (pipes, a separator line saying which columns are right-aligned) as HTML."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return ""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    header, align, body = cells[0], cells[1], cells[2:]
    numeric = [a.endswith(":") and not a.startswith(":") for a in align]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in body:
        floor = any(cell in FLOORS for cell in row)
        tds = "".join(f"<td{' class=num' if numeric[i] else ''}>{html.escape(cell)}</td>" for i, cell in enumerate(row))
        out.append(f"<tr{' class=floor' if floor else ''}>{tds}</tr>")
    return "\n".join(out + ["</table>"])


def code_version(root: Path = Path(".")) -> str:
    """The git commit of the workspace (and whether it has uncommitted changes), else "not a git checkout"."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return "not a git checkout (or no commit yet)"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit.stdout.strip() + (" with uncommitted changes under src/" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"


def write_index(params, params_path: str | Path, runs: dict[str, dict], out: Path = Path("results")) -> Path:
    """results/index.html. `runs`: run id -> {"metrics": metrics.json path, "grid": PNG path}."""

    out = Path(out)
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>diffzoo results</title><style>{STYLE}</style>"
             "</head><body>", "<h1>diffzoo results</h1>"]
    files = tuple(sorted(str(f) for f in PACKAGE.rglob("*.py")))
    parts.append(f"<p class=meta>written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} &middot; params "
                 f"{html.escape(str(params_path))} &middot; code {html.escape(code_version())} (package digest "
                 f"{files_digest(files)})</p>")
    for table in params.report.tables:
        md = out / "tables" / f"{table}.md"
        if md.is_file():
            parts.append(f"<h2>Table: {html.escape(table)}</h2>")
            parts.append(markdown_table_html(compact_markdown(md.read_text())))
            parts.append(f"<p class=note>Columns with one value in every row are left out here; "
                         f"<a href='tables/{table}.md'>Markdown</a>, <a href='tables/{table}.csv'>CSV</a> (raw "
                         f"values), <a href='tables/{table}.tex'>LaTeX</a> have them all. The shaded rows are floors, "
                         "not models: <i>real data</i> is held-out real images evaluated as a sample file (the best "
                         "any model can score with these features), <i>autoencoder</i> the held-out images through "
                         "the latent models' autoencoder.</p>")
    parts.append("<h2>Samples</h2><p class=note>Each run's first samples of the first classes (the real images "
                 "on the left of each grid); FID and the independent judge's accuracy from its metrics.</p>"
                 "<div class=grids>")
    for run_id, where in runs.items():
        caption = html.escape(run_id)
        metrics = Path(where["metrics"])
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            fid, judge = m.get("fid"), m.get("judge_accuracy")
            caption += (f" &middot; FID {fid:.2f}" if isinstance(fid, float) else "") + (
                f" &middot; judge {judge:.3f}" if isinstance(judge, float) else "")
        # (abspath, not resolve: a cached output is a link into the cache, the page links the name)
        rel = Path(os.path.relpath(os.path.abspath(where["grid"]), os.path.abspath(out))).as_posix()
        parts.append(f"<figure><img src='{rel}' alt='{html.escape(run_id)} samples'>"
                     f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</div><h2>Plots</h2><div class=plots>")
    for name in ("fid_vs_gflops.png", "loss.png"):  # (plots/samples.png: the grids above, in one picture)
        if (out / "plots" / name).is_file():
            parts.append(f"<img src='plots/{name}' alt='{name}'>")
    parts.append("</div>")
    if params.claims:  # (the claims stage writes them beside this page, from the same runs' metrics)
        items = "".join(f"<li><a href='{CLAIMS_PLOTS}/{c}.png'>{html.escape(c)}</a>: "
                        f"{html.escape(CLAIMS[c]['claim'])}</li>" for c in params.claims)
        parts.append(f"<h2>The papers' claims</h2><p class=note>Each claim judged by its 95% interval over the "
                     f"runs' seeds: the verdicts, the numbers and the papers' own evidence are in "
                     f"<a href='{CLAIMS_MD}'>{CLAIMS_MD}</a> (<a href='{CLAIMS_JSON}'>JSON</a>), one plot per "
                     f"claim:</p><ul class=note>{items}</ul>")
    text = Path(params_path).read_text() if Path(params_path).is_file() else ""
    parts.append(f"<h2>Params</h2><details><summary>the params this report was made from "
                 f"({html.escape(str(params_path))})</summary><pre>{html.escape(text)}</pre></details>")
    parts.append("</body></html>\n")
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return path
