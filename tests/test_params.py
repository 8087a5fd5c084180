"""params.yaml validation: bad input gives one line naming the key and the allowed values."""
import copy
import re
from pathlib import Path

import pytest
import yaml

from diffzoo import pipeline
from diffzoo.cli import main
from diffzoo.errors import DiffzooError
from diffzoo.params import SECTIONS, json_schema, load_params, merge, paths, read_yaml, validate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(path: str, value):
    raw = copy.deepcopy(DEFAULT)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return raw


def test_default_params_are_valid_and_complete():
    params = validate(copy.deepcopy(DEFAULT))
    for section, model in SECTIONS.items():
        # The default file writes every key out, so it documents every setting.
        assert set(DEFAULT[section]) == set(model.model_fields), section
    assert params.experiments


BAD_VALUES = [
    ("train.stpes", 5, r"unknown key train.stpes \(did you mean steps\?\); allowed: steps, global_batch_size"),
    ("data.source", "imagenet",
     r"data.source = 'imagenet' is not allowed; allowed: 'digits' \| 'fashion_mnist' \| 'imagenet-tar'"),
    ("train.lr", "1e-4", r"train.lr = '1e-4' is a string, not a number; write floats .* \(1.0e-4\)"),
    ("train.steps", 1.5, r"train.steps must be an integer, got 1.5"),
    ("train.steps", -5, r"train.steps = -5 must be >= 1"),
    ("train.steps", 0, r"train.steps = 0 must be >= 1"),
    ("train.global_batch_size", 0, r"train.global_batch_size = 0 must be >= 1"),
    ("train.lr", -1.0, r"train.lr = -1.0 must be > 0"),
    ("train.ema_decay", 1.5, r"train.ema_decay = 1.5 must be < 1"),
    ("train.ema_decay", 1.0, r"train.ema_decay = 1.0 must be < 1"),
    ("train.ckpt_every", 0, r"train.ckpt_every = 0 must be >= 1"),
    ("train.log_every", 0, r"train.log_every = 0 must be >= 1"),
    ("train.seed", -1, r"train.seed = -1 must be >= 0"),
    ("train.compile", "yes", r"train.compile must be true/false, got 'yes'"),
    ("sample.num_samples", 0, r"sample.num_samples = 0 must be >= 1"),
    ("sample.batch_size", 0, r"sample.batch_size = 0 must be >= 1"),
    ("sample.grid", 0, r"sample.grid = 0 must be >= 1"),
    ("sample.cfg_scale", 0.5, r"sample.cfg_scale = 0.5 must be >= 1"),
    ("latents.batch_size", 0, r"latents.batch_size = 0 must be >= 1"),
    ("evaluate.batch_size", 0, r"evaluate.batch_size = 0 must be >= 1"),
    ("data.max_per_class", 0, r"data.max_per_class = 0 must be >= 1"),
    ("data.name", "/some/dir", r"data.name = '/some/dir' must be a name of letters, digits"),
    ("data.name", "x\n", r"data.name = 'x\\n' must be a name"),
    ("data.path", "/x.tar", r"data.path = '/x.tar': the digits source is embedded"),
    ("sample.guidance", "three", r"allowed: 'legacy3' \| 'all'"),
    ("sample.sampling_steps", "1", r"experiments.dit-s2.sample.sampling_steps = '1' gives 1 step; .* at least 2"),
    ("sample.sampling_steps", "fifty", r"experiments.dit-s2.sample.sampling_steps = 'fifty': .*'ddim25'"),
    ("experiments.dit-s2-rf.sample", {"sampling_steps": "ddim25"},
     r"experiments.dit-s2-rf.sample.sampling_steps = 'ddim25': rectified flow takes a number of Euler steps"),
    ("experiments.dit-s2.model", "DiT-XXL/2", r"experiments.dit-s2.model: unknown model 'DiT-XXL/2' .*registered: "),
    ("experiments.dit-s2.objective", "flow",
     r"experiments.dit-s2.objective = 'flow' is not allowed; allowed: 'ddpm' \| 'rectified_flow'"),
    ("experiments.dit-s2.train", {"stesp": 3},
     r"unknown key experiments.dit-s2.train.stesp \(did you mean steps\?\); allowed: steps"),
    ("experiments.dit-s2.train", {"lr": -3.0}, r"experiments.dit-s2.train.lr = -3.0 must be > 0"),
    ("experiments.dit-s2.model_args", {"hidden_size": 64, "depth": 4, "num_heads": 4, "patch_size": 3},
     r"experiments.dit-s2.model_args do not build DiT-S/2 for 1x8x8 inputs: input_size 8 is not divisible by "
     r"patch_size 3"),
    ("report.tables", ["dit_tabel4"],
     r"report.tables has unknown entry 'dit_tabel4'; allowed: default, digits_scaling"),
    ("bogus", {}, r"unknown section 'bogus'; allowed: data, latents"),
    ("latents.posterior", "median", r"latents.posterior = 'median' is not allowed; allowed: 'sample' \| 'mean'"),
    ("latents.scale", 0.0, r"latents.scale = 0.0 must be > 0"),
    ("autoencoder.block_out_channels", [16, 30], r"autoencoder.block_out_channels = \[16, 30\]: every width must be "
     r"a multiple of autoencoder.norm_groups = 8"),
    ("experiments.dit-s2.latents", {"vea": "x"},
     r"unknown key experiments.dit-s2.latents.vea \(did you mean vae\?\); allowed: vae, scale"),
    ("experiments.dit-s2.latents", {"vae": "me/vae@0123abc"},
     r"experiments.dit-s2.latents.grayscale = true needs vae 'identity' \(pixel space\) or 'autoencoder'"),
    ("train.prediction", "score", r"train.prediction = 'score' is not allowed; allowed: 'eps' \| 'v' \| 'x0'"),
    ("train.noise_schedule", "sigmoid",
     r"train.noise_schedule = 'sigmoid' is not allowed; allowed: 'linear' \| 'cosine'"),
    ("experiments.dit-s2-rf.train", {"prediction": "eps"},
     r"experiments.dit-s2-rf: train.prediction = 'eps'; rectified_flow predicts the velocity: allowed v or null"),
    ("experiments.dit-s2-rf.train", {"noise_schedule": "cosine"},
     r"experiments.dit-s2-rf: train.noise_schedule = 'cosine' is a setting of objective ddpm; .* allowed null"),
    ("latents.vae", "stabilityai/sd-vae-ft-ema",
     r"latents.grayscale = true needs vae 'identity' \(pixel space\) or 'autoencoder'"),
    ("latents.vae", "me/vae", r"latents.vae: 'me/vae' has no revision: write me/vae@<commit> \(or me/vae@main"),
    ("data.path", "hf://me/images", r"data.path: 'me/images' has no revision: write me/images@<commit>"),
    ("evaluate.reference", "ref.npz", r"evaluate.reference .* needs evaluate.feature_extractor = 'inception'"),
    ("experiments.dit-s2.train", {"checkpoint": "no-such-file.pt"},
     r"experiments.dit-s2.train.checkpoint = 'no-such-file.pt': no such file, and not a released name"),
    ("experiments.dit-s2.train", {"checkpoint": "DiT-XL-2-256x256.pt"},
     r"experiments.dit-s2.model = 'DiT-S/2', but DiT-XL-2-256x256.pt is a DiT-XL/2 checkpoint"),
    ("experiments.dit-s2.train", {"init": "missing.safetensors"},
     r"experiments.dit-s2.train.init = 'missing.safetensors': no such file"),
    ("experiments.dit-s2.train", {"time_scale": 1.0},
     r"experiments.dit-s2: train.time_scale = 1.0 is a setting of objective rectified_flow"),
]


