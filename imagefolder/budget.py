"""The budget check: do the generation verdicts read at the study budget keep their direction with longer training?

For each generation claim of `CHECKED` (a comparison of two generators in `tables.CLAIMS`), both generators
are trained again, on the same study tokenizers and seeds (the first `study.budget_check_seeds` of
`study.seeds`), for `FACTORS[-1]` times the study generator's steps: one run per generator and seed, with its
own warm-up and cosine decay over the longer run. Its kept checkpoints at each of `FACTORS` times the study
steps are scored as a study generator is (`study.num_samples` samples, the sampling seed = the training seed).
So the 1× and 2× points are the long run before its learning rate has decayed, not the study generators.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd

from . import metrics, pipeline, study
from .config import Config
from .tables import CLAIMS, Claim

FACTORS = (1, 2, 4)  # the budgets scored, in multiples of the study generator's steps

# the generation claims checked, as (table, better row, worse row) of their `tables.Claim`
CHECKED = (
    ("table9_branch_settings", "one semantic, one detail", "two detail branches"),  # semantic: one vs none
    ("table9_branch_settings", "one semantic, one detail", "two semantic branches"),  # semantic: one vs all
    ("table3_rows1-2", "2", "1"),  # quantizer dropout
    ("table4_comparison", "ImageFolder", "VAR-style"),
    ("table4_comparison", "ImageFolder", "raster (LlamaGen-like)"),
    ("folded_vs_unfolded", "folded", "unfolded"),
)


def checked_claims() -> list[Claim]:
    """The `tables.CLAIMS` entries named in `CHECKED`, in its order; KeyError naming one that is missing."""
    found = {(c.table, c.better, c.worse): c for c in CLAIMS if isinstance(c, Claim)}
    missing = [k for k in CHECKED if k not in found]
    if missing:
        raise KeyError(f"budget.CHECKED names claims tables.CLAIMS does not hold: {missing}")
    return [found[k] for k in CHECKED]


def long_run(cfg: Config, overrides: dict, seed: int) -> Config:
    """The study variant `overrides` at `seed` with its generator trained `FACTORS[-1]`× the study steps,
    keeping a checkpoint at every multiple of the study steps (checkpointing names no run)."""
    steps = cfg.study.generator_steps
    longer = pipeline.run_of_length(cfg.train_generator, FACTORS[-1] * steps) | {
        "ckpt_every": steps, "keep_ckpts": FACTORS[-1]}
    return pipeline.variant(cfg, {"seed": seed} | overrides | {f"train_generator.{k}": v for k, v in longer.items()})


def seeds(cfg: Config) -> list[int]:
    return cfg.study.seeds[:cfg.study.budget_check_seeds]


def runs(cfg: Config) -> dict[str, Config]:
    """Every long run of the check, by what it is (for `plan`), each generator and seed once."""
    out: dict[str, Config] = {}
    for claim in checked_claims():
        for row in claim.rows:
            for seed in seeds(cfg):
                run = long_run(cfg, claim.row_overrides(cfg, row), seed)
                out.setdefault(f"{claim.table}: {row}, seed {seed}", run)
    return out


def check(cfg: Config, network: metrics.MetricNetwork) -> pd.DataFrame:
    """Train (or find) the long runs and score their checkpoints: one row per (claim, budget, seed) with the
    gFD of its `better` and `worse` generator (`metric` names the column), as the ledger reads it."""
    fd = study.metric_names(network)["FD"]
    scored: dict[tuple[str, int], float] = {}

    def gfd(run: Config, factor: int) -> float:
        path = pipeline.train_generator(run)
        step = factor * cfg.study.generator_steps
        key = (str(path), step)
        if key not in scored:
            device = pipeline.device_of(run)
            generator, tokenizer, _ = pipeline.load_generator(path, device, run)
            if step != run.train_generator.steps:
                generator = pipeline.generator_at(path, step, device, run)
            scored[key] = pipeline.evaluate_generator(run, generator, tokenizer, network, n=cfg.study.num_samples,
                                                      seed=run.seed)[fd]
        return scored[key]

    rows = []
    for claim in checked_claims():
        for seed in seeds(cfg):
            better, worse = (long_run(cfg, claim.row_overrides(cfg, r), seed) for r in claim.rows)
            for factor in FACTORS:
                rows.append({"claim": claim.text, "budget": factor, "seed": seed, "better": gfd(better, factor),
                             "worse": gfd(worse, factor), "metric": f"g{fd}",
                             "generator steps": factor * cfg.study.generator_steps})
    return pd.DataFrame(rows)


def figure(summary: pd.DataFrame):
    """The paired relative effect of each checked claim against the budget (`claims.budget_effects` of `check`'s
    rows): mean and 95 % interval over seeds, one panel per claim."""
    claims = list(dict.fromkeys(summary["claim"]))
    fig, axes = plt.subplots(1, len(claims), figsize=(2.6 * len(claims), 3), sharey=True, squeeze=False)
    for ax, claim in zip(axes[0], claims):
        part = summary[summary["claim"] == claim]
        ax.errorbar(part["budget"], part["mean"], yerr=[part["mean"] - part["low"], part["high"] - part["mean"]],
                    marker="o", capsize=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(FACTORS), [f"{f}×" for f in FACTORS])
        ax.set_title(textwrap.fill(claim, 28), fontsize=7)
        ax.set_xlabel("generator budget (× study)", fontsize=7)
    axes[0, 0].set_ylabel("effect ln(worse / better) of gFD\n(> 0: the claim's better side is better)", fontsize=7)
    fig.suptitle("Budget check: mean paired effect over seeds, 95 % t-interval", fontsize=9)
    fig.tight_layout()
    return fig
