"""params.yaml validation: bad input gives one line naming the key and the allowed values."""
import copy
from pathlib import Path

import pytest
import yaml

from diffzoo import pipeline
from diffzoo.cli import main
from diffzoo.errors import DiffzooError
from diffzoo.params import SCHEMA, load_params, validate

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
    for section, spec in SCHEMA.items():
        # The default file writes every key out, so it documents every setting.
        assert set(DEFAULT[section]) == set(spec), section
    assert params["experiments"]


@pytest.mark.parametrize("path,value,message", [
    ("train.stpes", 5, r"unknown key train.stpes; allowed: steps, global_batch_size"),
    ("data.source", "imagenet", r"data.source = 'imagenet' is not allowed; allowed: 'digits' \| 'imagenet-tar'"),
    ("train.lr", "1e-4", r"train.lr = '1e-4' is a string, not a number; write floats .* \(1.0e-4\)"),
    ("train.steps", 1.5, r"train.steps must be an integer, got 1.5"),
    ("sample.guidance", "three", r"allowed: 'legacy3' \| 'all'"),
    ("sample.sampling_steps", "1", r"experiments.dit-s2.sample.sampling_steps = '1' gives 1 step; .* at least 2"),
    ("sample.sampling_steps", "fifty", r"experiments.dit-s2.sample.sampling_steps = 'fifty': .*'ddim25'"),
    ("experiments.dit-s2-rf.sample", {"sampling_steps": "ddim25"}, r"experiments.dit-s2-rf.sample.sampling_steps = 'ddim25': rectified flow takes a number of Euler steps"),
    ("experiments.dit-s2.model", "DiT-XXL/2", r"experiments.dit-s2.model: unknown model 'DiT-XXL/2' .*registered: "),
    ("experiments.dit-s2.objective", "flow", r"experiments.dit-s2.objective = 'flow' is not allowed; allowed: 'ddpm' \| 'rectified_flow'"),
    ("experiments.dit-s2.train", {"stesp": 3}, r"unknown key experiments.dit-s2.train.stesp; allowed: steps"),
    ("report.tables", ["dit_tabel4"], r"unknown table 'dit_tabel4'; allowed: default, digits_scaling, dit_table4"),
    ("bogus", {}, r"unknown section 'bogus'; allowed: data, latents"),
    ("train.prediction", "score", r"train.prediction = 'score' is not allowed; allowed: 'eps' \| 'v' \| 'x0'"),
    ("train.noise_schedule", "sigmoid", r"train.noise_schedule = 'sigmoid' is not allowed; allowed: 'linear' \| 'cosine'"),
    ("experiments.dit-s2-rf.train", {"prediction": "eps"},
     r"experiments.dit-s2-rf: train.prediction = 'eps'; rectified_flow predicts the velocity: allowed v or null"),
    ("experiments.dit-s2-rf.train", {"noise_schedule": "cosine"},
     r"experiments.dit-s2-rf: train.noise_schedule = 'cosine' is a setting of objective ddpm; .* allowed null"),
    ("latents.vae", "stabilityai/sd-vae-ft-ema", r"latents.grayscale = true needs latents.vae = 'identity'"),
    ("evaluate.reference", "ref.npz", r"evaluate.reference .* needs evaluate.feature_extractor = 'inception'"),
])
def test_bad_values_name_the_key_and_the_allowed_values(path, value, message):
    with pytest.raises(DiffzooError, match=message):
        validate(with_change(path, value))


def test_experiment_must_write_every_tracked_key():
    raw = copy.deepcopy(DEFAULT)
    del raw["experiments"]["dit-s2"]["sample"]
    with pytest.raises(DiffzooError, match=r"experiments.dit-s2 lacks sample"):
        validate(raw)


def test_experiment_overrides_merge_over_defaults():
    raw = with_change("experiments.dit-s2.train", {"steps": 7})
    params = validate(raw)
    assert params["experiments"]["dit-s2"]["train"]["steps"] == 7
    assert params["experiments"]["dit-s2"]["train"]["lr"] == DEFAULT["train"]["lr"]
    assert params["experiments"]["dit-s4"]["train"]["steps"] == DEFAULT["train"]["steps"]


def test_yaml_1_1_float_pitfall_is_caught(tmp_path):
    # PyYAML (YAML 1.1, as Snakemake reads it) loads 1e-4 as a string; DVC (YAML 1.2) as a float.
    text = (ROOT / "params.yaml").read_text().replace("lr: 1.0e-3 ", "lr: 1e-3 ", 1)
    assert "lr: 1e-3" in text
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(DiffzooError, match="is a string, not a number"):
        load_params(f)


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


