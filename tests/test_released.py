"""Released checkpoints as experiments. Tiny files are written in each authors' layout (the keys and
shapes their code saves, random weights): DiT (facebookresearch/DiT), DiT-MoE S/B (timm attention,
per-expert MoE weights) and XL/G (their flash-attention block: Wqkv, q_norm, k_norm, out_proj), DiS.
Each runs through the pipeline on CPU as `train.checkpoint`: a strict load, a model artifact holding
exactly the file's weights, and the sample stage. Also: the QK-norm attention computes what the
authors' block computes, the import-checkpoint output samples, fine-tuning starts from the file,
and a released name downloads into the cache or says where to put the file."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffzoo.checkpoints import RELEASED, read_state_dict, resolve_checkpoint
from diffzoo.errors import DiffzooError
from diffzoo.models import create_model
from diffzoo.models.layers import Attention

from conftest import ROOT

pytestmark = pytest.mark.slow  # the full tier: loads and samples the released layouts, fine-tunes

DIFFZOO = [sys.executable, "-m", "diffzoo.cli"]
TINY = {"input_size": 8, "in_channels": 1, "num_classes": 10, "hidden_size": 32, "depth": 2}


def authors_dit_moe(model, flash: bool) -> dict:
    """feizc/DiT-MoE models.py's state_dict names for `model`: blocks.i.moe (not mlp), one Linear per
    expert (experts.j.{gate,up,down}_proj.weight), and with flash attention attn.Wqkv / attn.out_proj."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("blocks."):
            key = key.replace(".mlp.", ".moe.")
            if flash:
                key = key.replace(".attn.qkv.", ".attn.Wqkv.").replace(".attn.proj.", ".attn.out_proj.")
        if ".experts." in key and not key.endswith("weight"):
            head, name = key.rsplit(".", 1)
            for e in range(value.shape[0]):
                out[f"{head}.{e}.{name}.weight"] = value[e].clone()
        else:
            out[key] = value.clone()
    return out


