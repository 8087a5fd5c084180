"""Latent precompute with a real diffusers AutoencoderKL (a small one with random weights, saved and
loaded with save_pretrained/from_pretrained as a published VAE is), and the identity codec."""
import numpy as np
import pytest
import torch

from diffzoo.data.dataset import build_dataset
from diffzoo.data.images import build_images
from diffzoo.data.shards import iter_shards
from diffzoo.errors import DiffzooError
from diffzoo.latents import LatentDataset, encode_shards, make_codec, to_uint8


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    build_dataset("digits", out=root / "raw", max_per_class=2)
    build_images(root / "raw", root / "images", 16, workers=1)
    return root / "images"


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from diffusers.models import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4)
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


def test_vae_latents_are_the_posterior_of_each_image_and_its_flip(images_dir, vae_dir, tmp_path):
    from diffusers.models import AutoencoderKL

    meta = encode_shards(images_dir, tmp_path / "lat", vae=str(vae_dir), batch_size=7, flips=True)
    images, labels = next(iter_shards(images_dir))
    assert meta["shape"] == [4, 8, 8] and meta["num_images"] == len(images) == 20
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        dist_flip = vae.encode(x.flip(3)).latent_dist
    shard = tmp_path / "lat" / meta["shards"][0]
    views = [("mean", dist.mean), ("std", dist.std), ("mean_flip", dist_flip.mean), ("std_flip", dist_flip.std)]
    for key, ref in views:
        stored = torch.from_numpy(np.load(shard / f"{key}.npy").astype(np.float32))
        assert torch.allclose(stored, ref, rtol=2e-3, atol=2e-3), key  # stored as float16
    assert np.array_equal(np.load(shard / "labels.npy"), labels)

    # Training draws z = (mean + std * eps) * scale, a fresh posterior sample each time.
    data = LatentDataset(tmp_path / "lat", scale=0.18215)
    gen = torch.Generator().manual_seed(3)
    z, y = data.batch([0, 5], gen)
    gen = torch.Generator().manual_seed(3)
    flips = torch.rand(2, generator=gen) < 0.5
    eps = torch.randn((2, 4, 8, 8), generator=gen)
    for row, (i, f) in enumerate(zip([0, 5], flips.tolist(), strict=True)):
        suffix = "_flip" if f else ""
        mean = torch.from_numpy(np.load(shard / f"mean{suffix}.npy")[i].astype(np.float32))
        std = torch.from_numpy(np.load(shard / f"std{suffix}.npy")[i].astype(np.float32))
        assert torch.allclose(z[row], (mean + std * eps[row]) * 0.18215, atol=1e-6)
    assert y.tolist() == [labels[0], labels[5]]

    # Decoding divides by the scale, as DiT's sample.py does.
    codec = make_codec(str(vae_dir), 0.18215)
    with torch.no_grad():
        assert torch.allclose(codec.decode(z), vae.decode(z / 0.18215).sample, atol=1e-5)


def test_identity_latents_are_the_images_in_minus_one_to_one(images_dir, tmp_path):
    meta = encode_shards(images_dir, tmp_path / "lat", vae="identity", flips=False)
    images, _ = next(iter_shards(images_dir))
    stored = np.load(tmp_path / "lat" / meta["shards"][0] / "mean.npy").astype(np.float32)
    assert meta["data_scale"] == 1.0 and meta["shape"] == [3, 16, 16]
    assert np.allclose(stored, np.transpose(images, (0, 3, 1, 2)) / 127.5 - 1, atol=1e-3)
    # and back: uint8 as DiT writes samples (clamp(127.5 x + 128))
    assert np.array_equal(to_uint8(torch.from_numpy(stored[:3])), np.asarray(images[:3]))


@pytest.mark.slow  # the full tier
def test_missing_vae_weights_give_one_clear_error(hf_offline):
    message = (r"cannot load the VAE 'stabilityai/sd-vae-ft-ema'.*huggingface-cli download stabilityai/sd-vae-ft-ema "
               r"--revision f04b2c4b98319346dad8c65879f680b1997b204a")  # the pinned commit (hub.PINNED)
    with pytest.raises(DiffzooError, match=message):
        make_codec("stabilityai/sd-vae-ft-ema", 0.18215)


@pytest.mark.slow  # the full tier
def test_an_unpinned_vae_of_an_older_model_json_still_loads_by_name(hf_offline):
    """A model.json written before the pins may name a repo without a revision: loading asks for the
    repo's newest files (one clear line offline), it does not refuse the file."""
    from diffzoo.hub import pin_argument

    with pytest.raises(DiffzooError, match=r"cannot load the VAE 'me/vae'.*`huggingface-cli download me/vae` "):
        make_codec("me/vae", 0.18215)
    with pytest.raises(DiffzooError, match=r"^--vae me/vae: 'me/vae' has no revision: write me/vae@<commit>"):
        pin_argument("me/vae", "--vae")  # the command line, like params, asks for one