def test_dvc_yaml_tracks_what_the_stages_read():
    """dvc.yaml's params and code deps agree with pipeline.STAGE_CODE / stage_slice."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    train = dvc["train"]["do"]
    assert set(train["params"]) == {"train"} | {f"experiments.${{key}}.{k}" for k in ("model", "model_args", "objective", "train")}
    # A sampling's stages are the sample/evaluate stages reading its experiment's model.
    for stage, of in (("sampling", "sample"), ("evaluate-sampling", "evaluate")):
        spec = {k: [d.replace("${item.experiment}", "${key}") for d in dvc[stage]["do"][k]] for k in ("deps", "params")}
        assert spec["deps"] == dvc[of]["do"]["deps"], stage
        assert set(dvc[of]["do"]["params"]) <= set(spec["params"]), stage
    for stage in ("images", "latents", "train", "sample"):
        spec = dvc[stage]["do"] if "do" in dvc[stage] else dvc[stage]
        deps = set(spec["deps"])
        for f in pipeline.code_files(stage):
            rel = f[f.index("src/diffzoo/"):]
            assert rel in deps or any(rel.startswith(d + "/") for d in deps), (stage, rel)


def test_model_args_that_do_not_build_the_model_are_refused():
    with pytest.raises(DiffzooError, match=r"experiments.dit-s2.model_args do not build DiT-S/2: .*hidden"):
        validate(with_change("experiments.dit-s2.model_args", {"hidden": 64}))
    with pytest.raises(DiffzooError, match=r"experiments.dit-s2.model_args do not build DiT-S/2: .*divisible"):
        validate(with_change("experiments.dit-s2.model_args", {"hidden_size": 64, "num_heads": 5}))


def test_a_sampling_reuses_its_experiments_model_with_its_own_sample_settings():
    raw = copy.deepcopy(DEFAULT)
    raw["experiments"]["dit-s2"]["sample"] = {"cfg_scale": 1.5, "sampling_steps": "20"}
    raw["samplings"] = {"dit-s2-nocfg": {"experiment": "dit-s2", "sample": {"cfg_scale": 1.0}}}
    params = validate(raw)
    assert pipeline.run_ids(params)[-1] == "dit-s2-nocfg"
    exp = pipeline.experiment(params, "dit-s2-nocfg")
    # The experiment's overrides hold unless the sampling overrides them again.
    assert exp["sample"]["cfg_scale"] == 1.0 and exp["sample"]["sampling_steps"] == "20"
    assert exp["train"] == params["experiments"]["dit-s2"]["train"]
    own, parent = pipeline.paths(params, "dit-s2-nocfg"), pipeline.paths(params, "dit-s2")
    for key in ("model", "model_config", "checkpoints", "train_metrics", "train_log"):
        assert own[key] == parent[key], key
    for key in ("samples", "grid", "metrics"):
        assert own[key] != parent[key] and "dit-s2-nocfg" in str(own[key]), key
    assert pipeline.stage_slice(params, "sample", "dit-s2-nocfg") != pipeline.stage_slice(params, "sample", "dit-s2")
    # Sampling costs GPU time, training it none.
    assert "dit-s2-nocfg" in pipeline.cost_summary(params)


@pytest.mark.parametrize("samplings,message", [
    ({"x": {"experiment": "dit-s9"}}, r"samplings.x.experiment = 'dit-s9' is not an experiment; allowed: dit-s2, dit-s4"),
    ({"dit-s4": {"experiment": "dit-s2"}}, r"samplings.dit-s4: 'dit-s4' is already an experiment id"),
    ({"x": {"experiment": "dit-s2", "train": {}}}, r"unknown key samplings.x.train; allowed: experiment, sample"),
    ({"x": {"sample": {}}}, r"samplings.x lacks experiment; allowed: experiment, sample"),
    ({"x": {"experiment": "dit-s2", "sample": {"cfg": 2}}}, r"unknown key samplings.x.sample.cfg; allowed: num_samples"),
])
def test_bad_samplings_name_the_key(samplings, message):
    raw = copy.deepcopy(DEFAULT)
    raw["samplings"] = samplings
    with pytest.raises(DiffzooError, match=message):
        validate(raw)


PAPER_PRESETS = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if not p.stem.startswith("digits")]


@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.stem)
def test_presets_are_valid_and_use_the_papers_recipe(preset):
    """Every preset loads, and trains with the recipe facts.md gives (AdamW lr 1e-4, no weight decay,
    batch 256, EMA 0.9999) and samples 50K images for FID-50K."""
    params = load_params(preset)
    for exp_id in pipeline.run_ids(params):
        exp = pipeline.experiment(params, exp_id)
        assert (exp["train"]["lr"], exp["train"]["weight_decay"], exp["train"]["global_batch_size"],
                exp["train"]["ema_decay"]) == (1.0e-4, 0.0, 256, 0.9999), exp_id
        assert exp["sample"]["num_samples"] == 50_000, exp_id
        # The small-scale options stay off: the papers' eps-prediction and linear schedule.
        from diffzoo.train import objective_settings
        assert objective_settings(exp) in ({}, {"prediction": "eps", "noise_schedule": "linear"}), exp_id
    assert params["latents"]["flips"] and params["latents"]["vae"].startswith("stabilityai/sd-vae-ft-")


def test_classifier_defaults_are_train_classifiers():
    """One set of defaults: the schema's classifier section is train_classifier's keyword defaults."""
    import inspect

    from diffzoo.evaluate.classifier import train_classifier
    signature = inspect.signature(train_classifier).parameters
    assert {k: d for k, (_, d) in SCHEMA["classifier"].items()} == {k: signature[k].default for k in SCHEMA["classifier"]}
