"""The default's recipe draws the digit it is asked for; the papers' recipe at the same tiny budget
does not. Both run through the real stages (`diffzoo dataset/images/latents/train/sample`) on the
default params with a shorter, smaller DiT, and are judged by the independent digits judge (an SVC
on the original scans). This is the README's finding ("Why the papers' recipe samples noise at this
scale") kept as a test: eps-prediction is the only change between the two experiments."""
import subprocess
import sys

import numpy as np
import pytest
import yaml

from diffzoo.evaluate.judge import judge_accuracy

from conftest import ROOT

pytestmark = pytest.mark.slow  # the full tier: trains the default's recipe (a minute and more)

DIFFZOO = [sys.executable, "-m", "diffzoo.cli"]
STEPS = 800
TINY = {"model": "DiT-S/4", "model_args": {"hidden_size": 64, "depth": 4, "num_heads": 4}, "objective": "ddpm",
        "sample": {}}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(steps=STEPS, ckpt_every=STEPS)
    raw["sample"].update(num_samples=300, batch_size=300)
    raw["experiments"] = {"v": {**TINY, "train": {}}, "eps": {**TINY, "train": {"prediction": "eps"}}}
    assert raw["train"]["prediction"] == "v"  # the default's
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    for argv in (["dataset"], ["images"], ["latents"], ["train", "--experiment", "v"], ["sample", "--experiment", "v"],
                 ["train", "--experiment", "eps"], ["sample", "--experiment", "eps"]):
        subprocess.run(DIFFZOO + [argv[0], "--params", "params.yaml", *argv[1:]], cwd=root, check=True,
                       capture_output=True)
    return root


def _judge(project, exp_id):
    with np.load(project / "data" / "experiments" / exp_id / "samples.npz") as z:
        assert z["arr_0"].shape == (300, 8, 8, 3)
        return judge_accuracy(z["arr_0"], z["labels"])


def test_the_default_recipe_draws_the_asked_digit(project):
    accuracy = _judge(project, "v")
    print("v-prediction judge accuracy", accuracy)
    assert accuracy >= 0.85


def test_the_papers_eps_recipe_draws_noise_at_this_budget(project):
    accuracy = _judge(project, "eps")
    print("eps-prediction judge accuracy", accuracy)
    assert accuracy <= 0.5
