"""DiT's training recipe as named steps, for any registered backbone and objective.

    state = resume_or_fresh(checkpointer, model, ema, steps) # newest checkpoint of this run, or step 0
    train_loop(model, ema, net, objective, data, cfg, opt, proc, checkpointer, log, state)
    export_model(path, ema, config)                           # the EMA weights + how to rebuild them

AdamW at a constant lr, no warmup, no clipping, `update_ema` after every step. Every random number
of a step comes from its sample's own generator, seeded by (seed, step, position in the global
batch), and the data order is a function of (seed, step): a resumed run equals an uninterrupted one
(on CPU bit for bit), and N processes draw exactly what one process draws, so they differ only by
the floating-point order of the gradient all-reduce.
"""
from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

from .checkpoints import save_checkpoint
from .diffusion.gaussian_diffusion import rand
from .errors import DiffzooError
from .models.layers import LabelEmbedder
from .params import TrainConfig
from .runtime import Process
from .utils import Progress, atomic_path, clean_stale_temps, content_hash, kill_point, reading, set_aside, write_json

KEEP_CHECKPOINTS = 2
LOG_HEADER = "step\tloss\tmse\tvb\taux\timages_per_s"


# ---- random draws: a function of (seed, step, position) -------------------------------------------------
def mix_seed(*key: int) -> int:
    """A 64-bit seed from integers (numpy's SeedSequence hash: no collisions between nearby keys)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0])


def step_generators(seed: int, step: int, positions) -> list[torch.Generator]:
    """One generator per sample of the global batch at `step`, by its position in that batch."""
    return [torch.Generator().manual_seed(mix_seed(seed, step, int(i))) for i in positions]


def drop_labels(y: torch.Tensor, generators: list[torch.Generator], prob: float, null: int) -> torch.Tensor:
    """Each label replaced by the null class with probability `prob`, drawn from its sample's generator."""
    return torch.where(rand((len(y),), generators) < prob, null, y) if prob > 0 else y


def loop_label_dropout(model: torch.nn.Module) -> tuple[float, int]:
    """Moves classifier-free-guidance label dropout from the model's LabelEmbedder (which draws from
    the global RNG, so its draws depend on how the batch is split over GPUs) to the training loop,
    which draws it from the per-sample generators. Returns (probability, null class)."""

    embedders = [m for m in model.modules() if isinstance(m, LabelEmbedder)]
    if not embedders:
        return 0.0, 0
    prob, null = embedders[0].dropout_prob, embedders[0].num_classes
    for m in embedders:
        m.dropout_prob = 0.0
    return prob, null


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batch_indices(step: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Indices of the global batch at `step`: consecutive slices of per-epoch permutations seeded by
    (seed, epoch), so the order is a pure function of the step (resumable, GPU-count independent)."""
    positions = np.arange(step * batch, (step + 1) * batch)
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(positions // n):
        sel = positions // n == epoch
        out[sel] = epoch_permutation(seed, int(epoch), n)[positions[sel] % n]
    return out


# ---- the named steps --------------------------------------------------------------------------------
@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (DiT's update_ema)."""
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)


@dataclass
class TrainState:
    """Where a run stands: the next step, the seconds trained so far and the loss log's rows (the
    rows travel in the checkpoint: the engines delete a job's outputs before it reruns)."""

    step: int = 0
    elapsed: float = 0.0
    log_rows: list[str] = field(default_factory=list)
    optimizer: dict | None = None  # the optimizer state to restore (full state dict), if resumed