def _randomized(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


LAYOUTS = {  # name -> (model, model_args, objective, the file's state dict builder, keys the authors write)
    "dit": ("DiT-S/2", {"num_heads": 2}, "ddpm", lambda m: dict(m.state_dict()),
            ["pos_embed", "x_embedder.proj.weight", "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc2.bias",
             "final_layer.adaLN_modulation.1.weight"]),
    "dit-moe-sb": ("DiT-MoE-S/2-8E2A", {"num_heads": 2}, "ddpm", lambda m: authors_dit_moe(m, flash=False),
                   ["blocks.0.moe.experts.7.down_proj.weight", "blocks.0.moe.gate.weight",
                    "blocks.0.moe.shared_experts.up_proj.weight", "blocks.0.attn.qkv.weight"]),
    "dit-moe-xlg": ("DiT-MoE-XL/2-8E2A", {"num_heads": 2, "qk_norm": True, "learn_sigma": True}, "rectified_flow",
                    lambda m: authors_dit_moe(m, flash=True),
                    ["blocks.0.attn.Wqkv.weight", "blocks.0.attn.Wqkv.bias", "blocks.0.attn.q_norm.weight",
                     "blocks.0.attn.k_norm.bias", "blocks.0.attn.out_proj.weight",
                     "blocks.1.moe.experts.0.up_proj.weight"]),
    "dis": ("DiS-S/2", {"d_state": 4, "expand": 1}, "ddpm", lambda m: dict(m.state_dict()),
            ["in_blocks.0.mixer.A_b_log", "mid_block.mixer.conv1d_b.weight", "out_blocks.0.skip_linear.weight",
             "label_emb.embedding_table.weight"]),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The default's data (8x8 grey digits, through dataset and images) and one experiment per
    layout, each running a tiny file in its authors' format as released weights."""
    root = tmp_path_factory.mktemp("released")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["max_per_class"] = 6
    raw["sample"].update(num_samples=12, batch_size=6, sampling_steps="ddim3")
    raw["experiments"], files = {}, {}
    for name, (model, args, objective, build, expected_keys) in LAYOUTS.items():
        m = _randomized(create_model(model, **TINY, **args))
        state = build(m)
        for key in expected_keys:
            assert key in state, (name, key)
        files[name] = root / f"{name}.pt"
        torch.save({"ema": state} if name == "dit" else state, files[name])  # DiT's train.py nests the EMA
        sample = {"sampling_steps": "3"} if objective == "rectified_flow" else {}
        raw["experiments"][name] = {"model": model, "model_args": {**TINY, **args}, "objective": objective,
                                    "train": {"checkpoint": str(files[name])}, "sample": sample}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for stage in (["dataset"], ["images"]):
        subprocess.run(DIFFZOO + [*stage, "--params", "params.yaml"], cwd=root, check=True, capture_output=True)
    return root, files


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_released_weights_load_strictly_and_sample(project, layout):
    root, files = project
    run = lambda *a: subprocess.run(DIFFZOO + [*a, "--params", "params.yaml", "--experiment", layout], cwd=root,  # noqa: E731
                                    capture_output=True, text=True)
    imported = run("train")
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert "loads strictly" in imported.stderr
    exp = root / "data" / "experiments" / layout
    # The artifact holds exactly the file's weights (in our layout: names mapped, experts stacked).
    ours = read_state_dict(exp / "model.safetensors")
    theirs = read_state_dict(files[layout])
    model, args = LAYOUTS[layout][0], LAYOUTS[layout][1]
    reference = create_model(model, **TINY, **args)
    reference.load_state_dict(theirs, strict=True)
    assert ours.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours[key], value), key
    config = json.loads((exp / "model.json").read_text())
    assert config["source"]["checkpoint"] == files[layout].name and len(config["source"]["sha256"]) == 64
    summary = json.loads((root / "results/train" / f"{layout}.json").read_text())
    assert summary["released"] == files[layout].name and summary["params"] > 0
    sampled = run("sample")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    with np.load(exp / "samples.npz") as z:
        assert z["arr_0"].shape == (12, 8, 8, 3) and z["labels"].shape == (12,)


def test_a_released_rectified_flow_checkpoint_keeps_its_outputs_and_time_scale(project):
    root, _ = project
    raw = yaml.safe_load((root / "params.yaml").read_text())
    from diffzoo.params import validate
    from diffzoo.commands.train import model_config
    run = validate(raw).run("dit-moe-xlg")
    run = run.model_copy(update={"train": run.train.model_copy(update={"init": "dit_moe_xl_8E2A.pt"})})
    cfg = model_config(run, {"shape": [4, 32, 32], "classes": list(range(1000))})
    # The released name's own settings, as the authors' sample.py runs it.
    assert cfg["model_args"]["qk_norm"] and cfg["model_args"]["learn_sigma"]
    assert cfg["objective_args"] == {"time_scale": 1.0} == {"time_scale": RELEASED["dit_moe_xl_8E2A.pt"].time_scale}


def test_qk_norm_attention_computes_the_authors_block():
    """FlashSelfMHAModified: qkv = Wqkv(x) viewed (b, s, 3, h, d); q, k LayerNorm'd over d (affine);
    softmax(q k^T / sqrt(d)) v; out_proj. Written out here, fed the block's own tensors."""
    torch.manual_seed(3)
    dim, heads = 32, 4
    hd = dim // heads
    theirs = {"Wqkv.weight": torch.randn(3 * dim, dim) * 0.2, "Wqkv.bias": torch.randn(3 * dim) * 0.1,
              "q_norm.weight": torch.rand(hd) + 0.5, "q_norm.bias": torch.randn(hd) * 0.1,
              "k_norm.weight": torch.rand(hd) + 0.5, "k_norm.bias": torch.randn(hd) * 0.1,
              "out_proj.weight": torch.randn(dim, dim) * 0.2, "out_proj.bias": torch.randn(dim) * 0.1}
    attn = Attention(dim, heads, qk_norm=True)
    attn.load_state_dict(dict(theirs), strict=True)
    x = torch.randn(2, 5, dim)
    qkv = (x @ theirs["Wqkv.weight"].T + theirs["Wqkv.bias"]).view(2, 5, 3, heads, hd)
    q, k, v = qkv.unbind(2)

    def layer_norm(z, w, b):
        mu, var = z.mean(-1, keepdim=True), z.var(-1, unbiased=False, keepdim=True)
        return (z - mu) / torch.sqrt(var + 1e-6) * w + b

    q = layer_norm(q, theirs["q_norm.weight"], theirs["q_norm.bias"])
    k = layer_norm(k, theirs["k_norm.weight"], theirs["k_norm.bias"])
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(hd)
    context = torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v).reshape(2, 5, dim)
    expected = context @ theirs["out_proj.weight"].T + theirs["out_proj.bias"]
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_import_checkpoint_output_samples_standalone(tmp_path):
    """The KeyError of issue 11: `diffzoo import-checkpoint`'s model.json now carries the latents and
    the objective, and `diffzoo sample --ckpt` (DiT's sample_ddp.py arguments) runs it."""
    from diffusers.models import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        layers_per_block=1, norm_num_groups=4)
    vae.save_pretrained(tmp_path / "vae")
    m = _randomized(create_model("DiT-S/2", input_size=2, hidden_size=32, depth=1, num_heads=2))
    torch.save(m.state_dict(), tmp_path / "official.pt")
    out = tmp_path / "model.safetensors"
    env = {"cwd": tmp_path, "capture_output": True, "text": True}
    done = subprocess.run(DIFFZOO + ["import-checkpoint", "official.pt", "--model", "DiT-S/2", "--input-size", "2",
                                     "--vae", str(tmp_path / "vae"), "--out", str(out)], **env)
    assert done.returncode == 2 and "do not match" not in done.stderr and "does not match" in done.stderr
    # hidden size and depth are part of the architecture: a tiny file needs a tiny model
    m = _randomized(create_model("DiT-S/2", input_size=2))
    torch.save(m.state_dict(), tmp_path / "official.pt")
    done = subprocess.run(DIFFZOO + ["import-checkpoint", "official.pt", "--model", "DiT-S/2", "--input-size", "2",
                                     "--vae", str(tmp_path / "vae"), "--out", str(out)], **env)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["latents"]["shape"] == [4, 2, 2] and config["objective"] == "ddpm"
    sampled = subprocess.run(DIFFZOO + ["sample", "--ckpt", str(out), "--num-fid-samples", "4",
                                        "--per-proc-batch-size", "2", "--num-sampling-steps", "3",
                                        "--out", "samples.npz"], **env)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    with np.load(tmp_path / "samples.npz") as z:
        assert z["arr_0"].shape == (4, 2, 2, 3) and z["arr_0"].dtype == np.uint8  # this VAE keeps the size
    # The authors' file directly, as sample_ddp.py takes it, gives the same samples.
    direct = subprocess.run(DIFFZOO + ["sample", "--ckpt", "official.pt", "--model", "DiT-S/2", "--image-size", "16",
                                       "--vae", str(tmp_path / "vae"), "--num-fid-samples", "4",
                                       "--per-proc-batch-size", "4", "--num-sampling-steps", "3",
                                       "--out", "direct.npz"], **env)
    assert direct.returncode == 0, direct.stderr[-2000:]
    with np.load(tmp_path / "samples.npz") as a, np.load(tmp_path / "direct.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["labels"], b["labels"])


def test_fine_tuning_starts_from_the_file(tmp_path):
    from conftest import tiny_params

    raw = tiny_params()
    raw["train"].update(steps=1, lr=1.0e-12, ckpt_every=1, log_every=1)
    tiny = raw["experiments"]["a"]["model_args"]
    m = _randomized(create_model(raw["experiments"]["a"]["model"], **TINY | tiny | {"learn_sigma": True}))
    torch.save(m.state_dict(), tmp_path / "start.pt")
    raw["experiments"]["a"]["train"] = {"init": str(tmp_path / "start.pt")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    for stage in (["dataset"], ["images"], ["latents"], ["train", "--experiment", "a"]):
        done = subprocess.run(DIFFZOO + [*stage, "--params", "params.yaml"], cwd=tmp_path, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "fine-tuning a from" in done.stderr
    tuned = read_state_dict(tmp_path / "data/experiments/a/model.safetensors")
    for key, value in m.state_dict().items():  # one step at lr 1e-12: still the file's weights
        torch.testing.assert_close(tuned[key], value, rtol=0, atol=1e-6)


def test_a_released_name_downloads_into_the_cache_or_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFZOO_CACHE", str(tmp_path))
    name = "dit_moe_s_8E2A.pt"

    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DiffzooError) as err:
        resolve_checkpoint(name)
    message = str(err.value)
    assert RELEASED[name].url in message and str(tmp_path / "checkpoints" / name) in message
    assert "\n" not in message

    def fake_download(url, dst, progress=True):
        assert url == RELEASED[name].url and progress
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = resolve_checkpoint(name)
    assert path == tmp_path / "checkpoints" / name and path.read_bytes() == b"weights"
    assert resolve_checkpoint(name) == path  # cached: no second download
    with pytest.raises(DiffzooError, match="differs from the expected"):
        resolve_checkpoint(name, sha256="0" * 64)


def test_a_ten_class_file_in_the_official_layout_imports_and_samples_as_its_model(prepared, tmp_path):
    """A DiT trained elsewhere on other data, in the official train.py's layout (a torch.save'd state
    dict, 10 classes): as `train.checkpoint` of an experiment on the digits it imports with the class
    count and learn_sigma read from the file (it once failed on y_embedder [11, 32] vs [1001, 32]), and
    samples exactly what the model it came from samples (same weights, same noise), then is evaluated.
    A model_args value the file contradicts is one line."""
    import numpy as np

    from conftest import clone, edit_params

    root = clone(prepared, tmp_path / "p")

    def run(*args, ok=True):
        done = subprocess.run(DIFFZOO + [*args, "--params", "params.yaml"], cwd=root, capture_output=True, text=True)
        assert (done.returncode == 0) == ok, done.stderr[-2000:]
        return done

    run("train", "--experiment", "a")
    trained = read_state_dict(root / "data/experiments/a/model.safetensors")
    torch.save({"model": trained, "ema": trained}, root / "official.pt")  # train.py's checkpoint: EMA weights

    def add_b(raw, **model_args):
        a = raw["experiments"]["a"]
        raw["experiments"]["b"] = {**a, "model_args": {k: v for k, v in a["model_args"].items()} | model_args,
                                   "train": {"checkpoint": "official.pt"}}
    edit_params(root, lambda raw: add_b(raw, num_classes=1000))
    refused = run("import-checkpoint", "--experiment", "b", ok=False)
    assert "num_classes = 1000 (the file's: 10)" in refused.stderr
    edit_params(root, lambda raw: add_b(raw))
    run("import-checkpoint", "--experiment", "b")
    config = json.loads((root / "data/experiments/b/model.json").read_text())
    assert config["model_args"]["num_classes"] == 10 and config["model_args"]["learn_sigma"] is True
    assert len(config["latents"]["classes"]) == 10
    for exp in ("a", "b"):
        run("sample", "--experiment", exp)
    with np.load(root / "data/experiments/a/samples.npz") as a, np.load(root / "data/experiments/b/samples.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    run("reference")
    run("evaluate", "--experiment", "b")
    metrics = json.loads((root / "results/metrics/b.json").read_text())
    assert metrics["fid"] > 0 and metrics["sampling"]["num_samples"] == 48


def test_the_layout_is_read_from_a_file_not_named_like_a_released_one(project, tmp_path):
    """An XL/G-layout file (flash block, QK-norm) under another name -- a fine-tuned one from the
    authors' train_deepspeed.py -- once failed the strict load on q_norm/k_norm: QK-norm, learn_sigma
    and the class count now come from its keys and shapes (issue 26)."""
    from diffzoo.checkpoints import import_released

    _, files = project
    renamed = tmp_path / "my-finetuned-xl.pt"
    renamed.write_bytes(files["dit-moe-xlg"].read_bytes())
    args = {k: v for k, v in TINY.items() if k != "num_classes"} | {"num_heads": 2}
    tensors, model_args = import_released(renamed, "DiT-MoE-XL/2-8E2A", args)
    assert (model_args["qk_norm"], model_args["learn_sigma"], model_args["num_classes"]) == (True, True, 10)
    assert any(k.endswith("attn.q_norm.weight") for k in tensors)
    _, dit_args = import_released(files["dit"], "DiT-S/2", args)  # DiT's train.py file: no QK-norm
    assert (dit_args["qk_norm"], dit_args["num_classes"]) == (False, 10)
