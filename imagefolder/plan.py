"""`plan`: every model a profile's `make reproduce` trains, which of them are trained already, and what the
rest cost; `train_all` trains them (`make train`: several processes, each its `shard`).

The models are those of the seeded tables (every `tables.TableSpec` with variants, each variant over
`study.seeds` at the study budget, its generator too where `spec.generator`) and the notebooks' own
(`notebook_models`), named as the pipeline names their runs (`pipeline.tokenizer_name` / `generator_name`),
so a model two notebooks train is listed once. A run is trained when its final weights file exists
(`pipeline.model_file`).

A run's time is its steps times the time of one training step (`bench.tokenizer_step` /
`bench.generator_step`: random weights and inputs at the run's batch, adversarial terms on), measured once
per step shape (`step_shape`: runs with the same parameters, batch and step execution share it), or its FLOPs
per step over a stated throughput. Evaluation (reconstruction and sampling metrics) is not counted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from . import bench, budget, config, cost, pipeline, tables
from .config import Config, TrainConfig
from .generator import Generator, GeneratorObjective
from .quantize import ProductQuantizer
from .train import compile_afresh

Kind = Literal["tokenizer", "generator"]


# ----------------------------------------------------------------------------- the notebooks' own models

def var_style_tokenizer(cfg: Config) -> Config:
    """Notebook 02's VAR-style single-branch tokenizer, at the main tokenizer's full budget."""
    return pipeline.variant(cfg, tables.var_style(cfg), study=False)


def fig7_tokenizers(cfg: Config) -> dict[float, Config]:
    """Notebook 03's Fig. 7 tokenizers by dropout ratio p (none and the profile's), at the study budget."""
    return {p: pipeline.variant(cfg, {"quantizer.dropout_p": p}) for p in (0.0, cfg.quantizer.dropout_p)}


def notebook_models(cfg: Config) -> dict[str, tuple[Config, bool]]:
    """The models notebooks train outside their seeded tables: name → (config, whether its generator is
    trained too)."""
    return ({"main (notebooks 02, 05, 06)": (cfg, True),
             "VAR-style tokenizer, full budget (notebook 02)": (var_style_tokenizer(cfg), False)}
            | {f"Fig. 7, p = {p} (notebook 03)": (c, False) for p, c in fig7_tokenizers(cfg).items()}
            | {f"budget check, {name} (notebook 05)": (c, True) for name, c in budget.runs(cfg).items()})


# ----------------------------------------------------------------------------- the runs

@dataclasses.dataclass(frozen=True)
class Run:
    """One trained model of the plan: its kind, run name, config and what needs it."""

    kind: Kind
    name: str
    cfg: Config
    used_by: tuple[str, ...]

    @property
    def train(self) -> TrainConfig:
        return self.cfg.train_tokenizer if self.kind == "tokenizer" else self.cfg.train_generator

    @property
    def trained(self) -> bool:
        return pipeline.model_file(self.cfg, self.kind).exists()


def _sources(cfg: Config) -> list[tuple[str, Config, bool]]:
    """(what needs it, config, whether its generator is trained) of every model `reproduce` trains."""
    out = []
    for spec in tables.SPECS.values():
        for seed in cfg.study.seeds:
            for variant, overrides in spec.variants(cfg).items():
                out.append((f"{spec.name}: {variant}, seed {seed}", pipeline.variant(cfg, {"seed": seed} | overrides),
                            spec.generator))
    return out + [(name, c, generator) for name, (c, generator) in notebook_models(cfg).items()]


def runs(cfg: Config) -> list[Run]:
    """Every model of the plan once, by run name, tokenizers before generators, in the order first needed."""
    found: dict[tuple[str, str], tuple[Kind, Config, list[str]]] = {}
    for used_by, c, generator in _sources(cfg):
        kinds: tuple[Kind, ...] = ("tokenizer", "generator") if generator else ("tokenizer",)
        for kind in kinds:
            name = pipeline.tokenizer_name(c) if kind == "tokenizer" else pipeline.generator_name(c)
            entry = found.setdefault((kind, name), (kind, c, []))
            if used_by not in entry[2]:
                entry[2].append(used_by)
    listed = [Run(kind, name, c, tuple(users)) for (_, name), (kind, c, users) in found.items()]
    return sorted(listed, key=lambda r: r.kind != "tokenizer")


def shard(listed: list[Run], index: int, count: int) -> list[Run]:
    """Shard `index` (1-based) of `count` of the runs: each tokenizer with the generators trained on its tokens is
    one group, and the groups go, largest first by their steps, to the shard with the fewest steps so far (the
    same split in every process). A generator's tokenizer is thus trained in the generator's own shard."""
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: the index must be between 1 and the count")
    groups: dict[str, list[Run]] = {}
    for run in listed:  # tokenizers come first (`runs`)
        groups.setdefault(pipeline.tokenizer_name(run.cfg), []).append(run)
    load = [0] * count
    mine: list[Run] = []
    for _, group in sorted(groups.items(), key=lambda kv: (-sum(r.train.steps for r in kv[1]), kv[0])):
        least = load.index(min(load))
        load[least] += sum(r.train.steps for r in group)
        if least == index - 1:
            mine += group
    return mine


def train_all(cfg: Config, index: int = 1, count: int = 1) -> list[Path]:
    """Train (or find) every run of shard `index`/`count` of the plan, each announcing itself on stderr."""
    return [pipeline.train_tokenizer(r.cfg) if r.kind == "tokenizer" else pipeline.train_generator(r.cfg)
            for r in shard(runs(cfg), index, count)]


# ----------------------------------------------------------------------------- step cost

def _objective(run: Run) -> torch.nn.Module:
    """The run's training objective with random weights on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        if run.kind == "tokenizer":
            return pipeline.tokenizer_objective(config.apply_overrides(run.cfg, {"tokenizer.encoder_init": "random"}),
                                                trained=False)
        q = run.cfg.quantizer
        return GeneratorObjective(Generator(run.cfg.generator, q, num_classes=10), ProductQuantizer(q))