class Checkpointer:
    """Atomic `step-NNNNNNN.pt` files under `directory`, each holding full (unsharded) state dicts of
    the model, EMA and optimizer, the step and the loss log, and `run.json`: the run's identity (what
    it trains: model, objective, the train settings that change the weights, the latents, the code of
    the backbone and the objective) and its key.

    A run resumes from the newest checkpoint at or below its `steps` when its identity is the one
    recorded, so more steps, another log or checkpoint interval, parallelism, compilation, activation
    checkpointing or an edit of code outside the model and objective continue the run. Another
    identity starts fresh and first moves the old checkpoints aside (never deleted). A checkpoint
    that cannot be read stops the run with its name; it is left in place."""

    RUN_FILE = "run.json"

    def __init__(self, directory: Path, identity: dict, proc: Process, sharded: bool = False):
        self.directory, self.identity, self.proc, self.sharded = Path(directory), identity, proc, sharded
        self.run_key = content_hash(identity)

    def steps(self) -> list[tuple[int, Path]]:
        """(step, file) of every checkpoint, in numeric order (names sort wrongly past 9,999,999)."""
        found = []
        for path in self.directory.glob("step-*.pt"):
            digits = path.stem.removeprefix("step-")
            if digits.isdigit():
                found.append((int(digits), path))
        return sorted(found)

    def latest(self, max_step: int) -> dict | None:
        """The newest checkpoint of this run at or below `max_step`, or None (after moving the
        checkpoints of another identity aside)."""

        if not self.directory.is_dir():
            return None
        if self.proc.is_main:
            clean_stale_temps(self.directory)
        recorded = self._recorded()
        if recorded.get("key") != self.run_key:
            if self.steps() and self.proc.is_main:
                self._set_aside(recorded.get("identity"))
            return None
        for step, path in reversed(self.steps()):
            if step <= max_step:
                with reading(path, "checkpoint (it is left in place: move it away to resume from the one "
                                   "before it)"):
                    return torch.load(path, map_location="cpu", weights_only=True)
        return None

    def _recorded(self) -> dict:
        path = self.directory / self.RUN_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def _set_aside(self, old: dict | None) -> None:
        changed = ", ".join(identity_changes(old, self.identity)) if old else "checkpoints without a run.json"
        set_aside(self.directory, self.directory.parent / "checkpoints-aside",
                  f"the run's settings changed ({changed}): training starts at step 0")

    def save(self, step: int, model, ema, opt, state: TrainState) -> None:
        if not self.proc.is_main and not self.sharded:  # gathering sharded state needs every rank
            return
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        states = {"model": get_model_state_dict(model, options=full), "ema": get_model_state_dict(ema, options=full),
                  "opt": get_optimizer_state_dict(model, opt, options=full)}
        if not self.proc.is_main:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._recorded().get("key") != self.run_key:
            write_json(self.directory / self.RUN_FILE, {"key": self.run_key, "identity": self.identity})
        with atomic_path(self.directory / f"step-{step:07d}.pt") as tmp:
            torch.save({**states, "step": step, "run_key": self.run_key, "elapsed": state.elapsed,
                        "log": state.log_rows}, tmp)
        # Keep this one and the KEEP_CHECKPOINTS - 1 before it; later ones (a run that went further
        # before its steps were lowered) are not this save's to remove.
        older = [path for s, path in self.steps() if s < step]
        for path in older[:max(0, len(older) - (KEEP_CHECKPOINTS - 1))]:
            path.unlink()


def identity_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The leaves that differ between two run identities, as 'key old -> new' (at most 6)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {_short(a)} -> {_short(b)}")
    return out[:6]


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:12] + "..."


def resume_or_fresh(checkpointer: Checkpointer, model: torch.nn.Module, ema: torch.nn.Module,
                    steps: int) -> TrainState:
    """Load the newest checkpoint of this run at or below `steps` into `model` and `ema` (full
    weights, before any sharding), or start at step 0."""
    saved = checkpointer.latest(steps)
    if saved is None:
        return TrainState()
    model.load_state_dict(saved["model"])
    ema.load_state_dict(saved["ema"])
    return TrainState(int(saved["step"]), float(saved["elapsed"]), list(saved["log"]), saved["opt"])


def restore_optimizer(model: torch.nn.Module, opt: torch.optim.Optimizer, state: TrainState) -> None:
    if state.optimizer is not None:
        set_optimizer_state_dict(model, opt, state.optimizer, options=StateDictOptions(full_state_dict=True))


class LossLog:
    """The loss TSV (results/train/<id>.tsv): one row per log interval, rewritten atomically."""

    def __init__(self, path: Path, proc: Process):
        self.path, self.proc = Path(path), proc

    def write(self, rows: list[str]) -> None:
        if self.proc.is_main:
            with atomic_path(self.path) as tmp:
                tmp.write_text("\n".join([LOG_HEADER] + rows) + "\n")


