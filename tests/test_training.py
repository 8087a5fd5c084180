"""The named steps of the training recipe against closed forms: the EMA, the loop's use of it, the
data order, and resume_or_fresh's choice of checkpoint."""
import numpy as np
import pytest
import torch

from diffzoo.diffusion.objective import create_objective
from diffzoo.errors import DiffzooError
from diffzoo.models import create_model
from diffzoo.params import TrainConfig
from diffzoo.runtime import Process
from diffzoo.training import (Checkpointer, LossLog, TrainState, global_batch_indices, resume_or_fresh, train_loop,
                              update_ema)

CPU = Process(world=1, rank=0, device=torch.device("cpu"))


def _tiny():
    torch.manual_seed(0)
    return create_model("DiT-S/4", input_size=8, in_channels=1, num_classes=2, hidden_size=32, depth=1, num_heads=2,
                        learn_sigma=False)


def test_update_ema_is_the_exponential_average():
    """With the model held at theta, k updates from e0 give d^k e0 + (1 - d^k) theta."""
    model, ema = _tiny(), _tiny()
    with torch.no_grad():
        for p in ema.parameters():
            p.normal_()
    start = [p.clone() for p in ema.parameters()]
    d, k = 0.9, 7
    for _ in range(k):
        update_ema(ema, model, d)
    for e, e0, theta in zip(ema.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(e, d**k * e0 + (1 - d**k) * theta, rtol=1e-5, atol=1e-6)


class _Data:
    """The training loop's data interface: len() and batch(indices, generators) -> (x, y)."""

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(1)
        self.x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
        self.y = torch.arange(n) % 2

    def __len__(self):
        return len(self.x)

    def batch(self, idx, gens):
        idx = torch.as_tensor(idx)
        return self.x[idx], self.y[idx]


def _train(tmp_path, decay: float, steps: int = 3):
    model = _tiny()
    ema = _tiny().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    cfg = TrainConfig(steps=steps, global_batch_size=4, lr=1e-2, ema_decay=decay, ckpt_every=100, log_every=1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    objective = create_objective("rectified_flow", sampling_steps=2)
    history = []
    real_step = opt.step

    def step_and_record(*a, **k):
        out = real_step(*a, **k)
        history.append([p.detach().clone() for p in model.parameters()])
        return out

    opt.step = step_and_record
    start = [p.detach().clone() for p in model.parameters()]
    ckpt = Checkpointer(tmp_path / "ckpt", {"run": "key"}, CPU)
    state = train_loop(model, ema, model, objective, _Data(), cfg, opt, CPU, ckpt, LossLog(tmp_path / "log.tsv", CPU),
                       TrainState(), (0.0, 2))
    return model, ema, start, history, state


def test_the_loop_averages_the_weights_after_every_step(tmp_path):
    """ema_T = d^T theta_0 + sum_t (1 - d) d^(T - t) theta_t over the weights after each step."""
    d = 0.5
    model, ema, start, history, state = _train(tmp_path, d)
    assert len(history) == 3 and state.step == 3 and len(state.log_rows) == 3
    for i, e in enumerate(ema.parameters()):
        expected = d**3 * start[i]
        for t, weights in enumerate(history, start=1):
            expected = expected + (1 - d) * d ** (3 - t) * weights[i]
        torch.testing.assert_close(e, expected, rtol=1e-5, atol=1e-6)
    # ... which is neither the last weights (a copy) nor the first (never updated).
    moved = max((e - w).abs().max().item() for e, w in zip(ema.parameters(), model.parameters(), strict=True))
    assert moved > 1e-4
    assert (tmp_path / "ckpt" / "step-0000003.pt").is_file()  # the final checkpoint


def test_decay_zero_makes_the_ema_the_model(tmp_path):
    model, ema, *_ = _train(tmp_path, 0.0, steps=2)
    for e, w in zip(ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(e, w)


def test_data_order_is_a_permutation_per_epoch_and_a_function_of_the_step():
    n, batch = 10, 4
    order = np.concatenate([global_batch_indices(s, batch, n, seed=3) for s in range(5)])  # 20 = 2 epochs
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert not np.array_equal(order[:10], order[10:20])
    assert np.array_equal(global_batch_indices(3, batch, n, seed=3), order[12:16])


def _saved(tmp_path, identity, steps):
    model, ema = _tiny(), _tiny()
    ckpt = Checkpointer(tmp_path / "ckpt", identity, CPU)
    opt = torch.optim.AdamW(model.parameters())
    for step in steps:
        ckpt.save(step, model, ema, opt, TrainState(step=step, elapsed=float(step), log_rows=[f"{step}"]))
    return ckpt


def test_resume_takes_this_runs_newest_checkpoint_at_or_below_steps(tmp_path):
    ckpt = _saved(tmp_path, {"lr": 1e-4}, (2, 4))
    state = resume_or_fresh(ckpt, _tiny(), _tiny(), steps=10)
    assert (state.step, state.elapsed, state.log_rows) == (4, 4.0, ["4"]) and state.optimizer is not None
    # Fewer steps than the newest checkpoint: the one at or below them (the weights of step 2 do not
    # depend on how many steps follow).
    assert resume_or_fresh(ckpt, _tiny(), _tiny(), steps=3).step == 2
    assert resume_or_fresh(ckpt, _tiny(), _tiny(), steps=1).step == 0


def test_another_identity_starts_fresh_and_keeps_the_old_checkpoints_aside(tmp_path, capsys):
    _saved(tmp_path, {"train": {"lr": 1e-4}}, (2, 4))
    fresh = resume_or_fresh(Checkpointer(tmp_path / "ckpt", {"train": {"lr": 2e-4}}, CPU), _tiny(), _tiny(), 10)
    assert fresh.step == 0 and fresh.optimizer is None
    aside = list((tmp_path / "checkpoints-aside").iterdir())
    assert len(aside) == 1 and sorted(p.name for p in aside[0].glob("step-*.pt")) == ["step-0000002.pt",
                                                                                       "step-0000004.pt"]
    assert "train.lr 0.0001 -> 0.0002" in capsys.readouterr().err


def test_an_unreadable_checkpoint_stops_the_run_and_stays(tmp_path):
    ckpt = _saved(tmp_path, {"lr": 1e-4}, (2, 4))
    bad = tmp_path / "ckpt" / "step-0000004.pt"
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    with pytest.raises(DiffzooError, match="step-0000004.pt: not a readable checkpoint"):
        resume_or_fresh(ckpt, _tiny(), _tiny(), steps=10)
    assert bad.is_file() and (tmp_path / "ckpt" / "step-0000002.pt").is_file()
    assert not (tmp_path / "checkpoints-aside").exists()


def test_checkpoints_sort_by_step_past_ten_million(tmp_path):
    ckpt = _saved(tmp_path, {"lr": 1e-4}, (9_999_999, 10_000_000, 10_000_001))
    assert [s for s, _ in ckpt.steps()] == [10_000_000, 10_000_001]  # the oldest one was pruned
    assert resume_or_fresh(ckpt, _tiny(), _tiny(), steps=20_000_000).step == 10_000_001


def test_a_save_below_later_checkpoints_does_not_remove_itself(tmp_path):
    ckpt = _saved(tmp_path, {"lr": 1e-4}, (900, 1000))
    _saved(tmp_path, {"lr": 1e-4}, (500,))  # steps lowered to 600: a save at 500
    assert [s for s, _ in ckpt.steps()] == [500, 900, 1000]


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_an_ema_decay_outside_0_1_is_refused(decay):
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        TrainConfig(ema_decay=decay)
