"""Class conditioning reaches every backbone's output: on data where the label alone decides the
image, each family trained briefly generates the class it is asked for, and guidance towards the null
class does not. A broken label path (labels ignored, always dropped, mixed up between samples, the
DiS label token not read) fails it. The default digits run is too short for its tiny models to learn
conditioning (class accuracy near chance); this test shows that is budget, not plumbing."""
import pytest
import torch

from diffzoo.diffusion.gaussian_diffusion import rand
from diffzoo.diffusion.objective import create_objective
from diffzoo.models import create_model
from diffzoo.training import drop_labels, loop_label_dropout, step_generators

TINY = {"DiT-S/2": {"num_heads": 2}, "DiS-S/2": {"d_state": 4, "expand": 1, "drop_path_rate": 0.0},
        "DiffuSSM-S": {}, "DiT-MoE-S/2-8E2A": {"num_heads": 2}}


@pytest.mark.parametrize("backbone", list(TINY))
def test_each_backbone_generates_the_class_it_is_asked_for(backbone):
    torch.manual_seed(0)
    model = create_model(backbone, input_size=4, in_channels=1, num_classes=2, hidden_size=32, depth=2,
                         learn_sigma=False, **TINY[backbone])
    prob, null = loop_label_dropout(model)
    objective = create_objective("rectified_flow", sampling_steps=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        gens = step_generators(0, step, range(32))
        y = (rand((32,), gens) < 0.5).long()
        x0 = (y.float() * 1.6 - 0.8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)  # class 0: -0.8, class 1: +0.8
        y = drop_labels(y, gens, prob, null)
        loss = objective.training_losses(model, x0, {"y": y}, generator=gens)["loss"].mean()
        aux = model.aux_loss()
        opt.zero_grad()
        (loss if aux is None else loss + aux).backward()
        opt.step()
    model.eval()
    asked = torch.arange(64) % 2
    noise = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        samples = objective.sample(model.guided(1.0), noise, {"y": asked})
        unconditional = objective.sample(model.guided(1.0), noise, {"y": torch.full_like(asked, null)})
    got = (samples.mean((1, 2, 3)) > 0).long()
    assert (got == asked).float().mean() >= 0.95
    # The null class was trained too (label dropout on ~10% of the batches): it draws both classes.
    assert 0.1 <= (unconditional.mean((1, 2, 3)) > 0).float().mean() <= 0.9


def test_loop_label_dropout_takes_over_the_models_dropout():
    model = create_model("DiT-S/2", input_size=4, in_channels=1, num_classes=3, hidden_size=32, depth=1, num_heads=2)
    assert loop_label_dropout(model) == (0.1, 3)  # DiT's class_dropout_prob; row 3 is the null class
    model.train()
    embed = model.y_embedder
    y = torch.randint(0, 3, (4000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(embed(y, train=True), embed(y, train=False))  # the model drops no label itself
    dropped = drop_labels(y, step_generators(0, 0, range(4000)), 0.1, 3)
    assert 0.085 < (dropped == 3).float().mean() < 0.115  # 10% +- 3 binomial sd
    assert torch.equal(dropped[dropped != 3], y[dropped != 3])
