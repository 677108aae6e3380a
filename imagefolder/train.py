"""The one training loop used for every model: tokenizer, generator and the reference networks.

`train(objective, dataset, tcfg, run_dir, seed)` optimises an *objective*: an nn.Module with
`phases` (one AdamW per phase, stepped in order each step, e.g. ("model", "disc") for a GAN),
`parameters_for(phase)`, `forward(batch, phase, step) -> (loss, logs)` and `ema_target` (the module
that is averaged and exported). DDP is detected from the launcher (`torchrun` sets WORLD_SIZE);
rank 0 alone writes files. Checkpoints are atomic; a run restarted with the same arguments resumes
from its last checkpoint and follows the same data order and random stream as an uninterrupted run.
Resume is strict: the checkpoint must be of the same run (`run_key`) and hold exactly the objective's
trainable tensors (frozen parameters, e.g. teachers, are never saved).

`train` is built from pieces that other code reuses (the benchmark times `train_step`):
`build_optimisation` → `resume` → per step `train_step`, every `ckpt_every` steps `save_checkpoint` →
`export`.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import checkpoint
from .config import TrainConfig


@dataclass
class TrainResult:
    steps: int  # steps completed (== tcfg.steps when finished)
    resumed_from: int  # step the run resumed from (0 for a fresh run)
    model_path: Path  # exported EMA (or raw) weights of `ema_target` (written by rank 0)
    history: list[dict[str, float]] = field(default_factory=list)  # logged rows, resumed rows included
    wall_time: float = 0.0  # seconds spent in this call


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


class StepBatchSampler(Sampler[list[int]]):
    """Per-rank index batches for steps `start..stop-1` of an epoch-wise shuffled stream.

    Step s draws from epoch s // steps_per_epoch, whose order is a permutation seeded by
    (seed, epoch), so the stream is a pure function of the step: resuming needs no sampler state.
    """

    def __init__(self, n: int, global_batch: int, seed: int, start: int, stop: int, rank: int, world: int):
        if global_batch % world:
            raise ValueError(f"batch_size {global_batch} is not divisible by {world} processes")
        if n < global_batch:
            raise ValueError(f"the data set has {n} items, fewer than one batch of {global_batch}")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.per_epoch = n // global_batch

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start, self.stop):
            if step // self.per_epoch != epoch:
                epoch = step // self.per_epoch
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            offset = (step % self.per_epoch) * self.batch
            yield perm[offset + self.rank: offset + self.batch: self.world].tolist()


def lr_factor(step: int, tcfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to `min_lr_ratio` at `steps`."""
    if step < tcfg.warmup_steps:
        return (step + 1) / tcfg.warmup_steps
    progress = (step - tcfg.warmup_steps) / max(1, tcfg.steps - tcfg.warmup_steps)
    return tcfg.min_lr_ratio + (1 - tcfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(params: list[nn.Parameter], tcfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, embeddings of dim < 2)."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": tcfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=(tcfg.betas[0], tcfg.betas[1]), fused=fused or None)


def uses_bf16(device: torch.device, amp: str) -> bool:
    """Whether `amp` ("auto": bf16 on CUDA, float32 on CPU; "bf16"; "off") runs the forward under bf16 autocast."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


@contextmanager
def forward_precision(model: nn.Module, device: torch.device, amp: str) -> Iterator[None]:
    """The numerics of a forward: bf16 autocast where `uses_bf16`, else float32 as it is.

    On CPU under bf16, when entered with gradients enabled (a training forward), every submodule with a
    `fused_attn` switch (timm's Attention, the generator's SelfAttention) computes attention as two matmuls
    and a softmax for the duration, whose backward runs on the bf16 units where the fused CPU kernel's does
    not (README, Profiles); entered without gradients (evaluation), the fused kernel stays."""
    if not uses_bf16(device, amp):
        yield
        return
    switched = ([m for m in model.modules() if getattr(m, "fused_attn", False)]
                if device.type == "cpu" and torch.is_grad_enabled() else [])
    for m in switched:
        m.fused_attn = False  # type: ignore[assignment]  # torch types Module.__setattr__ for tensors and modules only
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        for m in switched:
            m.fused_attn = True  # type: ignore[assignment]  # as above


def compiled(model: nn.Module, tcfg: TrainConfig) -> nn.Module:
    """What a training step runs its forward through: `model`, compiled by inductor where `tcfg.compile`."""
    # torch.compile types its result as a callable; of a module it returns a module (OptimizedModule)
    return cast(nn.Module, torch.compile(model)) if tcfg.compile else model


def compile_afresh(tcfg: TrainConfig) -> None:
    """Where `tcfg` compiles, drop dynamo's compiled graphs, so that a run compiles as in a fresh process: one
    that trains or times many runs of differing shapes (`train-all`, `plan`) would otherwise pass dynamo's
    recompile limit (8 graphs per function) and run the rest eagerly."""
    if tcfg.compile:
        torch._dynamo.reset()


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without frozen parameters (frozen teachers are not ours to save)."""
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------- the pieces of a run

