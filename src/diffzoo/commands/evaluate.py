"""FID, sFID, IS, Precision, Recall of a sample file (ADM definitions)

Two forms:
- `diffzoo evaluate --params P --experiment ID` (the pipeline): the run's samples against the
  reference stage's output, written to results/metrics/<ID>.json (with the data set's independent
  judge's accuracy where it has one: digits, fashion_mnist; evaluate/judge.py);
- `diffzoo evaluate REF_BATCH.npz SAMPLE_BATCH.npz` (the argument order of ADM's evaluator.py) or
  `diffzoo evaluate SAMPLES.npz --ref REF.npz`: ADM's evaluator in PyTorch as a drop-in; prints its
  five lines (Inception Score, FID, sFID, Precision, Recall) and writes metrics.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data._util import read_json
from ..errors import DiffzooError
from ..evaluate.evaluator import check_resolution, evaluate, format_metrics, write_metrics
from ..evaluate.features import load_extractor
from ..evaluate.images import open_images
from ..evaluate.judge import judge_for, judge_source
from ..evaluate.reference import CLASSIFIER, REFERENCE, load_reference
from ..params import load_params, paths
from ..utils import write_json


def add_extractor_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--extractor", choices=("inception", "classifier"), default=default,
                   help="feature extractor (default: the one the reference records, else inception)")
    p.add_argument("--inception-weights", default=None,
                   help="weights-inception-2015-12-05-6726825d.pth (torch-fidelity's port of ADM's Inception); "
                        "default: $DIFFZOO_INCEPTION_WEIGHTS, torch.hub's checkpoints dir, or a download")
    p.add_argument("--classifier-weights", default=None, help="our classifier's .safetensors (its .json beside it)")
    p.add_argument("--no-download", action="store_true", help="never try to download Inception weights")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--cache-dir", default=None, help="cache of reference features/statistics by content "
                                                     "(default ~/.cache/diffzoo/evaluate; '' = off)")


def extractor_from_args(args, recorded: str | None = None):
    name = args.extractor or recorded or "inception"
    weights = args.inception_weights if name == "inception" else args.classifier_weights
    if name == "classifier" and weights is None and getattr(args, "ref", None):
        ref = Path(args.ref)
        beside = (ref if ref.is_dir() else ref.parent) / CLASSIFIER  # the reference stage's output holds both
        weights = str(beside) if beside.is_file() else None
    return load_extractor(name, weights, args.device, allow_download=not args.no_download)


def pipeline_extractor(params, device: str | None = None):
    """The feature extractor the params name: the reference stage's classifier, or Inception."""

    ev = params.evaluate
    if ev.feature_extractor == "classifier":
        return load_extractor("classifier", paths(params)["reference"] / CLASSIFIER, device)
    return load_extractor("inception", ev.inception_weights, device)


def judge_accuracy_of(params, samples) -> float | None:
    """The data set's independent judge's accuracy on labelled samples, where it has a judge."""

    judge = judge_for(params.data.source, params.data.path)
    return None if judge is None else judge_source(samples, judge)


def evaluate_run(params, run_id: str, device: str | None = None) -> dict:
    """A run's samples against the reference stage's output -> results/metrics/<id>.json."""

    params.run(run_id)
    where, ev = paths(params, run_id), params.evaluate
    if not where["samples"].is_file():
        raise DiffzooError(f"{where['samples']} does not exist: run the sample stage of {run_id!r} first")
    samples = open_images(where["samples"])
    metrics = evaluate(samples, where["reference"] / REFERENCE, pipeline_extractor(params, device),
                       batch_size=ev.batch_size, distance_dtype=ev.pr_distance_dtype, cache_dir=None,
                       bootstrap=ev.bootstrap)
    judge = judge_accuracy_of(params, samples)
    if judge is not None:
        metrics["judge_accuracy"] = judge
    metrics["experiment"] = run_id
    record = where["sample_record"]
    if record.is_file():  # how the samples were drawn, as the sample job recorded it (the table's setting)
        metrics["sampling"] = read_json(record, "sample record")
        if metrics["sampling"].get("num_samples") != samples.num_images:
            raise DiffzooError(f"{record} records {metrics['sampling'].get('num_samples')} samples, "
                               f"{where['samples']} holds {samples.num_images}: rerun the sample stage of {run_id!r}")
    write_json(where["metrics"], metrics)
    print("\n".join(f"{run_id}: {line}" for line in format_metrics(metrics).splitlines()))  # lines name their run
    return metrics


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="REF_BATCH SAMPLE_BATCH (ADM's order), or SAMPLES with --ref: an ADM npz (arr_0 uint8 "
                        "NHWC), an images-stage shard dir or an image folder")
    p.add_argument("--ref", help="reference: ADM reference batch or `diffzoo reference-stats` output")
    p.add_argument("--params", default=None, help="pipeline mode: evaluate --experiment's samples as params.yaml says")
    p.add_argument("--experiment", default=None, help="pipeline mode: experiment or sampling id from params.yaml")
    p.add_argument("--out", default="metrics.json", help="where to write the metrics (JSON)")
    add_extractor_arguments(p)
    p.add_argument("--distance-dtype", choices=("float16", "float32"), default=None,
                   help="P/R distances: float16 with float32 fallback as ADM, or float32 throughout "
                        "(default: float16 for inception, float32 for classifier)")
    p.add_argument("--k", type=int, default=3, help="P/R neighbourhood size (ADM: 3)")
    p.add_argument("--is-split", type=int, default=5000, help="IS split size, in file order (ADM: 5000)")
    p.add_argument("--pr-block", type=int, default=10000, help="rows/cols per P/R distance block (ADM: 10000)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (0 = skip KID)")
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="resample the samples N times for each metric's standard error and 95%% interval (0 = none)")


def run(args) -> int:
    if args.params is not None or args.experiment is not None:

        if args.experiment is None:
            raise DiffzooError("--params needs --experiment ID")
        evaluate_run(load_params(args.params or "params.yaml"), args.experiment, args.device)
        return 0
    if len(args.files) == 2 and args.ref is None:
        args.ref, args.samples = args.files  # ADM's evaluator.py: ref_batch sample_batch
    elif len(args.files) == 1 and args.ref is not None:
        args.samples = args.files[0]
    else:
        raise DiffzooError("give REF_BATCH SAMPLE_BATCH, or SAMPLES --ref REF (or --params P --experiment ID for "
                           "the pipeline)")

    samples = open_images(args.samples)   # cheap checks first: shape, dtype, reference
    ref = load_reference(args.ref)
    check_resolution(ref, samples)
    extractor = extractor_from_args(args, (ref.extractor or {}).get("name"))
    metrics = evaluate(samples, ref, extractor, batch_size=args.batch_size, is_split=args.is_split, k=args.k,
                       distance_dtype=args.distance_dtype, pr_block=args.pr_block, kid_subsets=args.kid_subsets,
                       kid_subset_size=args.kid_subset_size, cache_dir=args.cache_dir, bootstrap=args.bootstrap)
    print(format_metrics(metrics))
    write_metrics(metrics, args.out)
    return 0
