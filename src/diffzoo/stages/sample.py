"""sample N images of one experiment to an ADM-format npz and a grid PNG

`diffzoo sample --params P --experiment ID` (an experiment or a sampling): its EMA model's samples
(diffzoo.sampling: seeded by index, resumable in parts) to data/experiments/<ID>/samples.npz, and
results/samples/<ID>.png (one row per class, the real images beside). The parts live in
samples.parts-<key>/ (key: the sample settings and the model weights' hash), so only a rerun of the
same settings and weights reuses them; under torchrun rank r draws parts r, r + W, ...
"""
from __future__ import annotations

import argparse
import json

from ..errors import DiffzooError
from ..params import load_params, paths
from ..runtime import relaunch_under_torchrun, setup_process
from ..utils import content_hash, remove_tree, sha256_file

CODE = ["sampling.py", "runtime.py", "stages/sample.py", "latents.py", "diffusion/*.py", "checkpoints.py",
        "report/figures.py"]
GPUS = "sample_gpus"  # params.resources key
PER_RUN = True


def params_slice(params, run_id: str) -> dict:
    return {"sample": params.run(run_id).sample.model_dump(mode="json"), "vae_dtype": params.latents.dtype}


def sample(params_path: str, run_id: str, device: str | None = None):
    from ..checkpoints import load_model
    from ..diffusion.objective import build_objective
    from ..latents import make_codec
    from ..report.figures import save_run_grid
    from ..sampling import assemble, sample_parts

    params = load_params(params_path)
    run = params.run(run_id)
    cfg, where = run.sample, paths(params, run_id)
    if not where["model"].is_file():
        raise DiffzooError(f"{where['model']} does not exist: train experiment {run.trained_by!r} first")
    proc = setup_process(device)
    model = load_model(where["model"]).to(proc.device).eval()
    config = json.loads(where["model"].with_suffix(".json").read_text())
    lat = config["latents"]
    objective = build_objective(config["objective"], model.learn_sigma, cfg.sampling_steps, cfg.sampler,
                                clip_denoised=lat["vae"] == "identity", **config.get("objective_args", {}))
    codec = make_codec(lat["vae"], lat["scale"], proc.device, params.latents.dtype)

    # Finished parts are reused only by a run of the same settings and the same model weights.
    key = content_hash({"sample": cfg.model_dump(mode="json"), "model": sha256_file(where["model"]),
                        "vae_dtype": params.latents.dtype})
    parts_dir = where["samples"].parent / f"samples.parts-{key}"
    if proc.is_main:
        for stale in where["samples"].parent.glob("samples.parts-*"):
            if stale != parts_dir:
                remove_tree(stale)
    n_parts = sample_parts(model.guided(cfg.cfg_scale, cfg.guidance), objective, codec, lat["shape"],
                           len(lat["classes"]), cfg, parts_dir, proc, name=f"sample {run_id}")
    proc.barrier()
    proc.close()
    if proc.is_main:
        arr = assemble(parts_dir, n_parts, where["samples"])
        save_run_grid(paths(params)["images"], where["samples"], run_id, cfg.grid, where["grid"])
        remove_tree(parts_dir)
        print(f"sample: {len(arr)} images {arr.shape[1:]} -> {where['samples']}, grid {where['grid']}")
    return where["samples"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--experiment", required=True, help="experiment or sampling id from params.yaml")


def run(args) -> int:
    relaunch_under_torchrun(["sample", "--params", args.params, "--experiment", args.experiment])
    sample(args.params, args.experiment)
    return 0