class Objective(nn.Module):
    """What `train` optimises (CONTRACTS.md): `forward(batch, phase, step) -> (loss, logs)` for each of
    `phases` (one AdamW each, over `parameters_for(phase)`), and `ema_target`, the module the EMA follows
    and the run exports."""

    phases: tuple[str, ...]

    def parameters_for(self, phase: str) -> list[nn.Parameter]:
        raise NotImplementedError

    @property
    def ema_target(self) -> nn.Module:
        raise NotImplementedError


@dataclass
class Optimisation:
    """What a step changes: the objective, one AdamW and one LR schedule per phase, and the EMA."""
    objective: Objective
    optimizers: dict[str, torch.optim.AdamW]
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]
    ema: AveragedModel | None  # EMA of `objective.ema_target` (None when tcfg.ema_decay == 0)


def build_optimisation(objective: Objective, tcfg: TrainConfig, device: torch.device) -> Optimisation:
    """Optimizers (fused AdamW on CUDA), warm-up + cosine schedules and EMA of an objective already on `device`."""
    optimizers = {ph: make_optimizer(objective.parameters_for(ph), tcfg, fused=device.type == "cuda")
                  for ph in objective.phases}
    schedulers = {ph: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, tcfg))
                  for ph, opt in optimizers.items()}
    ema = (AveragedModel(objective.ema_target, multi_avg_fn=get_ema_multi_avg_fn(tcfg.ema_decay), use_buffers=True)
           if tcfg.ema_decay > 0 else None)
    return Optimisation(objective, optimizers, schedulers, ema)


def train_step(model: nn.Module, opt: Optimisation, batch: list, step: int, tcfg: TrainConfig,
               device: torch.device) -> dict[str, torch.Tensor | float]:
    """One training step: each phase in order (forward under `forward_precision`, backward, grad clip, AdamW,
    LR schedule), then the EMA update. `model` runs the forward (the objective or its DDP wrapper).
    Returns the step's logs; the trainer's own (losses, grad norms) stay detached tensors, so a step does
    not wait for the device: `train` converts them only when it logs (`as_floats`)."""
    logs: dict[str, torch.Tensor | float] = {}
    objective = opt.objective
    for ph in objective.phases:
        opt.optimizers[ph].zero_grad(set_to_none=True)
        with forward_precision(model, device, tcfg.amp):
            loss, ph_logs = model(batch, ph, step)
        loss.backward()
        if tcfg.grad_clip > 0:
            logs[f"grad_norm_{ph}"] = torch.nn.utils.clip_grad_norm_(objective.parameters_for(ph), tcfg.grad_clip)
        opt.optimizers[ph].step()
        opt.schedulers[ph].step()
        logs |= {f"loss_{ph}": loss.detach()} | ph_logs
    if opt.ema is not None:
        opt.ema.update_parameters(objective.ema_target)
    return logs


