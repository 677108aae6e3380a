"""Benchmarks behind Table 6 (latency and FLOPs) and `make bench`.

- `sampling_benchmark`: batch-1 sampling latency (KV cache, CFG) and FLOPs per image of four token
  layouts at the profile's generator width and depth: folded (ImageFolder), unfolded, VAR-style and
  raster (next-token), measured in one run and given as ratios to folded.
- `paper_flops`: FLOPs per image of the paper's two generators, ImageFolder (d17, w1088, 286 folded
  positions) and VAR d16 (w1024, 680 positions), and which claim their ratio supports (≈1/4 or ≈1/2).
- `tokenizer_benchmark`: encode, decode and training throughput of the profile's tokenizer.

Every network has random weights: latency and FLOPs depend on shapes, not on training. FLOPs come from
`metrics.count_flops` (torch.utils.flop_counter, attention as described by `metrics.FLOPS_NOTE`).
"""
from __future__ import annotations

import dataclasses
import platform

import pandas as pd
import torch

from . import config, pipeline
from .config import Config, GeneratorConfig, QuantizerConfig
from .generator import Generator, parameter_counts
from .metrics import FLOPS_NOTE, count_flops, device_name, measure_latency
from .quantize import ProductQuantizer
from .tables import var_style
from .train import build_optimisation, train_step

# warm-up and timed repeats per profile (each repeat is one batch-1 sample of each of the four layouts)
REPEATS = {"smoke": (1, 3), "cpu": (3, 15)}
DEFAULT_REPEATS = (5, 30)

# The paper's two generators (§4.1 and VAR d16), each with its quantizer layout; ImageNet's 1000 classes.
PAPER_MODELS = {
    "ImageFolder": (GeneratorConfig(mode="folded", depth=17, width=1088, heads=17),
                    QuantizerConfig(scales=list(config.PAPER_SCALES), branches=2, codebook_size=4096)),
    "VAR d16": (GeneratorConfig(mode="folded", depth=16, width=1024, heads=16),
                QuantizerConfig(scales=list(config.VAR_SCALES), branches=1, codebook_size=4096)),
}
PAPER_CLASSES = 1000


# ----------------------------------------------------------------------------- generators

def layouts(cfg: Config) -> dict[str, tuple[GeneratorConfig, QuantizerConfig]]:
    """The four token layouts at the profile's generator width and depth: name → (generator, quantizer) config.

    folded / unfolded: the profile's quantizer (P branches, its scales); VAR-style: the quantizer of
    `tables.var_style` (one branch, VAR's schedule ending at the patch grid); raster: one branch, one scale
    (the patch grid), next-token.
    """
    g, q = cfg.generator, cfg.quantizer
    var_q = config.apply_overrides(cfg, var_style(cfg)).quantizer
    return {
        "folded": (dataclasses.replace(g, mode="folded"), q),
        "unfolded": (dataclasses.replace(g, mode="unfolded"), q),
        "VAR-style": (dataclasses.replace(g, mode="folded"), var_q),
        "raster": (dataclasses.replace(g, mode="raster"), dataclasses.replace(var_q, scales=[cfg.patch_grid])),
    }


def build_generator(gcfg: GeneratorConfig, qcfg: QuantizerConfig, num_classes: int, device: torch.device | str,
                    seed: int = 0) -> tuple[Generator, ProductQuantizer | None]:
    """A randomly initialised generator (eval mode) and, except in raster mode, a quantizer with random codebooks."""
    torch.manual_seed(seed)
    generator = Generator(gcfg, qcfg, num_classes).to(device).eval()
    quantizer = None if gcfg.mode == "raster" else ProductQuantizer(qcfg).to(device).eval()
    return generator, quantizer


