"""Latent diffusion on real data through the real stages: a Fashion-MNIST subset (Debian's
dataset-fashion-mnist; CI installs it) taken by Snakemake through the autoencoder the pipeline trains,
the latents (scale from the data), a latent DiT and a pixel-space DiT, sampling and evaluation.

What is checked is what would cost a GPU-week if wrong on ImageNet: the autoencoder reconstructs
held-out images (PSNR above a floor, and its saved folder reloads through diffusers and reproduces the
stage's reconstructions), the scale is 1 / std of the training latents (measured here from posterior
samples, not from the stage's closed form), model.json carries the scale sampling divides by, and the
latent model's decoded samples show the class they were drawn for, by the independent judge
(scikit-learn on the original 28x28 pixels).
"""
import json

import numpy as np
import pytest
import torch
from conftest import table_rows
from test_workflow import make_project, sh, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def debian_files():
    from diffzoo.data import dataset as ds

    if not all((ds.FASHION_MNIST_DEBIAN / f"{n}.gz").is_file() for n in ds.FASHION_MNIST_FILES):
        pytest.skip("Fashion-MNIST is not installed: run `apt-get install dataset-fashion-mnist`")

# Measured on this configuration (2-core CPU, session 6): the floors sit below with room for noise.
PSNR_FLOOR = 20.0          # dB on the held-out images (measured: see the closing assert message)
LATENT_JUDGE_FLOOR = 0.45  # share of latent-model samples the judge labels as their class (chance 0.1)


def fashion_params() -> dict:
    tiny = {"hidden_size": 64, "depth": 4, "num_heads": 4}
    return {
        "data": {"name": "fashion", "source": "fashion_mnist", "max_per_class": 100, "resolution": 32},
        "latents": {"vae": "autoencoder", "scale": None, "flips": False, "grayscale": True, "batch_size": 256},
        "autoencoder": {"block_out_channels": [16, 32, 32], "steps": 400, "batch_size": 32},
        "classifier": {"epochs": 6},
        "train": {"steps": 800, "global_batch_size": 64, "lr": 1.0e-3, "ema_decay": 0.99, "ckpt_every": 400,
                  "log_every": 100, "prediction": "v"},
        "sample": {"num_samples": 200, "batch_size": 200, "sampling_steps": "ddim25", "sampler": "ddim",
                   "cfg_scale": 1.0},
        "evaluate": {"feature_extractor": "classifier", "pr_distance_dtype": "float32"},
        "report": {"tables": ["fashion"]},
        "resources": {"train_gpus": 0, "sample_gpus": 0, "gpus": 0},  # CPU jobs (a local run checks for GPUs)
        "experiments": {
            "latent": {"model": "DiT-S/2", "model_args": tiny, "objective": "ddpm", "train": {}, "sample": {},
                       "latents": {}},
            "pixel": {"model": "DiT-S/8", "model_args": tiny, "objective": "ddpm", "train": {"steps": 20},
                      "sample": {"num_samples": 20, "batch_size": 20}, "latents": {"vae": "identity"}},
        },
    }


def test_latent_diffusion_on_fashion_mnist_through_snakemake(tmp_path):
    from diffusers.models import AutoencoderKL

    p = make_project(tmp_path / "project")
    write_params(p, fashion_params())
    out = sh(p, "snakemake", "--cores", "2")
    ae_dir = p / "data/fashion/autoencoder-32"

    # The autoencoder: held-out PSNR above the floor, and the folder reloads through diffusers and
    # reproduces the stage's reconstructions of the held-out (t10k) images.
    metrics = json.loads((p / "results/autoencoder/metrics.json").read_text())
    assert metrics["psnr"] > PSNR_FLOOR, metrics["psnr"]
    vae = AutoencoderKL.from_pretrained(ae_dir).eval()
    assert vae.config.in_channels == 1 and vae.config.latent_channels == 4
    from diffzoo.evaluate.images import open_images
    val = open_images(p / "data/fashion/images-32/val")
    originals = val.take(np.arange(val.num_images))
    recon = np.load(ae_dir / "reconstructions.npz")["arr_0"]
    assert recon.shape == (len(originals), 32, 32, 3)  # grey repeated, as ADM's npz holds samples
    with torch.no_grad():
        x = torch.from_numpy(originals[:50, :, :, :1]).permute(0, 3, 1, 2).float() / 127.5 - 1
        mine = vae.decode(vae.encode(x).latent_dist.mean).sample
    mine = torch.clamp(127.5 * mine + 128, 0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert np.abs(mine.astype(int) - recon[:50, :, :, :1].astype(int)).max() <= 1
    assert (p / "results/autoencoder/reconstructions.png").stat().st_size > 10_000

    # The scale: 1 / std of posterior samples of the training latents, measured by drawing them.
    lat = p / "data/fashion/latents-32"
    index = json.loads((lat / "index.json").read_text())
    mean = np.concatenate([np.load(lat / s / "mean.npy").astype(np.float64) for s in index["shards"]])
    std = np.concatenate([np.load(lat / s / "std.npy").astype(np.float64) for s in index["shards"]])
    rng = np.random.default_rng(0)
    draws = np.concatenate([mean + std * rng.standard_normal(mean.shape) for _ in range(4)])
    assert index["data_scale"] == pytest.approx(1 / draws.std(), rel=2e-3)
    model = json.loads((p / "data/experiments/latent/model.json").read_text())
    assert model["latents"]["scale"] == index["data_scale"] and model["latents"]["vae"] == str(ae_dir.relative_to(p))
    assert json.loads((p / "data/experiments/pixel/model.json").read_text())["latents"]["scale"] == 1.0
    assert (p / "data/fashion/latents-32-pixel-grey/index.json").is_file()  # the control's own latents

    # The latent model's samples, decoded by the autoencoder, show their class to the judge.
    judged = json.loads((p / "results/metrics/latent.json").read_text())["judge_accuracy"]
    samples = np.load(p / "data/experiments/latent/samples.npz")["arr_0"]
    assert samples.shape == (200, 32, 32, 3)
    assert judged >= LATENT_JUDGE_FLOOR, judged

    # The table: the real data, the autoencoder's reconstructions, then the experiments.
    rows = table_rows((p / "results/tables/fashion.md").read_text())
    assert [r[1] for r in rows] == ["real data", "autoencoder", "latent", "pixel"]
    assert "PSNR" in rows[1][3]
    real = json.loads((p / "data/fashion/reference-32-classifier/real.json").read_text())
    print(f"measured: PSNR {metrics['psnr']:.2f} dB, reconstruction FID {metrics['fid']:.2f}, latent judge "
          f"{judged:.3f}, real judge {real['judge_accuracy']:.3f}")
    assert "autoencoder" in out