def train_loop(model: torch.nn.Module, ema: torch.nn.Module, net: torch.nn.Module, objective, data,
               cfg: TrainConfig, opt: torch.optim.Optimizer, proc: Process, checkpointer: Checkpointer,
               log: LossLog, state: TrainState, label_dropout: tuple[float, int], name: str = "train",
               tracker=None) -> TrainState:
    """Steps state.step .. cfg.steps: the batch of (seed, step), the objective's loss (+ the model's
    auxiliary loss, e.g. MoE balance), AdamW, update_ema; a log row every cfg.log_every steps and a
    checkpoint every cfg.ckpt_every steps and at the end. `net` is what the step calls (the model,
    its DDP wrapper or the compiled module); `tracker` (diffzoo.tracking) gets each log row's means and
    may draw a preview after a step."""
    drop_prob, null_class = label_dropout
    local_batch = cfg.global_batch_size // proc.world
    autocast = torch.autocast(proc.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    # A line every log_every steps (timestamp, step, loss, images/s, ETA), on a terminal above the bar.
    progress = Progress(cfg.steps, name, "steps", initial=state.step, every=float("inf"), enabled=proc.is_main)
    window: dict[str, list] = {}
    model.train()
    t_window = time.perf_counter()
    for step in range(state.step, cfg.steps):
        torch.manual_seed(mix_seed(cfg.seed, step))  # for any op that still draws from the global RNG
        mine = slice(proc.rank * local_batch, (proc.rank + 1) * local_batch)
        gens = step_generators(cfg.seed, step, range(mine.start, mine.stop))
        idx = global_batch_indices(step, cfg.global_batch_size, len(data), cfg.seed)
        x, y = data.batch(idx[mine], gens)
        y = drop_labels(y, gens, drop_prob, null_class)
        x, y = x.to(proc.device, non_blocking=True), y.to(proc.device, non_blocking=True)
        with autocast:
            terms = objective.training_losses(net, x, {"y": y}, generator=gens)
            loss = terms["loss"].mean()
            aux = model.aux_loss()
            if aux is not None:
                loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema(ema, model, cfg.ema_decay)
        # Detached device tensors: no host sync per step, so the next batch loads while the GPU works.
        for k in ("loss", "mse", "vb"):
            if k in terms:
                window.setdefault(k, []).append(terms[k].detach().mean())
        window.setdefault("aux", []).append(aux.detach() if aux is not None else torch.zeros((), device=proc.device))
        progress.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            state.elapsed += now - t_window
            row, mean = _log_row(window, done, cfg.global_batch_size / max(now - t_window, 1e-9), proc)
            _refuse_diverged(mean["loss"], done, state.step)
            state.log_rows.append(row)
            t_window = now
            progress.note(f"step {done}/{cfg.steps} loss {mean['loss']:.4f} {mean['images_per_s']:.1f} images/s "
                          f"ETA {progress.eta()}")
            log.write(state.log_rows)  # the loss TSV follows the run, not only its checkpoints
            if tracker is not None:
                tracker.scalars(done, mean, cfg.lr)
            window = {}
        if tracker is not None:
            tracker.step(done)
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            _refuse_diverged(loss.item(), done, state.step)  # never a checkpoint of NaN weights
            state.step = done
            checkpointer.save(done, model, ema, opt, state)
            log.write(state.log_rows)
        kill_point("train-step")
    progress.close()
    state.step = max(state.step, cfg.steps)
    return state


def _refuse_diverged(loss: float, step: int, saved: int) -> None:
    if not math.isfinite(loss):
        kept = f"the checkpoint of step {saved} is kept" if saved else "no checkpoint was written"
        raise DiffzooError(f"the loss is {loss} at step {step}: training diverged ({kept}); lower train.lr, or "
                           "check the data")


def _log_row(window: dict[str, list], step: int, batches_per_s: float, proc: Process) -> tuple[str, dict]:
    """The window's mean losses over the global batch, as a TSV row."""
    n_steps = len(window["loss"])
    mean = {k: torch.stack(v).float().mean().item() for k, v in window.items()}
    if proc.world > 1:  # the global batch's means (equal per-rank batches: the mean of rank means)
        import torch.distributed as dist
        keys = sorted(mean)
        vals = torch.tensor([mean[k] for k in keys], dtype=torch.float64, device=proc.device)
        dist.all_reduce(vals)
        mean = dict(zip(keys, (vals / proc.world).tolist(), strict=True))
    mean["images_per_s"] = n_steps * batches_per_s
    row = (f"{step}\t{mean['loss']:.6f}\t{mean.get('mse', float('nan')):.6f}\t{mean.get('vb', float('nan')):.6f}"
           f"\t{mean['aux']:.6f}\t{mean['images_per_s']:.1f}")
    return row, mean


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered, on CPU) state dict of a module, sharded or not; every rank must call it."""
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_model(path: Path, ema_state: dict[str, torch.Tensor], config: dict) -> None:
    """The run's artifact: the EMA weights as safetensors and the JSON that rebuilds the model."""

    save_checkpoint(path, ema_state, config)