def _sampler(generator: Generator, quantizer: ProductQuantizer | None, batch: int, device: torch.device | str,
             seed: int = 0):
    """A no-argument call drawing one batch of token indices with the KV cache (sampling settings and
    guidance from the generator's config; guidance runs the batch as 2B)."""
    labels_B = torch.zeros(batch, dtype=torch.long, device=device)
    rng = torch.Generator(device).manual_seed(seed)
    return lambda: generator.sample(labels_B, quantizer, generator=rng, use_cache=True)


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
                       num_classes: int = 10, seed: int = 0) -> pd.DataFrame:
    """Batch-1 sampling latency and FLOPs per image of the four `layouts`, one row each, in one run.

    Latency: `metrics.measure_latency` of `Generator.sample` (KV cache on, CFG at the profile's
    cfg_scale so the batch runs as 2, the profile's top-k / top-p), warm-up excluded; FLOPs: one
    sample call under the flop counter. `*_ratio` columns divide by the folded row of this run.
    """
    rows = []
    for name, (gcfg, qcfg) in layouts(cfg).items():
        generator, quantizer = build_generator(gcfg, qcfg, num_classes, device, seed)
        sample = _sampler(generator, quantizer, 1, device, seed)
        lat = measure_latency(sample, warmup=warmup, repeats=repeats, device=device)
        params = parameter_counts(generator)
        rows.append(dict(
            layout=name, mode=gcfg.mode, branches=qcfg.branches, scales=" ".join(map(str, qcfg.scales)),
            steps=len(generator.steps), positions=generator.length,
            tokens=generator.length * generator.tokens_per_position,
            params_blocks=params["blocks"], params_total=params["total"],
            latency_s=lat["median"], latency_p10_s=lat["p10"], latency_p90_s=lat["p90"],
            flops=count_flops(sample)))
    df = pd.DataFrame(rows)
    for col, ratio in (("steps", "steps_ratio"), ("positions", "positions_ratio"),
                       ("latency_s", "latency_ratio"), ("flops", "flops_ratio")):
        df[ratio] = df[col] / df.loc[df.layout == "folded", col].item()
    df["cfg_scale"] = cfg.generator.cfg_scale
    df["repeats"], df["warmup"], df["device"] = repeats, warmup, device_name(device)
    df["flops_counted"] = FLOPS_NOTE
    return df


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

def tokenizer_benchmark(cfg: Config, device: torch.device | str = "cpu", batch: int | None = None,
                        warmup: int = 1, repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """Encode, decode and training throughput (images/s) of a randomly initialised tokenizer of the profile.

    The training step is the trainer's own `train.train_step` on the profile's `TokenizerObjective`
    (every phase forward, backward, grad clip and AdamW, then the EMA), at step `disc_start` so the
    adversarial terms are on, with frozen networks of random weights (`pipeline.frozen_vit(trained=False)`).
    batch: images per call (default: the profile's tokenizer training batch).
    """
    cfg = config.apply_overrides(cfg, {"tokenizer.encoder_init": "random"})
    batch = batch or cfg.train_tokenizer.batch_size
    device = torch.device(device)
    torch.manual_seed(seed)
    objective = pipeline.tokenizer_objective(cfg, trained=False).to(device)
    tokenizer = objective.tokenizer
    images = torch.rand(batch, 3, cfg.data.resolution, cfg.data.resolution, device=device) * 2 - 1
    labels = torch.zeros(batch, dtype=torch.long, device=device)

    tokenizer.eval()
    indices = tokenizer.encode(images)
    timings = {"encode": measure_latency(lambda: tokenizer.encode(images), warmup, repeats, device),
               "decode": measure_latency(lambda: tokenizer.decode(indices), warmup, repeats, device)}

    tcfg, step = cfg.train_tokenizer, cfg.tokenizer.disc_start
    opt = build_optimisation(objective, tcfg, device)
    objective.train()
    timings["train step"] = measure_latency(lambda: train_step(objective, opt, [images, labels], step, tcfg, device),
                                            warmup, repeats, device)
    notes = {"encode": "tokenizer.encode (eval, no grad)", "decode": "tokenizer.decode (eval, no grad)",
             "train step": f"train.train_step, TokenizerObjective phases {objective.phases}: forward, backward, "
                           "grad clip, AdamW, EMA; adversarial on; frozen networks with random weights"}
    return pd.DataFrame([dict(stage=stage, batch=batch, median_s=t["median"], images_per_s=batch / t["median"],
                              p10_s=t["p10"], p90_s=t["p90"], repeats=repeats, device=t["device"], what=notes[stage])
                         for stage, t in timings.items()])


# ----------------------------------------------------------------------------- entry point

def main(cfg: Config) -> None:
    """Print the three benchmark tables of a config on its device, headed by the machine they ran on
    (`python -m imagefolder bench --profile P [overrides]`; `threads=1` is steadiest on a busy machine)."""
    device = str(pipeline.device_of(cfg))
    warmup, repeats = REPEATS.get(cfg.profile, DEFAULT_REPEATS)
    print(f"# imagefolder bench — profile {cfg.profile}, device {device_name(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.python_implementation()} {platform.python_version()}")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 40):
        print("\n## Sampling, batch 1, KV cache, CFG (ratios to folded, same run)")
        print(sampling_benchmark(cfg, warmup, repeats, device).drop(columns="flops_counted").to_string(index=False))
        print(f"FLOPs: {FLOPS_NOTE}")
        print("\n## FLOPs per image of the paper's generators, both with CFG")
        paper = paper_flops(device=device)
        print(paper.drop(columns="flops_counted").to_string(index=False))
        print(tables.TABLE6_PAPER.verdicts(paper))
        print("\n## Tokenizer throughput")
        print(tokenizer_benchmark(cfg, device).to_string(index=False))
