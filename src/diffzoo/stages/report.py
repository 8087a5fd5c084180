"""report: the papers' tables, the plots and the results page (diffzoo.commands.report)."""
from __future__ import annotations

CODE = ["report/*.py", "report/papers.yaml", "stages/report.py", "commands/report.py"]
HEADLINE = "headline.json"  # under results/: what `dvc exp show` lists (dvc.yaml's only metrics file)


def params_slice(params, run_id=None) -> dict:
    return {"report": params.report.model_dump(mode="json"),
            "experiments": {k: e.model for k, e in params.experiments.items()},
            "samplings": {k: s.experiment for k, s in params.samplings.items()}}


def outputs(params) -> list[str]:
    """What the report writes (the Snakefile's report rule outputs)."""
    out = [f"results/tables/{table}.{ext}" for table in params.report.tables for ext in ("md", "csv", "tex")]
    return out + ["results/plots/fid_vs_gflops.png", "results/plots/loss.png", "results/plots/samples.png",
                  "results/index.html", f"results/{HEADLINE}"]