def test_rerun_with_other_settings_does_not_reuse_shards(images_dir, vae_dir, tmp_path):
    """Shards of an earlier run are resumed only under the same settings: switching the codec over
    an existing folder re-encodes every shard."""
    out = tmp_path / "lat"
    encode_shards(images_dir, out, vae="identity", flips=False)
    meta = encode_shards(images_dir, out, vae=str(vae_dir), flips=False)
    assert meta["shape"] == [4, 8, 8]
    assert np.load(out / meta["shards"][0] / "mean.npy").shape[1:] == (4, 8, 8)
    assert (out / meta["shards"][0] / "std.npy").exists()


def test_an_output_restored_as_a_link_is_replaced_never_written_through(images_dir, tmp_path):
    """Snakemake's between-workflow cache restores an output folder as a link into the cache. A later
    run of the stage under other settings must replace the link, leaving the cached copy as it was."""
    cached = tmp_path / "cache" / "lat"
    encode_shards(images_dir, cached, vae="identity", flips=False)
    before = {p.relative_to(cached): p.read_bytes() for p in cached.rglob("*") if p.is_file()}
    out = tmp_path / "project" / "lat"
    out.parent.mkdir()
    out.symlink_to(cached, target_is_directory=True)
    meta = encode_shards(images_dir, out, vae="identity", flips=True)
    assert not out.is_symlink() and (out / meta["shards"][0] / "mean_flip.npy").is_file()
    assert {p.relative_to(cached): p.read_bytes() for p in cached.rglob("*") if p.is_file()} == before


def test_the_data_scale_is_one_over_the_std_of_posterior_samples(images_dir, vae_dir, tmp_path):
    """latents.scale: null takes the latent-diffusion paper's 1 / std of the training latents. The
    stage computes it in closed form from the stored posteriors; here it is measured instead, as LDM
    does, from posterior samples z = mean + std * eps (many draws per image), and it is what the
    training batches are multiplied by."""
    from diffusers.models import AutoencoderKL

    meta = encode_shards(images_dir, tmp_path / "lat", vae=str(vae_dir), flips=False)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    images, _ = next(iter_shards(images_dir))
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen) for _ in range(400)])
    measured = 1 / draws.double().std().item()
    assert meta["data_scale"] == pytest.approx(measured, rel=0.01)  # float16 storage + Monte Carlo error
    assert LatentDataset(tmp_path / "lat").scale == meta["data_scale"]  # scale null: the data's
    assert LatentDataset(tmp_path / "lat", scale=0.5).scale == 0.5      # a number in params wins


def test_posterior_mean_training_sees_the_stored_mean(images_dir, vae_dir, tmp_path):
    """latents.posterior: mean trains on the posterior mean (no sampling noise), times the scale."""
    meta = encode_shards(images_dir, tmp_path / "lat", vae=str(vae_dir), flips=False)
    data = LatentDataset(tmp_path / "lat", scale=2.0, posterior="mean")
    z, _ = data.batch([3, 4], torch.Generator().manual_seed(1))
    mean = np.load(tmp_path / "lat" / meta["shards"][0] / "mean.npy")[[3, 4]].astype(np.float32)
    assert torch.equal(z, torch.from_numpy(mean) * 2.0)


def test_a_one_channel_vae_encodes_the_grey_image_and_decodes_one_channel(images_dir, vae_dir, tmp_path):
    """The pipeline's autoencoder on grey data has one channel in and out: the codec feeds it the grey
    value (the data's three equal channels) and its samples are (N, H, W, 1) uint8."""
    from diffzoo.autoencoder import build_autoencoder

    torch.manual_seed(0)
    vae = build_autoencoder({"block_out_channels": [8, 8], "layers_per_block": 1, "latent_channels": 4,
                             "norm_groups": 4}, channels=1)
    vae.save_pretrained(tmp_path / "grey-vae")
    codec = make_codec(str(tmp_path / "grey-vae"), 0.5, grayscale=True)
    images, _ = next(iter_shards(images_dir))
    batch = torch.from_numpy(np.array(images[:4])).permute(0, 3, 1, 2)
    mean, std = codec.encode(batch)
    grey = batch[:, :1].float() / 127.5 - 1  # the digits are stored as three equal channels
    with torch.no_grad():
        assert torch.allclose(mean, vae.encode(grey).latent_dist.mean, atol=1e-6)
        decoded = codec.decode(mean * 0.5)
        assert torch.allclose(decoded, vae.decode(mean).sample, atol=1e-5)
    assert to_uint8(decoded).shape == (4, 16, 16, 1)
    with pytest.raises(DiffzooError, match="takes 3 channels, not one grey channel"):
        make_codec(str(vae_dir), 0.5, grayscale=True)
