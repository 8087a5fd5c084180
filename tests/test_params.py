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
    ("experiments.dit-s2.model", "DiT-XXL/2", r"experiments.dit-s2.model: unknown model 'DiT-XXL/2' .*registered: "),
    ("experiments.dit-s2.objective", "flow", r"experiments.dit-s2.objective = 'flow' is not allowed; allowed: 'ddpm' \| 'rectified_flow'"),
    ("experiments.dit-s2.train", {"stesp": 3}, r"unknown key experiments.dit-s2.train.stesp; allowed: steps"),
    ("report.tables", ["dit_tabel4"], r"unknown table 'dit_tabel4'; allowed: default, dit_table4"),
    ("bogus", {}, r"unknown section 'bogus'; allowed: data, latents"),
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