def as_floats(logs: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """A step's logs as plain floats (one device sync for all of them)."""
    tensors = {k: v for k, v in logs.items() if isinstance(v, torch.Tensor)}
    read = dict(zip(tensors, torch.stack([v.float() for v in tensors.values()]).tolist() if tensors else []))
    return {k: read[k] if k in read else float(v) for k, v in logs.items()}


def _load_exactly(module: nn.Module, tensors: dict[str, torch.Tensor], expected: set[str], what: str,
                  folder: Path) -> None:
    """Load `tensors` into `module`; their names must be exactly `expected` (else CheckpointError)."""
    problems = {"missing": sorted(expected - set(tensors)), "unexpected": sorted(set(tensors) - expected)}
    if any(problems.values()):
        raise checkpoint.CheckpointError(f"{folder} does not match the {what} being trained: " + "; ".join(
            f"{label} tensors {names}" for label, names in problems.items() if names))
    try:
        module.load_state_dict(tensors, strict=False)  # frozen parameters are not in the file: they keep theirs
    except RuntimeError as err:  # a shape that differs
        raise checkpoint.CheckpointError(f"{folder}: the {what} tensors do not fit: {err}") from err


def resume(opt: Optimisation, run_dir: Path, run_key: dict[str, Any], info: DistInfo, device: torch.device
           ) -> tuple[Path | None, int, list[dict[str, float]]]:
    """Restore the last checkpoint of `run_dir` into `opt` and the RNG: `(folder, step, history up to it)`,
    or `(None, 0, [])` for a fresh run. The checkpoint must have been made for `run_key` and hold exactly
    the trainable tensors of the objective (and of its EMA)."""
    latest = checkpoint.latest_training(run_dir / "checkpoints")
    if latest is None:
        return None, 0, []
    start, tensors, state = checkpoint.load_training(latest, expected_config=run_key)
    part = {prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            for prefix in ("model.", "ema.")}
    _load_exactly(opt.objective, part["model."], set(trainable_state(opt.objective)), "model", latest)
    if opt.ema is not None:
        _load_exactly(opt.ema, part["ema."], set(opt.ema.state_dict()), "EMA", latest)
    for ph in opt.optimizers:
        opt.optimizers[ph].load_state_dict(state["optimizers"][ph])
        opt.schedulers[ph].load_state_dict(state["schedulers"][ph])
    _set_rng_state(state["rng"][min(info.rank, len(state["rng"]) - 1)], device)
    history = [row for row in _read_history(run_dir) if row["step"] <= start]
    if info.main:
        checkpoint.atomic_write_text(run_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    return latest, start, history


def save_checkpoint(opt: Optimisation, ckpt_root: Path, step: int, run_key: dict[str, Any], keep: int,
                    info: DistInfo, device: torch.device) -> None:
    """Write the checkpoint of `step` (every rank's RNG state, gathered; rank 0 writes)."""
    rngs: list[Any] = [None] * info.world
    if info.world > 1:
        dist.all_gather_object(rngs, _rng_state(device))
    else:
        rngs = [_rng_state(device)]
    if not info.main:
        return
    tensors = {f"model.{k}": v for k, v in trainable_state(opt.objective).items()}
    if opt.ema is not None:
        tensors |= {f"ema.{k}": v for k, v in opt.ema.state_dict().items()}
    state = {"optimizers": {ph: o.state_dict() for ph, o in opt.optimizers.items()},
             "schedulers": {ph: s.state_dict() for ph, s in opt.schedulers.items()},
             "rng": [{k: v.cpu() for k, v in r.items()} for r in rngs]}
    checkpoint.save_training(ckpt_root, step, tensors, state, run_key, keep)


def export(opt: Optimisation, path: Path, config: dict[str, Any], step: int) -> Path:
    """Save the finished model: the EMA weights of `ema_target` (its raw weights without EMA), with `config`."""
    exported = opt.ema.module if opt.ema is not None else opt.objective.ema_target
    checkpoint.save_model(exported.state_dict(), path, config, {"steps": step})
    return path


def step_loader(dataset: Dataset, tcfg: TrainConfig, seed: int, start: int, info: DistInfo) -> DataLoader:
    """This rank's batches of steps `start..tcfg.steps-1` (see StepBatchSampler)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"train needs a data set with a length (__len__), got {type(dataset).__name__}")
    sampler = StepBatchSampler(len(dataset), tcfg.batch_size, seed, start, tcfg.steps, info.rank, info.world)
    # a private generator: iterating the loader must not draw from the global stream that resume restores
    return DataLoader(dataset, batch_sampler=sampler, num_workers=getattr(dataset, "num_workers", 0),
                      generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the loop

def train(objective: Objective, dataset: Dataset, tcfg: TrainConfig, run_dir: str | Path, seed: int,
          config: dict[str, Any] | None = None, device: torch.device | str = "auto",
          desc: str = "train", *, run_key: dict[str, Any] | None = None) -> TrainResult:
    """Optimise `objective` on `dataset` for `tcfg.steps` steps; resume from `run_dir` if it holds a checkpoint.

    `config` (the full config as a dict) is stored with the exported model. `run_key` (default: `config`)
    is what defines the run: stored with every checkpoint, and a checkpoint made for another is refused.
    Writes `run_dir/checkpoints/`, `run_dir/history.jsonl` and, at the end, `run_dir/model.safetensors`.
    """
    t0 = time.time()
    device = pick_device(device) if isinstance(device, str) else device
    info = init_distributed(device)
    run_dir = Path(run_dir)
    config = config or {}
    run_key = config if run_key is None else run_key
    seed_everything(seed + info.rank)
    objective.to(device)
    opt = build_optimisation(objective, tcfg, device)
    latest, start, history = resume(opt, run_dir, run_key, info, device)
    if latest is not None and info.main:
        print(f"{desc}: resuming from {latest} (step {start} of {tcfg.steps})")

    model: nn.Module = (DistributedDataParallel(objective, find_unused_parameters=True) if info.world > 1
                        else objective)
    compile_afresh(tcfg)
    model = compiled(model, tcfg)
    loader = step_loader(dataset, tcfg, seed, start, info)
    objective.train()
    # counts images, so its rate is img/s; disable=None: drawn only on a terminal (tqdm's rule), never into a
    # notebook's or a log's output, where the history and the summary line below stand for it
    bar = tqdm(total=tcfg.steps * tcfg.batch_size, initial=start * tcfg.batch_size, desc=desc, unit="img",
               unit_scale=True, disable=None if info.main else True, mininterval=2.0)
    step, seen, t_log = start, 0, time.time()
    for batch in loader:
        batch = [b.to(device, non_blocking=True) if torch.is_tensor(b) else b for b in batch]
        logs = train_step(model, opt, batch, step, tcfg, device)
        step += 1
        seen += len(batch[0]) * info.world
        bar.update(len(batch[0]) * info.world)
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            row = {"step": step, "lr": float(opt.schedulers[objective.phases[0]].get_last_lr()[0]),
                   "items_per_s": seen / max(1e-9, time.time() - t_log)} | as_floats(logs)
            if device.type == "cuda":
                row["max_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
            history.append(row)
            if info.main:
                _append_history(run_dir, row)
                bar.set_postfix({"step": step} | {k: f"{v:.3g}" for k, v in row.items() if k.startswith("loss_")})
            seen, t_log = 0, time.time()
        if step % tcfg.ckpt_every == 0 or step == tcfg.steps:
            save_checkpoint(opt, run_dir / "checkpoints", step, run_key, tcfg.keep_ckpts, info, device)
    bar.close()

    result = TrainResult(steps=step, resumed_from=start, history=history, wall_time=time.time() - t0,
                         model_path=run_dir / "model.safetensors")
    if info.main:
        export(opt, result.model_path, config, step)
        print(_summary(desc, result, tcfg.batch_size), file=sys.stderr)  # a log line: stdout is the caller's
    if info.world > 1:
        dist.barrier()
    return result


def _summary(desc: str, result: TrainResult, batch_size: int) -> str:
    """One line for a finished training: steps, time, images/s and the last logged losses."""
    done = result.steps - result.resumed_from
    losses = {k: v for k, v in (result.history[-1] if result.history else {}).items() if k.startswith("loss_")}
    return (f"{desc}: {done} steps" + (f" (resumed at {result.resumed_from})" if result.resumed_from else "")
            + f" in {result.wall_time:.0f} s, {done * batch_size / max(result.wall_time, 1e-9):.0f} img/s"
            + "".join(f", {k} {v:.3g}" for k, v in losses.items()))


def _append_history(run_dir: Path, row: dict[str, float]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "history.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _read_history(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