def step_shape(run: Run) -> str:
    """What a training step's cost depends on, hashed: the objective's parameters (names, shapes, whether
    trained), the batch and how the step executes (precision, compilation, EMA on or off)."""
    params = [(n, list(p.shape), p.requires_grad) for n, p in _objective(run).named_parameters()]
    t = run.train
    key = {"kind": run.kind, "params": params, "batch": t.batch_size, "amp": t.amp, "compile": t.compile,
           "ema": t.ema_decay > 0}
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]


def _step(run: Run, device: torch.device, train: TrainConfig) -> Callable[[], object]:
    if run.kind == "tokenizer":
        return bench.tokenizer_step(run.cfg, train, device, train.batch_size)
    return bench.generator_step(run.cfg, train, device)[0]


MEASURED_STEPS = (2, 3)  # (warm-up, timed) training steps of `measured_step_seconds`


def measured_step_seconds(run: Run, device: torch.device) -> float:
    """Median wall time of a training step of `run` on `device`: `MEASURED_STEPS` timed after the warm-up ones
    (which compile where the run compiles, and initialise the codebooks)."""
    warmup, timed = MEASURED_STEPS
    compile_afresh(run.train)
    times = cost.interleaved({"step": _step(run, device, run.train)}, warmup=warmup, repeats=timed, device=device)
    return cost.spread(times["step"])["median"]


FLOPS_BATCH = 2  # the batch `step_flops` counts at


def step_flops(run: Run) -> float:
    """FLOPs of one training step of `run` at its batch: counted (`cost.count_flops`, after one warm-up step)
    on the CPU, eager (compilation does not change them), at `FLOPS_BATCH` and scaled to the run's batch, so a
    step too large for this machine is counted too (the counted operations grow linearly with the batch
    except the semantic loss's batch × batch logits)."""
    train = dataclasses.replace(run.train, compile=False, batch_size=min(FLOPS_BATCH, run.train.batch_size))
    step = _step(run, torch.device("cpu"), train)
    step()
    return cost.count_flops(step) * run.train.batch_size / train.batch_size


# ----------------------------------------------------------------------------- the plan

def plan(cfg: Config, flops_per_second: float | None = None) -> tuple[pd.DataFrame, str]:
    """One row per run of `runs(cfg)` with its steps, whether it is trained, its step shape and estimated
    hours, and a line saying how the step times were found. Step times are measured (one run per shape) on
    `cfg.device`, or, with `flops_per_second`, its FLOPs per step over that throughput."""
    device = pipeline.device_of(cfg)
    listed = runs(cfg)
    shapes = [step_shape(r) for r in listed]
    per_shape: dict[str, float] = {}
    for run, shape in zip(listed, shapes):
        if shape not in per_shape:
            per_shape[shape] = (step_flops(run) / flops_per_second if flops_per_second
                                else measured_step_seconds(run, device))
    df = pd.DataFrame([{"kind": r.kind, "run": r.name, "trained": r.trained, "steps": r.train.steps,
                        "batch": r.train.batch_size, "step shape": s, "s/step": per_shape[s],
                        "hours": r.train.steps * per_shape[s] / 3600, "used by": "; ".join(r.used_by)}
                       for r, s in zip(listed, shapes)])
    how = (f"step times: FLOPs per training step (torch.utils.flop_counter, counted at batch {FLOPS_BATCH} and "
           f"scaled to the run's) / {flops_per_second:.3g} FLOP/s stated" if flops_per_second else
           f"step times: measured, the median of {MEASURED_STEPS[1]} training steps after {MEASURED_STEPS[0]} "
           f"warm-up ones at each run's batch on {cost.device_name(device)}, once per step shape "
           f"({len(per_shape)} shapes)")
    return df, how


def report(cfg: Config, flops_per_second: float | None = None) -> str:
    """The plan as text: the runs, then the totals (all, and those not trained yet)."""
    df, how = plan(cfg, flops_per_second)
    todo = df[~df.trained]
    shown = df.assign(**{"used by": [u.split("; ")[0] + (f" (+{u.count('; ')} more)" if "; " in u else "")
                                     for u in df["used by"]]})
    lines = [f"profile {cfg.profile}: {len(df)} models ({(df.kind == 'tokenizer').sum()} tokenizers, "
             f"{(df.kind == 'generator').sum()} generators) under {Path(cfg.run_dir) / cfg.profile}",
             how, "evaluation (reconstruction and sampling metrics) is not counted", "",
             shown.to_string(index=False, formatters={"s/step": "{:.4g}".format, "hours": "{:.3g}".format}), "",
             f"trained already: {int(df.trained.sum())} of {len(df)}",
             f"to train: {len(todo)} models, about {todo.hours.sum():.3g} h "
             f"(all {len(df)}: {df.hours.sum():.3g} h) of training on one process"]
    return "\n".join(lines)