@pytest.mark.parametrize("path,value,message", BAD_VALUES)
def test_bad_values_name_the_key_and_the_allowed_values(path, value, message):
    with pytest.raises(DiffzooError, match=message):
        validate(with_change(path, value))


def test_experiment_must_write_every_tracked_key():
    raw = copy.deepcopy(DEFAULT)
    del raw["experiments"]["dit-s2"]["sample"]
    with pytest.raises(DiffzooError, match=r"experiments.dit-s2 lacks sample"):
        validate(raw)


def test_an_experiments_own_latents_codec_gets_its_own_folder_and_dvc_refuses_it(tmp_path, capsys):
    """An experiment's `latents:` that changes what is encoded (vae, grayscale, flips, dtype) trains on
    latents of its own; one that changes only the scale or the posterior use shares the section's.
    dvc.yaml encodes one codec, so `diffzoo check --dvc` refuses the first kind with one line."""
    raw = copy.deepcopy(DEFAULT)
    raw["experiments"]["dit-s2"]["latents"] = {"grayscale": False}
    raw["experiments"]["dit-s4"]["latents"] = {"posterior": "mean", "scale": 0.5}
    params = validate(raw)
    assert params.codecs == {"": params.latents.codec(), "-pixel": {**params.latents.codec(), "grayscale": False}}
    assert paths(params, "dit-s2")["latents"] == paths(params)["latents"].with_name("latents-8-pixel")
    assert paths(params, "dit-s4")["latents"] == paths(params)["latents"]
    assert params.latent_shape("dit-s2") == (3, 8) and params.latent_shape("dit-s4") == (1, 8)
    assert pipeline.stage_slice(params, "train", "dit-s4")["latents"] == {"scale": 0.5, "posterior": "mean"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    assert main(["check", "--params", str(tmp_path / "p.yaml")]) == 0  # Snakemake runs it
    assert main(["check", "--params", str(tmp_path / "p.yaml"), "--dvc"]) == 2
    assert re.search(r"experiments dit-s2, dit-s4 set their own latents settings; .* run this params file with "
                     r"Snakemake",
                     capsys.readouterr().err)


def test_experiment_overrides_merge_over_defaults():
    raw = with_change("experiments.dit-s2.train", {"steps": 7})
    params = validate(raw)
    assert params.run("dit-s2").train.steps == 7
    assert params.run("dit-s2").train.lr == DEFAULT["train"]["lr"]
    assert params.run("dit-s4").train.steps == DEFAULT["train"]["steps"]


def test_sections_left_out_take_the_papers_base_recipe():
    """A preset states only what differs: the typed defaults are DiT's ImageNet-256 recipe."""
    raw = {"data": {"path": "/data/ILSVRC2012_img_train.tar"}, "experiments": {
        "xl2": {"model": "DiT-XL/2", "model_args": {}, "objective": "ddpm", "train": {}, "sample": {}}}}
    params = validate(raw)
    t, smp = params.run("xl2").train, params.run("xl2").sample
    assert (t.lr, t.weight_decay, t.global_batch_size, t.ema_decay) == (1.0e-4, 0.0, 256, 0.9999)
    assert (smp.num_samples, smp.sampling_steps, smp.sampler, smp.cfg_scale) == (50_000, "250", "ddpm", 1.5)
    assert params.latent_shape() == (4, 32) and params.evaluate.feature_extractor == "inception"


def test_yaml_errors_and_duplicate_keys_give_file_line_and_column(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data:\n  name: digits\n  name: other\n")
    with pytest.raises(DiffzooError, match=r"params.yaml:3:3: invalid YAML: duplicate key 'name'"):
        load_params(f)
    f.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(DiffzooError, match=r"params.yaml:\d+:\d+: invalid YAML: "):
        load_params(f)


def test_json_schema_is_current_and_accepts_the_default():
    """workflow/schemas/params.schema.json (what the Snakefile checks) is the typed config's schema."""
    import json

    import jsonschema
    schema = json.loads((ROOT / "workflow/schemas/params.schema.json").read_text())
    assert schema == json_schema()
    jsonschema.validate(DEFAULT, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_change("train.steps", -1), schema)


def test_yaml_1_1_float_pitfall_is_caught(tmp_path):
    # PyYAML (YAML 1.1, as Snakemake reads it) loads 1e-4 as a string; DVC (YAML 1.2) as a float.
    text = (ROOT / "params.yaml").read_text().replace("lr: 1.0e-3 ", "lr: 1e-3 ", 1)
    assert "lr: 1e-3" in text
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(DiffzooError, match="is a string, not a number"):
        load_params(f)


@pytest.mark.parametrize("path,value,message", BAD_VALUES)
def test_a_bad_params_file_stops_the_first_stage_before_any_work(path, value, message, tmp_path, monkeypatch,
                                                                  capsys):
    """Written to a file and given to the pipeline's first stage: exit 2, one line, nothing made."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change(path, value), sort_keys=False))
    assert main(["dataset", "--params", "params.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "data").exists()


def test_cli_prints_one_line_and_fails_before_work(tmp_path, capsys):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(with_change("latents.vae_name", "x")))
    assert main(["train", "--params", str(f), "--experiment", "dit-s2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown key latents.vae_name; allowed: vae, scale" in err
    assert not (tmp_path / "data").exists()


def test_stage_slices_isolate_experiments():
    params = validate(with_change("experiments.dit-s2.train", {"steps": 9}))
    base = validate(copy.deepcopy(DEFAULT))
    assert pipeline.stage_slice(params, "train", "dit-s2") != pipeline.stage_slice(base, "train", "dit-s2")
    assert pipeline.stage_slice(params, "train", "dit-s4") == pipeline.stage_slice(base, "train", "dit-s4")
    assert pipeline.stage_slice(params, "sample", "dit-s2") == pipeline.stage_slice(base, "sample", "dit-s2")


def _dvc_code(deps: list[str]) -> set[str]:
    """The source files a dvc.yaml stage's deps name (folders expanded to their .py files)."""
    out = set()
    for d in deps:
        if d.startswith("src/diffzoo/"):
            path = ROOT / d
            files = ([p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
                     if path.is_dir() else [path])
            out |= {str(p.relative_to(ROOT)) for p in files}
    return out


def test_dvc_yaml_tracks_what_the_stages_read():
    """dvc.yaml's code deps are the stage modules' CODE (no more, no less: a folder dep stands for
    its files) and its params are the keys of each stage's slice."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = validate(copy.deepcopy(DEFAULT))
    stages = pipeline.pipeline_stages()
    assert {"dataset", "images", "autoencoder", "latents", "reference", "train", "sample", "evaluate",
            "report", "claims"} == set(stages)
    for stage in stages:
        spec = dvc[stage]["do"] if "do" in dvc[stage] else dvc[stage]
        ours = {f[f.index("src/diffzoo/"):] for f in pipeline.code_files(stage)}
        declared = _dvc_code(spec["deps"])
        assert ours <= declared, (stage, sorted(ours - declared))
        extra = {f for f in declared - ours if not f.endswith("__init__.py")}
        assert not extra, (stage, sorted(extra))
        tracked = set(spec["params"])
        run_id = "dit-s2" if stage in ("train", "sample") else None
        keys = set(pipeline.stage_slice(params, stage, run_id))
        expected = {
            "dataset": {f"data.{k}" for k in keys},
            "images": {"data"},  # the slice is the data section
            # an experiment's own latents settings run under Snakemake only (diffzoo check --dvc refuses them)
            "train": {"train"} | {f"experiments.${{key}}.{k}" for k in keys - {"train", "latents"}}
            | {"experiments.${key}.train"},
            "sample": {"sample", "latents.dtype", "experiments.${key}.sample"},  # sample + vae_dtype
            # channels and used follow from the latents settings that name the autoencoder
            "autoencoder": {"data", "autoencoder", "latents.vae", "latents.grayscale", "sample.grid"},
        }.get(stage, keys)
        assert tracked == expected, stage
    # A sampling's stages are the sample/evaluate stages reading its experiment's model.
    for stage, of in (("sampling", "sample"), ("evaluate-sampling", "evaluate")):
        spec = {k: [d.replace("${item.experiment}", "${key}") for d in dvc[stage]["do"][k]] for k in ("deps", "params")}
        assert spec["deps"] == dvc[of]["do"]["deps"], stage
        assert set(dvc[of]["do"]["params"]) <= set(spec["params"]), stage


def test_model_args_that_do_not_build_the_model_are_refused():
    with pytest.raises(DiffzooError, match=r"experiments.dit-s2.model_args do not build DiT-S/2 .*hidden"):
        validate(with_change("experiments.dit-s2.model_args", {"hidden": 64}))
    with pytest.raises(DiffzooError, match=r"experiments.dit-s2.model_args do not build DiT-S/2 .*divisible"):
        validate(with_change("experiments.dit-s2.model_args", {"hidden_size": 64, "num_heads": 5}))


def test_a_sampling_reuses_its_experiments_model_with_its_own_sample_settings():
    raw = copy.deepcopy(DEFAULT)
    raw["experiments"]["dit-s2"]["sample"] = {"cfg_scale": 1.5, "sampling_steps": "20"}
    raw["samplings"] = {"dit-s2-nocfg": {"experiment": "dit-s2", "sample": {"cfg_scale": 1.0}}}
    params = validate(raw)
    assert params.run_ids[-1] == "dit-s2-nocfg"
    run = params.run("dit-s2-nocfg")
    # The experiment's overrides hold unless the sampling overrides them again.
    assert run.sample.cfg_scale == 1.0 and run.sample.sampling_steps == "20"
    assert run.train == params.run("dit-s2").train and run.trained_by == "dit-s2"
    own, parent = paths(params, "dit-s2-nocfg"), paths(params, "dit-s2")
    for key in ("model", "model_config", "checkpoints", "train_metrics", "train_log"):
        assert own[key] == parent[key], key
    for key in ("samples", "grid", "metrics"):
        assert own[key] != parent[key] and "dit-s2-nocfg" in str(own[key]), key
    assert pipeline.stage_slice(params, "sample", "dit-s2-nocfg") != pipeline.stage_slice(params, "sample", "dit-s2")
    # Sampling costs GPU time, training it none.
    from diffzoo.estimate import cost_summary
    assert "dit-s2-nocfg" in cost_summary(params)


@pytest.mark.parametrize("samplings,message", [
    ({"x": {"experiment": "dit-s9"}},
     r"samplings.x.experiment = 'dit-s9' is not an experiment; allowed: dit-s2, dit-s4"),
    ({"dit-s4": {"experiment": "dit-s2"}}, r"samplings.dit-s4: 'dit-s4' is already an experiment id"),
    ({"x": {"experiment": "dit-s2", "train": {}}}, r"unknown key samplings.x.train; allowed: experiment, sample"),
    ({"x": {"sample": {}}}, r"samplings.x.experiment is missing"),
    ({"x": {"experiment": "dit-s2", "sample": {"cfg": 2}}},
     r"unknown key samplings.x.sample.cfg; allowed: num_samples"),
])
def test_bad_samplings_name_the_key(samplings, message):
    raw = copy.deepcopy(DEFAULT)
    raw["samplings"] = samplings
    with pytest.raises(DiffzooError, match=message):
        validate(raw)


# The presets on the digits (digits_scaling, mamba_family) and Fashion-MNIST (fashion) use the default's
# small-scale recipe.
PAPER_PRESETS = [p for p in sorted((ROOT / "configs").glob("*.yaml"))
                 if (yaml.safe_load(p.read_text()).get("data") or {}).get("source") not in ("digits", "fashion_mnist")]


@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.stem)
def test_presets_are_valid_and_use_the_papers_recipe(preset):
    """Every preset loads, and trains with the recipe facts.md gives (AdamW lr 1e-4, no weight decay,
    batch 256, EMA 0.9999) and samples 50K images for FID-50K."""
    params = load_params(preset)
    for run_id in params.run_ids:
        run = params.run(run_id)
        t = run.train
        assert (t.lr, t.weight_decay, t.global_batch_size, t.ema_decay) == (1.0e-4, 0.0, 256, 0.9999), run_id
        assert run.sample.num_samples == 50_000, run_id
        # The small-scale options stay off: the papers' eps-prediction and linear schedule.
        assert run.objective_args in ({}, {"prediction": "eps", "noise_schedule": "linear"}), run_id
    assert params.latents.flips and params.latents.vae.startswith("stabilityai/sd-vae-ft-")


def test_classifier_defaults_are_train_classifiers():
    """One set of defaults: the schema's classifier section is train_classifier's keyword defaults."""
    import inspect

    from diffzoo.evaluate.classifier import train_classifier
    signature = inspect.signature(train_classifier).parameters
    fields = SECTIONS["classifier"].model_fields
    assert {k: f.default for k, f in fields.items()} == {k: signature[k].default for k in fields}


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_expanded_presets_are_current_and_equal_the_preset(preset, monkeypatch):
    """configs/expanded/NAME.yaml is what `diffzoo preset NAME` writes, and it means the same params."""
    from diffzoo.commands.preset import expand

    monkeypatch.chdir(ROOT)
    expanded = ROOT / "configs" / "expanded" / preset.name
    assert expanded.read_text() == expand(preset.relative_to(ROOT)), \
        f"run: diffzoo preset {preset.stem} --out {expanded}"
    assert load_params(expanded).dump() == load_params(preset).dump()
    for section in SECTIONS:  # the full file writes every key out (DVC tracks them)
        assert set(yaml.safe_load(expanded.read_text())[section]) == set(SECTIONS[section].model_fields)


def test_hub_references_are_pinned_by_commit_and_part_of_the_artifacts_identity():
    """A repo id in params gets its commit written out (hub.PINNED), so the latents, the models and
    their samples are keyed by the VAE's and the dataset's commit, not by a name whose files move."""
    from diffzoo.hub import PINNED

    def checked(vae, path="hf://ILSVRC/imagenet-1k"):
        raw = copy.deepcopy(DEFAULT)
        raw["data"].update(source="imagenet-parquet", path=path, resolution=32)
        raw["latents"].update(vae=vae, grayscale=False)
        return validate(raw)

    params = checked("stabilityai/sd-vae-ft-mse")
    assert params.latents.vae == "stabilityai/sd-vae-ft-mse@" + PINNED["stabilityai/sd-vae-ft-mse"]
    assert params.data.path == "hf://ILSVRC/imagenet-1k@" + PINNED["ILSVRC/imagenet-1k"]
    assert checked("me/vae@abc123", "hf://datasets/ILSVRC/imagenet-1k@main").data.path == "hf://ILSVRC/imagenet-1k@main"
    assert validate(copy.deepcopy(DEFAULT)).latents.vae == "identity"  # pixel space: no repo, no revision
    slices = {rev: pipeline.stage_slice(checked(f"me/vae@{rev}"), "latents") for rev in ("abc123", "def456")}
    assert slices["abc123"] != slices["def456"]
    assert pipeline.stage_slice(checked("me/vae@abc123", "hf://ILSVRC/imagenet-1k@main"), "dataset") != \
        pipeline.stage_slice(checked("me/vae@abc123"), "dataset")


def test_the_fashion_ablation_overlay_changes_only_the_latents_settings():
    """configs/overlays/fashion_ablation.yaml over configs/fashion.yaml (as Snakemake merges them): the
    preset's DiT-S/2 three more times, each differing from it only in latents.scale or latents.posterior,
    all on the preset's own latents (one codec: no re-encoding)."""
    raw = merge(read_yaml(ROOT / "configs/fashion.yaml"), read_yaml(ROOT / "configs/overlays/fashion_ablation.yaml"))
    params = validate(raw)
    base = params.run("dit-s2")
    changed = {"dit-s2-scale1": ("scale", 1.0), "dit-s2-scale-sd": ("scale", 0.18215),
               "dit-s2-mean": ("posterior", "mean")}
    assert set(changed) <= set(params.experiments)
    for run_id, (key, value) in changed.items():
        run = params.run(run_id)
        assert getattr(run.latents, key) == value
        assert run.latents.model_copy(update={key: getattr(base.latents, key)}) == base.latents
        assert (run.model, run.model_args, run.train, run.sample) == (base.model, base.model_args, base.train,
                                                                       base.sample)
    assert len(params.codecs) == 2  # the autoencoder's, and the pixel control's


def test_guidance_follows_the_weights_protocol_by_default():
    """sample.guidance null: a released DDPM file (DiT, DiT-MoE S/B) guides channels 0..2 as its authors'
    forward_with_cfg does, rectified flow (DiT-MoE XL/G) and the models trained here every channel; an
    explicit value wins; `sample --ckpt` takes its default from the file's objective (issue 26)."""
    import argparse

    from diffzoo.commands.sample import standalone_settings

    params = load_params(ROOT / "configs/dit_moe_released.yaml")
    assert {r: params.run(r).sample.guidance for r in params.run_ids} == {
        "dit-moe-xl2-8e2a": "all", "dit-moe-g2-16e2a": "all", "dit-moe-b2-8e2a": "legacy3",
        "dit-moe-s2-8e2a": "legacy3", "dit-moe-s2-16e2a": "legacy3"}
    assert load_params(ROOT / "configs/digits_scaling.yaml").run("dit-w32-p8").sample.guidance == "all"
    assert load_params(ROOT / "configs/dit_xl2_256_released.yaml").run(
        load_params(ROOT / "configs/dit_xl2_256_released.yaml").run_ids[0]).sample.guidance == "legacy3"
    none = argparse.Namespace(num_fid_samples=None, per_proc_batch_size=None, num_sampling_steps=None, sampler=None,
                              cfg_scale=None, guidance=None, global_seed=0)
    assert standalone_settings(none, None, "rectified_flow").guidance == "all"
    assert standalone_settings(none, None, "ddpm").guidance == "legacy3"
    assert standalone_settings(argparse.Namespace(**{**vars(none), "guidance": "all"}), None, "ddpm").guidance == "all"
