"""Benchmarks behind Table 6 (latency and FLOPs) and `make bench`.

- `sampling_benchmark`: batch-1 sampling latency (KV cache, CFG) and FLOPs per image of four generator
  set-ups (`generator_setups`) at the profile's generator width and depth: folded (ImageFolder),
  unfolded, VAR-style and raster (next-token), timed in interleaved rounds of one process and given as ratios
  to folded.
- `attention_benchmark`: batch-1 folded sampling with L2-norm attention against scaled-dot, as a ratio.
- `paper_flops`: FLOPs per image of the paper's two generators, ImageFolder (d17, w1088, 286 folded
  positions) and VAR d16 (w1024, 680 positions); `tables.TABLE6_PAPER`'s claim judges their ratio.
- `tokenizer_benchmark`: encode, decode and training throughput of the profile's tokenizer.
- `speed_benchmark`: the profile's adopted fast paths against float32 eager, as ratios: tokenizer and
  generator training (the profile's `amp` and `compile`, compilation time counted), reconstruction, a
  study variant's evaluation, batch-1 sampling of the four set-ups (eager, and compiled over a static KV
  cache) and batch-64 sampling (bf16 autocast,
  adopted or a candidate as `evaluation.amp` says, and for the study evaluation what every variant
  shares cached, against computed anew: the splits' evaluator features, the val images and their
  perceptual features).

Variants being compared are timed interleaved (`cost.interleaved`: round-robin, A B A B …, in one process),
so a drift of a shared machine lands on all of them alike; ratios are per round, with their spread.

Every network has random weights: latency and FLOPs depend on shapes, not on training. FLOPs come from
`cost.count_flops` (torch.utils.flop_counter, attention as described by `cost.FLOPS_NOTE`); wall times
from `cost.interleaved`.
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import sys
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from . import claims, config, pipeline, tables
from .config import Config, GeneratorConfig, QuantizerConfig, TrainConfig
from .cost import FLOPS_NOTE, count_flops, device_name, interleaved, spread
from .generator import Generator, GeneratorObjective, parameter_counts
from .quantize import ProductQuantizer
from .train import build_optimisation, compiled, forward_precision, train_step, uses_bf16

# warm-up and timed rounds per profile (a round times every variant being compared once, round-robin)
REPEATS = {"smoke": (1, 3), "cpu": (2, 10)}
DEFAULT_REPEATS = (3, 20)
QUICK_REPEATS = (0, 1)  # `bench --quick`: one round, no warm-up (tests)

# The paper's two generators (§4.1 and VAR d16), each with its quantizer layout; ImageNet's 1000 classes.
PAPER_MODELS = {
    "ImageFolder": (GeneratorConfig(layout="folded", depth=17, width=1088, heads=17),
                    QuantizerConfig(scales=list(config.PAPER_SCALES), branches=2, codebook_size=4096)),
    "VAR d16": (GeneratorConfig(layout="folded", depth=16, width=1024, heads=16),
                QuantizerConfig(scales=list(config.VAR_SCALES), branches=1, codebook_size=4096)),
}
PAPER_CLASSES = 1000


# ----------------------------------------------------------------------------- generators

def generator_setups(cfg: Config) -> dict[str, tuple[GeneratorConfig, QuantizerConfig]]:
    """The four compared generator set-ups (a layout over a quantizer) at the profile's generator width and
    depth: name → (generator, quantizer) config.

    folded / unfolded: those layouts over the profile's quantizer (P branches, its scales); VAR-style: the
    folded layout over the quantizer of `tables.var_style` (one branch, VAR's schedule ending at the patch
    grid); raster: the raster layout over one branch, one scale (the patch grid), next-token.
    """
    g, q = cfg.generator, cfg.quantizer
    var_q = config.apply_overrides(cfg, tables.var_style(cfg)).quantizer
    return {
        "folded": (dataclasses.replace(g, layout="folded"), q),
        "unfolded": (dataclasses.replace(g, layout="unfolded"), q),
        "VAR-style": (dataclasses.replace(g, layout="folded"), var_q),
        "raster": (dataclasses.replace(g, layout="raster"), dataclasses.replace(var_q, scales=[cfg.patch_grid])),
    }


def build_generator(gcfg: GeneratorConfig, qcfg: QuantizerConfig, num_classes: int, device: torch.device | str,
                    seed: int = 0) -> tuple[Generator, ProductQuantizer | None]:
    """A randomly initialised generator (eval mode) and, but for the raster layout, a quantizer with random
    codebooks."""
    torch.manual_seed(seed)
    generator = Generator(gcfg, qcfg, num_classes).to(device).eval()
    quantizer = None if gcfg.layout == "raster" else ProductQuantizer(qcfg).to(device).eval()
    return generator, quantizer


def _sampler(generator: Generator, quantizer: ProductQuantizer | None, batch: int, device: torch.device | str,
             seed: int = 0, compiled: bool = False):
    """A no-argument call drawing one batch of token indices with the KV cache (sampling settings and
    guidance from the generator's config; guidance runs the batch as 2B), compiled where `compiled`
    (`Generator.sample`: the first call of a batch size and precision compiles)."""
    labels_B = torch.zeros(batch, dtype=torch.long, device=device)
    rng = torch.Generator(device).manual_seed(seed)
    return lambda: generator.sample(labels_B, quantizer, generator=rng, compiled=compiled)


def sample_flops(gcfg: GeneratorConfig, qcfg: QuantizerConfig, batch: int = 1, num_classes: int = PAPER_CLASSES,
                 device: torch.device | str = "cpu") -> int:
    """FLOPs of one `Generator.sample` call (KV cache, CFG at the config's scale) for `batch` labels."""
    generator, quantizer = build_generator(gcfg, qcfg, num_classes, device)
    return count_flops(_sampler(generator, quantizer, batch, device))


def depth_extended_flops(gcfg: GeneratorConfig, qcfg: QuantizerConfig, batch: int = 1,
                         num_classes: int = PAPER_CLASSES, device: torch.device | str = "cpu") -> int:
    """`sample_flops` of a deep generator from counts at depth 1 and 2: F(D) = F(1) + (D − 1)·(F(2) − F(1)).

    Exact, since every block does the same work on the same shapes; it avoids building and running
    all D blocks (the paper's generators have ≈0.3 G parameters in their blocks).
    """
    f1, f2 = (sample_flops(dataclasses.replace(gcfg, depth=d), qcfg, batch, num_classes, device) for d in (1, 2))
    return f1 + (gcfg.depth - 1) * (f2 - f1)


# ----------------------------------------------------------------------------- sampling latency and FLOPs

def sampling_benchmark(cfg: Config, warmup: int = 3, repeats: int = 15, device: torch.device | str = "cpu",
                       num_classes: int = 10, seed: int = 0, compiled: bool = False
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Batch-1 sampling latency and FLOPs per image of the four `generator_setups`, in one process: (summary, one
    row per set-up; rounds, one row per set-up and timing round, which pairs the set-ups round by round).
    The set-up's name is in column `layout` (Table 6's key) and its generator layout in column `mode`.

    Latency: `Generator.sample` (KV cache on, CFG at the profile's cfg_scale so the batch runs as 2, the
    profile's top-k / top-p; `compiled`: the compiled sampler, compiled in the first, untimed call) of the
    four set-ups timed `interleaved`, warm-up excluded; FLOPs: one sample call under the flop counter.
    `*_ratio` columns divide by the folded row of this run.
    """
    device = torch.device(device)
    rows: list[dict[str, Any]] = []
    samplers = {}
    for name, (gcfg, qcfg) in generator_setups(cfg).items():
        generator, quantizer = build_generator(gcfg, qcfg, num_classes, device, seed)
        samplers[name] = _sampler(generator, quantizer, 1, device, seed, compiled)
        params = parameter_counts(generator)
        rows.append(dict(
            layout=name, mode=gcfg.layout, branches=qcfg.branches, scales=" ".join(map(str, qcfg.scales)),
            steps=len(generator.steps), positions=generator.length,
            tokens=generator.length * generator.tokens_per_position,
            params_blocks=params["blocks"], params_total=params["total"],
            flops=count_flops(_sampler(generator, quantizer, 1, device, seed)),  # eager: the same arithmetic
            first_call_s=_first_calls({name: samplers[name]}, device)[name]))
    times = interleaved(samplers, warmup, repeats, device)
    for row in rows:
        lat = spread(times[row["layout"]])
        row |= dict(latency_s=lat["median"], latency_p10_s=lat["p10"], latency_p90_s=lat["p90"])
    df = pd.DataFrame(rows)
    for col, ratio in (("steps", "steps_ratio"), ("positions", "positions_ratio"),
                       ("latency_s", "latency_ratio"), ("flops", "flops_ratio")):
        df[ratio] = df[col] / df.loc[df.layout == "folded", col].item()
    df["cfg_scale"], df["compiled"] = cfg.generator.cfg_scale, compiled
    df["repeats"], df["warmup"], df["device"] = repeats, warmup, device_name(device)
    df["flops_counted"] = FLOPS_NOTE
    rounds = pd.DataFrame([{"layout": name, "round": r, "latency_s": t, "positions": row["positions"],
                            "device": device_name(device)}
                           for row in rows for name in [row["layout"]] for r, t in enumerate(times[name])])
    return df, rounds


ATTENTION_LIMIT = 1.10  # L2-norm attention may make batch-1 sampling at most this much slower (issue 29)


def attention_benchmark(cfg: Config, warmup: int = 3, repeats: int = 15, device: torch.device | str = "cpu",
                        num_classes: int = 10, seed: int = 0) -> pd.DataFrame:
    """Batch-1 folded sampling (KV cache, CFG) with each `generator.attention`, eager and through the compiled
    sampler, timed in interleaved rounds of one process: one row per attention and sampler with its latency
    and, per round, its time over scaled-dot attention's on the same sampler (`slowdown`, median [p10, p90])
    against `ATTENTION_LIMIT`."""
    device = torch.device(device)
    gcfg, qcfg = generator_setups(cfg)["folded"]
    samplers = {}
    for attention in ("scaled_dot", "l2_norm"):
        generator, quantizer = build_generator(dataclasses.replace(gcfg, attention=attention), qcfg, num_classes,
                                               device, seed)
        for sampler in ("eager", "compiled"):
            samplers[f"{attention} {sampler}"] = _sampler(generator, quantizer, 1, device, seed, sampler == "compiled")
    _first_calls(samplers, device)  # the compiled ones compile here, untimed
    times = interleaved(samplers, warmup, repeats, device)
    rows = []
    for name, ts in times.items():
        attention, sampler = name.split()
        lat, slow = spread(ts), spread([t / b for t, b in zip(ts, times[f"scaled_dot {sampler}"])])
        rows.append({"attention": attention, "sampler": sampler,
                     "latency_s": lat["median"], "slowdown": slow["median"], "slowdown_p10": slow["p10"],
                     "slowdown_p90": slow["p90"], "within_limit": slow["median"] <= ATTENTION_LIMIT})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the paper's configurations

def paper_flops(batch: int = 1, device: torch.device | str = "cpu") -> pd.DataFrame:
    """FLOPs per image of sampling with the paper's ImageFolder and VAR d16 generators, both with CFG.

    Counted by the flop counter on `device` with random weights, at depth 1 and 2 and extended to the
    full depth (`depth_extended_flops`, exact). Columns include `flops_vs_VAR` (ImageFolder / VAR: the
    ratio that `tables.TABLE6_PAPER`'s claim judges).
    """
    rows = []
    for name, (gcfg, qcfg) in PAPER_MODELS.items():
        flops = depth_extended_flops(gcfg, qcfg, batch, PAPER_CLASSES, device)
        with torch.device("meta"):  # shapes only: parameter counts without allocating weights
            params = parameter_counts(Generator(gcfg, qcfg, PAPER_CLASSES))
        positions = config.token_count(qcfg.scales)
        rows.append(dict(
            model=name, depth=gcfg.depth, width=gcfg.width, heads=gcfg.heads, branches=qcfg.branches,
            codebook=qcfg.codebook_size, scales=" ".join(map(str, qcfg.scales)), steps=len(qcfg.scales),
            positions=positions, tokens=positions * qcfg.branches, params_blocks=params["blocks"],
            cfg_scale=gcfg.cfg_scale, flops_per_image=flops / batch))
    df = pd.DataFrame(rows)
    df["gflops_per_image"] = df.flops_per_image / 1e9
    df["flops_vs_VAR"] = df.flops_per_image / df.loc[df.model == "VAR d16", "flops_per_image"].item()
    df["flops_counted"] = FLOPS_NOTE + " Counted at depth 1 and 2 and extended linearly to the full depth (exact)."
    return df


# ----------------------------------------------------------------------------- tokenizer throughput

def _random_tokenizer_objective(cfg: Config, device: torch.device, seed: int):
    """The profile's TokenizerObjective with a random encoder and frozen networks of random weights."""
    torch.manual_seed(seed)
    cfg = config.apply_overrides(cfg, {"tokenizer.encoder_init": "random"})
    return pipeline.tokenizer_objective(cfg, trained=False).to(device)


def tokenizer_step(cfg: Config, tcfg: TrainConfig, device: torch.device, batch: int, seed: int = 0
                    ) -> Callable[[], object]:
    """A no-argument `train.train_step` of the profile's tokenizer objective as `tcfg` runs it, at step
    `disc_start` (adversarial terms on), on a fixed batch of random images."""
    objective = _random_tokenizer_objective(cfg, device, seed)
    images = torch.rand(batch, 3, cfg.data.resolution, cfg.data.resolution, device=device) * 2 - 1
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    opt = build_optimisation(objective, tcfg, device)
    objective.train()
    model = compiled(objective, tcfg)
    return lambda: train_step(model, opt, [images, labels], cfg.tokenizer.disc_start, tcfg, device)


def tokenizer_benchmark(cfg: Config, device: torch.device | str = "cpu", batch: int | None = None,
                        warmup: int = 1, repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """Encode, decode and training throughput (images/s) of a randomly initialised tokenizer of the profile.

    The training step is the trainer's own `train.train_step` on the profile's `TokenizerObjective`
    (every phase forward, backward, grad clip and AdamW, then the EMA) under the profile's `amp`, at step
    `disc_start` so the adversarial terms are on, with frozen networks of random weights
    (`pipeline.frozen_vit(trained=False)`). batch: images per call (default: the profile's training batch).
    """
    batch = batch or cfg.train_tokenizer.batch_size
    device = torch.device(device)
    tokenizer = _random_tokenizer_objective(cfg, device, seed).tokenizer.eval()
    images = torch.rand(batch, 3, cfg.data.resolution, cfg.data.resolution, device=device) * 2 - 1
    indices = tokenizer.encode(images)
    times = interleaved({"encode": lambda: tokenizer.encode(images), "decode": lambda: tokenizer.decode(indices),
                         "train step": tokenizer_step(cfg, cfg.train_tokenizer, device, batch, seed)},
                        warmup, repeats, device)
    timings = {stage: spread(ts) for stage, ts in times.items()}
    notes = {"encode": "tokenizer.encode (eval, no grad)", "decode": "tokenizer.decode (eval, no grad)",
             "train step": f"train.train_step ({path_name(cfg.train_tokenizer)}): every phase forward, backward, "
                           "grad clip, AdamW, EMA; adversarial on; frozen networks with random weights"}
    return pd.DataFrame([dict(stage=stage, batch=batch, median_s=t["median"], images_per_s=batch / t["median"],
                              p10_s=t["p10"], p90_s=t["p90"], repeats=repeats, device=device_name(device),
                              what=notes[stage])
                         for stage, t in timings.items()])


# ----------------------------------------------------------------------------- fast path vs float32 eager

FP32 = TrainConfig(amp="off", compile=False)  # the float32 eager path every ratio is taken against
SAMPLING_BATCH = 64


def path_name(tcfg: TrainConfig) -> str:
    """How a training step runs: "fp32 eager", "bf16", "bf16 + compile", …"""
    precision = {"off": "fp32", "bf16": "bf16", "auto": "amp auto"}[tcfg.amp]
    return f"{precision} + compile" if tcfg.compile else f"{precision} eager" if tcfg.amp == "off" else precision


def _paths(tcfg: TrainConfig) -> dict[str, TrainConfig]:
    """The float32 eager path and the profile's adopted one (`amp`, `compile`), by name."""
    return {path_name(FP32): dataclasses.replace(tcfg, amp=FP32.amp, compile=FP32.compile),
            f"adopted: {path_name(tcfg)}": tcfg}


def generator_step(cfg: Config, tcfg: TrainConfig, device: torch.device, seed: int = 0
                    ) -> tuple[Callable[[], object], int]:
    """A no-argument `train.train_step` of the profile's generator (random weights, random tokens) as `tcfg`
    runs it, and the tokens it trains on per step."""
    torch.manual_seed(seed)
    quantizer = ProductQuantizer(cfg.quantizer).to(device)
    generator = Generator(cfg.generator, cfg.quantizer, num_classes=10).to(device)
    objective = GeneratorObjective(generator, quantizer)
    B, T = tcfg.batch_size, cfg.quantizer.branches * cfg.tokens_per_branch
    tokens = torch.randint(0, cfg.quantizer.codebook_size, (B, T), device=device)
    labels = torch.randint(0, 10, (B,), device=device)
    opt = build_optimisation(objective, tcfg, device)
    objective.train()
    model = compiled(objective, tcfg)
    return lambda: train_step(model, opt, [tokens, labels], tcfg.warmup_steps, tcfg, device), B * T


def _under(amp: str, model: torch.nn.Module, device: torch.device, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` as an evaluation call: without gradients, under `train.forward_precision(model, device, amp)`."""
    def run():
        with torch.no_grad(), forward_precision(model, device, amp):
            return fn()
    return run


def _reconstruction(cfg: Config, amp: str, device: torch.device, seed: int = 0) -> Callable[[], object]:
    """Encode + decode of one evaluation batch (`evaluation.batch_size` random images) under `amp`."""
    tokenizer = _random_tokenizer_objective(cfg, device, seed).tokenizer.eval()
    images = torch.rand(cfg.evaluation.batch_size, 3, cfg.data.resolution, cfg.data.resolution, device=device) * 2 - 1
    return _under(amp, tokenizer, device, lambda: tokenizer.reconstruct(images))


def _study_evaluation(cfg: Config, amp: str, cached: bool, device: torch.device, seed: int = 0
                      ) -> Callable[[], object]:
    """The evaluation of one study variant, as `study.tokenizer_row` runs it once both models are trained:
    reconstruction metrics (`evaluation.num_recon` val images), then `study.num_samples` samples scored
    against the train split; reconstruction and sampling under `amp`, what every variant shares (the splits'
    features, the val images and their perceptual features) read from their caches (`cached`) or computed
    anew. A random tokenizer and generator, the profile's own evaluator and data."""
    cfg = config.apply_overrides(cfg, {"evaluation.amp": amp})
    tokenizer = _random_tokenizer_objective(cfg, device, seed).tokenizer.eval()
    generator = Generator(cfg.generator, cfg.quantizer, pipeline.class_count(cfg)).to(device).eval()
    network = pipeline.metric_network(cfg)

    def run():
        pipeline.evaluate_tokenizer(cfg, tokenizer, network, cached=cached)
        pipeline.evaluate_generator(cfg, generator, tokenizer, network, cfg.study.num_samples, seed,
                                    train_images=None if cached else pipeline.reference_set(cfg))
    return run


def _first_calls(fns: dict[str, Callable[[], object]], device: torch.device) -> dict[str, float]:
    """Each function called once, timed: the warm-up a run pays once (compilation included)."""
    return {name: interleaved({name: fn}, 0, 1, device)[name][0] for name, fn in fns.items()}


def _ratio_rows(workload: str, unit: str, batch: int, per_call: float, times: dict[str, list[float]],
                first: dict[str, float] | None = None, calls: int | None = None) -> list[dict]:
    """One row per variant of a workload (the keys of `times`, each variant's timed calls): time spread,
    throughput (`per_call` units per call) and the per-round speed-up over the first (float32 eager)
    variant with its spread. With `first` (each variant's first call, timed) and `calls` (the calls of the
    profile's run): `run_speedup`, the run's time in float32 eager over its time on the variant, each with
    its first call (compilation included) in place of one median call."""
    base = times[next(iter(times))]

    def run_time(variant: str, calls: int, first: dict[str, float]) -> float:
        return (calls - 1) * spread(times[variant])["median"] + first[variant]

    rows = []
    for variant, ts in times.items():
        t, up = spread(ts), spread([b / v for b, v in zip(base, ts)])
        row = dict(workload=workload, variant=variant, batch=batch, median_s=t["median"],
                   p10_s=t["p10"], p90_s=t["p90"], unit=unit, per_s=per_call / t["median"],
                   speedup=up["median"], speedup_p10=up["p10"], speedup_p90=up["p90"])
        if first is not None:
            row["first_call_s"] = first[variant]
        if calls is not None and first is not None:
            row |= dict(run_calls=calls, run_speedup=run_time(next(iter(times)), calls, first)
                        / run_time(variant, calls, first))
        rows.append(row)
    return rows


def _training_rows(workload: str, unit: str, fns: dict[str, Callable[[], object]], per_call: float,
                   tcfg: TrainConfig, warmup: int, repeats: int, device: torch.device) -> list[dict]:
    """`_ratio_rows` of training steps: first calls timed, then the steps interleaved."""
    first = _first_calls(fns, device)
    times = interleaved(fns, warmup, repeats, device)
    return _ratio_rows(workload, unit, tcfg.batch_size, per_call, times, first, tcfg.steps)


def speed_benchmark(cfg: Config, warmup: int = 2, repeats: int = 10, device: torch.device | str = "cpu",
                    seed: int = 0) -> pd.DataFrame:
    """The profile's adopted paths against float32 eager, each workload timed `interleaved` over its variants.

    Training: the tokenizer's and the generator's steps (img/s, tokens/s) as the profile trains them
    (`amp`, `compile`), with each variant's first call timed and the speed-up over the profile's whole run
    with it (`run_speedup`: compilation counts against the gain). Evaluation in float32 against bf16
    autocast, the adopted path where `evaluation.amp` says bf16 and a candidate otherwise: reconstruction of
    one evaluation batch (img/s); the evaluation of one study variant (`_study_evaluation`: float32 with the
    splits' features computed anew against the adopted path, and the bf16 candidate; a fifth of the rounds,
    since one call takes the better part of a minute on the cpu profile); batch-1 sampling latency of the
    four `generator_setups`, each also through the compiled sampler under bf16 (`evaluation.compile_sampler`, adopted
    or a candidate; its first call, which compiles, timed apart), all twelve variants in one round-robin;
    and batch-64 folded sampling (img/s).
    `speedup` = the first variant's time / variant time, per round (median, p10, p90); 1 for the first row.
    Random weights throughout (speed depends on shapes only), but the study evaluation reads the profile's
    data and evaluator (`make data`).
    """
    device = torch.device(device)
    rows = []

    announce("tokenizer train step")
    paths = _paths(cfg.train_tokenizer)
    B = cfg.train_tokenizer.batch_size
    fns = {v: tokenizer_step(cfg, t, device, B, seed) for v, t in paths.items()}
    rows += _training_rows("tokenizer train step", "img/s", fns, B, cfg.train_tokenizer, warmup, repeats, device)

    announce("generator train step")
    paths = _paths(cfg.train_generator)
    steps = {v: generator_step(cfg, t, device, seed) for v, t in paths.items()}
    rows += _training_rows("generator train step", "tokens/s", {v: fn for v, (fn, _) in steps.items()},
                           next(iter(steps.values()))[1], cfg.train_generator, warmup, repeats, device)

    ev = cfg.evaluation.amp
    adopted = uses_bf16(device, ev)
    bf16 = "adopted: bf16 (evaluation.amp)" if adopted else "bf16 (candidate, not adopted)"
    amps = {path_name(FP32): FP32.amp, bf16: "bf16"}
    B = cfg.evaluation.batch_size
    announce("reconstruction")
    times = interleaved({v: _reconstruction(cfg, a, device, seed) for v, a in amps.items()}, warmup, repeats, device)
    rows += _ratio_rows("reconstruction (encode + decode)", "img/s", B, B, times)

    variants = {path_name(FP32) + ", features computed anew": (FP32.amp, False),
                f"adopted: {'bf16' if adopted else path_name(FP32)}, features cached": (ev, True)}
    if not adopted:
        variants[bf16 + ", features cached"] = ("bf16", True)
    announce("study evaluation")
    times = interleaved({v: _study_evaluation(cfg, a, c, device, seed) for v, (a, c) in variants.items()},
                        min(1, warmup), max(1, repeats // 5), device)
    rows += _ratio_rows("study evaluation (rFD + gFD)", "variants/s", 1, 1, times)

    sampler_variants = {v: (a, False) for v, a in amps.items()} | {
        ("adopted: bf16 + compiled sampler (evaluation.compile_sampler)" if cfg.evaluation.compile_sampler
         else "bf16 + compiled sampler (candidate, not adopted)"): ("bf16", True)}
    announce("sampling batch 1")
    samplers, built = {}, {}
    for name, (gcfg, qcfg) in generator_setups(cfg).items():
        generator, quantizer = build_generator(gcfg, qcfg, 10, device, seed)
        for v, (a, c) in sampler_variants.items():
            samplers[f"{name} | {v}"] = _under(a, generator, device, _sampler(generator, quantizer, 1, device, seed, c))
        built[name] = generator, quantizer
    first = _first_calls(samplers, device)
    times = interleaved(samplers, warmup, repeats, device)
    for name in built:
        rows += _ratio_rows(f"sampling batch 1, {name}", "img/s", 1, 1,
                            {v: times[f"{name} | {v}"] for v in sampler_variants},
                            {v: first[f"{name} | {v}"] for v in sampler_variants})

    announce(f"sampling batch {SAMPLING_BATCH}")
    generator, quantizer = built["folded"]
    fns = {v: _under(a, generator, device, _sampler(generator, quantizer, SAMPLING_BATCH, device, seed))
           for v, a in amps.items()}
    times = interleaved(fns, max(1, warmup // 2), max(1, repeats // 2), device)
    rows += _ratio_rows(f"sampling batch {SAMPLING_BATCH}, folded", "img/s", SAMPLING_BATCH, SAMPLING_BATCH, times)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- entry point

def announce(workload: str) -> None:
    """Say on stderr which workload a benchmark times now (stdout keeps the tables)."""
    print(f"bench: {workload} …", file=sys.stderr, flush=True)


def main(cfg: Config, quick: bool = False) -> None:
    """Print the benchmark tables of a config on its device, headed by the machine they ran on
    (`python -m imagefolder bench --profile P [--quick] [overrides]`; `--quick`: one round, no warm-up). Each
    workload is announced on stderr as it starts; torch's own log warnings (inductor's, which name local
    paths) are silenced, its errors kept."""
    torch._logging.set_logs(all=logging.ERROR)
    device = str(pipeline.device_of(cfg))
    warmup, repeats = QUICK_REPEATS if quick else REPEATS.get(cfg.profile, DEFAULT_REPEATS)
    print(f"# imagefolder bench — profile {cfg.profile}, device {device_name(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.python_implementation()} {platform.python_version()}; "
          f"{warmup} warm-up + {repeats} timed rounds, variants interleaved")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 40,
                           "display.float_format", "{:.4g}".format):
        print("\n## Speed: the adopted paths vs float32 eager "
              "(speedup = fp32 time / time, per round: median [p10, p90])")
        print(speed_benchmark(cfg, warmup, repeats, device).to_string(index=False, na_rep=""))
        print("first_call_s: a variant's first step, compilation included (inductor's on-disk cache may make it "
              "warm); run_speedup: the profile's run of run_calls steps in fp32 eager over the same run on the "
              "variant, each with its first step")
        print("\n## Sampling, batch 1, KV cache, CFG (ratios to folded, same run)")
        announce("sampling latency and FLOPs of the four generator set-ups")
        print(sampling_benchmark(cfg, warmup, repeats, device)[0].drop(columns="flops_counted").to_string(index=False))
        print(f"FLOPs: {FLOPS_NOTE}")
        print("\n## Attention: L2-norm (the official VAR's) against scaled-dot, folded batch-1 sampling")
        announce("sampling latency by attention")
        print(attention_benchmark(cfg, warmup, repeats, device).to_string(index=False))
        print(f"slowdown: per round, the time over scaled-dot's on the same sampler; limit {ATTENTION_LIMIT:g}")
        print("\n## FLOPs per image of the paper's generators, both with CFG")
        announce("FLOPs of the paper's generators")
        paper = paper_flops(device=device)
        print(paper.drop(columns="flops_counted").to_string(index=False))
        print(claims.verdicts(tables.TABLE6_PAPER, paper))
        print("\n## Tokenizer throughput")
        announce("tokenizer throughput")
        throughput = tokenizer_benchmark(cfg, device, warmup=max(1, warmup), repeats=max(3, repeats // 2))
        print(throughput.to_string(index=False))
