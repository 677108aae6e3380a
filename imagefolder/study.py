"""Tables of variants: train each config of a paper table at one budget and collect its metrics.

A variant is a name and a dict of config overrides (a paper table's variants are its `tables.TableSpec`);
every variant of one table gets the same budget (`cfg.study`), and equal configs share their trained
models across notebooks (runs are named by a hash of the config).
"""
from __future__ import annotations

import time

import pandas as pd

from . import losses, metrics, pipeline, results, sample_classes
from .config import Config
from .generator import parameter_counts
from .tables import GENERATION_METRICS, TableSpec, paper_label
from .tokenizer import ImageFolderTokenizer

# the perceptual distance of `pipeline.evaluate_tokenizer`'s result is keyed by its network's name: one of these
PERCEPTUAL_KEYS = (losses.LPIPSLoss.name, losses.TeacherPerceptualLoss.name)


def metric_names(network: metrics.MetricNetwork) -> dict[str, str]:
    """{metric: its result key under `network`} for FD and `tables.GENERATION_METRICS` (e.g. 'IS' →
    'IS_evaluator'); a spec's column templates ("r{FD}", "{IS}") are formatted with it."""
    return {m: metrics.metric_key(m, network.name) for m in ("FD", *GENERATION_METRICS)}


def generation_columns(result: dict, network: metrics.MetricNetwork) -> dict:
    """The generation metrics of `result` (`pipeline.evaluate_generator`'s or `score_against_train`'s) but FD,
    keyed as `network` names them, in the order of `tables.GENERATION_METRICS`."""
    names = metric_names(network)
    return {names[m]: result[names[m]] for m in GENERATION_METRICS}


def tokenizer_row(cfg: Config, network: metrics.MetricNetwork, generator: bool) -> dict:
    """Metrics of the tokenizer of `cfg` (trained on demand) and, with `generator`, of its generator."""
    t0 = time.time()
    tok_path = pipeline.train_tokenizer(cfg)
    tokenizer, _ = pipeline.load_tokenizer(tok_path, pipeline.device_of(cfg))
    rec = pipeline.evaluate_tokenizer(cfg, tokenizer, network)
    fd = metric_names(network)["FD"]
    row = {"tokens/branch": cfg.tokens_per_branch, "branches": cfg.quantizer.branches,
           f"r{fd}": rec[fd], "PSNR": rec["PSNR"], "perceptual": rec[perceptual_key(rec)],
           "usage": min(rec["usage"]), "N_recon": rec["N"]}
    if generator:
        gen, tok, _ = pipeline.load_generator(pipeline.train_generator(cfg), pipeline.device_of(cfg), cfg)
        gm = pipeline.evaluate_generator(cfg, gen, tok, network, n=cfg.study.num_samples, seed=cfg.seed)
        row |= {f"g{fd}": gm[fd]} | generation_columns(gm, network) | {
            "N_gen": gm["N"], "#Para (blocks)": parameter_counts(gen)["blocks"], "AR positions": gen.length,
            "AR steps": len(gen.steps)}
    return row | {"seed": cfg.seed, "minutes": (time.time() - t0) / 60}


def real_baseline(cfg: Config, network: metrics.MetricNetwork, n: int | None = None,
                  tokenizer: ImageFolderTokenizer | None = None) -> dict:
    """The real-vs-real row: `n` val images (default `study.num_samples`; at most the split) scored as if
    generated, against train. With `tokenizer`, their reconstructions instead: the ceiling of a generator of
    its tokens, which can at best draw what the decoder draws."""
    val = pipeline.val_subset(cfg, n or cfg.study.num_samples)
    images = val.uint8_images()
    if tokenizer is not None:
        images = pipeline.reconstruct_all(tokenizer, images, cfg.evaluation.batch_size, amp=cfg.evaluation.amp)
    result = pipeline.score_against_train(cfg, images, network, val.labels)
    names = metric_names(network)
    return ({f"g{names['FD']}": result[names["FD"]]} | generation_columns(result, network)
            | {"N_gen": result["N"], "N_reference": result["N_reference"]})


MAIN_SAMPLING_SEEDS = (0, 1, 2)  # the main generator is scored once per sampling seed, and their mean reported
# the main generator's targets, on the mean over MAIN_SAMPLING_SEEDS (set for the cpu profile's evaluator): gFD at
# most, class consistency at least, recall at least this fraction of the ceiling (its tokenizer's reconstructions)
MAIN_TARGETS = {"FD": 12.0, "class_consistency": 0.75, "recall": 0.9}


def main_targets(main: dict, ceiling: dict, network: metrics.MetricNetwork) -> pd.DataFrame:
    """One row per `MAIN_TARGETS` entry: what it asks, the main generator's value (`main`: the mean over
    sampling seeds), the threshold and whether it is met; `ceiling` is `real_baseline` of the reconstructions."""
    names = metric_names(network)
    fd, cc, rec = names["FD"], names["class_consistency"], names["recall"]
    recall_floor = MAIN_TARGETS["recall"] * ceiling[rec]
    rows = [(f"g{fd} at most {MAIN_TARGETS['FD']:g}", main[fd], MAIN_TARGETS["FD"], main[fd] <= MAIN_TARGETS["FD"]),
            (f"{cc} at least {MAIN_TARGETS['class_consistency']:.0%}", main[cc], MAIN_TARGETS["class_consistency"],
             main[cc] >= MAIN_TARGETS["class_consistency"]),
            (f"{rec} at least {MAIN_TARGETS['recall']:g} × the reconstructions' {ceiling[rec]:.3g}", main[rec],
             recall_floor, main[rec] >= recall_floor)]
    return pd.DataFrame(rows, columns=["target", "ours", "threshold", "met"])


def sample_sizes(df: pd.DataFrame, cfg: Config) -> str:
    """The N of a table's metrics, for its caption: generated samples (g-metrics, with their class mix),
    val images (r-metrics)."""
    parts = []
    if "N_gen" in df.columns and df["N_gen"].notna().any():
        parts.append(f"{sample_classes.samples_note(cfg, int(df['N_gen'].dropna().iloc[0]))} for generation metrics")
    if "N_recon" in df.columns and df["N_recon"].notna().any():
        parts.append(f"{int(df['N_recon'].dropna().iloc[0])} val images for reconstruction metrics")
    return ", ".join(parts)


def perceptual_key(rec: dict) -> str:
    """The key of the perceptual distance in `pipeline.evaluate_tokenizer`'s result `rec` (`PERCEPTUAL_KEYS`)."""
    keys = [k for k in PERCEPTUAL_KEYS if k in rec]
    if len(keys) != 1:
        raise KeyError(f"expected one perceptual distance of {PERCEPTUAL_KEYS} in {sorted(rec)}")
    return keys[0]


def run_table(cfg: Config, variants: dict[str, dict], network: metrics.MetricNetwork, *,
              generator: bool = False, seeds: list[int] | None = None, study: bool = True) -> pd.DataFrame:
    """One row per (variant, seed): `cfg` with the variant's overrides, at the study budget when `study`."""
    rows = []
    for seed in seeds or [cfg.seed]:
        for name, overrides in variants.items():
            vcfg = pipeline.variant(cfg, {"seed": seed} | overrides, study=study)
            rows.append({"variant": name} | tokenizer_row(vcfg, network, generator))
    return pd.DataFrame(rows)


def _ours(templates: dict, network: metrics.MetricNetwork) -> dict:
    """`templates` ({"g{FD}": v}) keyed by our column names under `network` ({"gFD_evaluator": v})."""
    names = metric_names(network)
    return {c.format(**names): v for c, v in templates.items()}


def paper_pairs(spec: TableSpec, network: metrics.MetricNetwork) -> dict[str, str]:
    """{our column: the header of the paper's column beside it} for `spec` under `network`'s metric names."""
    theirs = dict(spec.columns) | {c: name for c, (name, _) in spec.facts.items()}
    return {c: paper_label(t) for c, t in _ours(theirs, network).items()}


def with_paper(spec: TableSpec, df: pd.DataFrame, network: metrics.MetricNetwork) -> pd.DataFrame:
    """`df` with the paper's setting of each row first, when the spec has settings (rows in the order of
    `spec.variants`), and the paper's value beside each of the spec's columns, headed by what it is
    (`paper_pairs`): from the paper's table, or from its text (`spec.facts`)."""
    df = df.copy()
    if spec.settings:
        df.insert(0, spec.setting_column, list(spec.settings))
    if spec.paper is None:  # no paper table to set beside ours
        return df
    where = ([(spec.paper, s) for s in spec.settings] if spec.settings
             else [spec.paper_row(str(row)) for row in df[spec.key]])
    sources = [w[0] if w else spec.paper for w in where]  # a row's paper row may sit in another table (aliases)
    facts = _ours({c: stated for c, (_, stated) in spec.facts.items()}, network)
    parts = [results.with_paper_columns(df.loc[[s == table for s in sources]], table,
                                        [w[1] if w else None for w, s in zip(where, sources) if s == table],
                                        _ours(spec.columns, network), names=paper_pairs(spec, network),
                                        facts=facts if table == spec.paper else None)
             for table in dict.fromkeys(sources or [spec.paper])]
    return pd.concat(parts).loc[df.index]


def metric_columns(network: metrics.MetricNetwork) -> list[str]:
    """The per-run metric columns of `tokenizer_row` (reconstruction, then generation)."""
    names = metric_names(network)
    return [f"r{names['FD']}", "PSNR", f"g{names['FD']}"] + [names[m] for m in GENERATION_METRICS]


def seed_summary(runs: pd.DataFrame, network: metrics.MetricNetwork, by: str = "variant") -> pd.DataFrame:
    """Per row name `by`, in the runs' order: the mean over seeds of every numeric column but `seed`, and the
    sd beside each metric column (`metric_columns`) when there are several seeds."""
    numeric = [c for c in runs.select_dtypes("number").columns if c != "seed"]
    grouped = runs.groupby(by, sort=False)
    out = grouped[numeric].mean()
    if grouped.size().max() > 1:
        out = out.join(grouped[[c for c in metric_columns(network) if c in numeric]].std().add_suffix(" sd"))
    return out.reset_index()


def seeded_table(report: results.Report, cfg: Config, spec: TableSpec, network: metrics.MetricNetwork, *,
                 note: str | None = None, extra: list[dict] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run `spec`'s variants (with their generators where `spec.generator`) over `cfg.study.seeds` at the
    study budget and write both of its tables:
    `spec.runs`, one row per (variant, seed), which the ledger judges, and `spec.name`, the mean ± sd over
    seeds with what each row ran (`spec.describe`), the rows of `extra` (e.g. the full-budget models, named
    in the `spec.key` column) and the paper's number beside ours. Returns (runs, summary)."""
    if spec.runs is None:
        raise ValueError(f"TableSpec {spec.name!r} has no variants for seeded_table to run")
    seeds = cfg.study.seeds
    runs = run_table(cfg, spec.variants(cfg), network, generator=spec.generator, seeds=seeds).rename(
        columns={"variant": spec.key})
    if spec.settings:
        runs.insert(0, spec.setting_column, runs[spec.key].map(dict(zip(spec.variants(cfg), spec.settings))))
    n = sample_sizes(runs, cfg)
    budget = (f"{cfg.study.tokenizer_steps} tokenizer" + (f" + {cfg.study.generator_steps} generator" if spec.generator
                                                           else "") + " steps per run")
    report.table(runs, spec.runs, title=f"{spec.title}, one row per seed", network=network.describe(), n=n,
                 note=budget, show=False)
    summary = seed_summary(runs.drop(columns=[spec.setting_column], errors="ignore"), network, by=spec.key)
    if extra:
        summary = pd.concat([summary, pd.DataFrame(extra)], ignore_index=True)
    if spec.describe:
        summary.insert(1, "ours", summary[spec.key].map(spec.describe(cfg)))
    for i, column in enumerate(spec.paper_text, start=2):
        summary.insert(i, paper_label(column), [spec.paper_cell(k, column) for k in summary[spec.key].astype(str)])
    summary = with_paper(spec, summary, network)
    report.table(summary, spec.name, title=f"{spec.title}, mean ± sd over seeds {seeds}", network=network.describe(),
                 n=n, note="; ".join(filter(None, (budget, note))))
    return runs, summary


def seed_noise(runs: pd.DataFrame, network: metrics.MetricNetwork) -> pd.DataFrame:
    """Seed-to-seed spread at this budget: per metric, the sd over seeds of each variant, its mean and
    range over the variants, and the number of seeds (NaN with one seed)."""
    rows = []
    for col in (c for c in metric_columns(network) if c in runs.columns):
        sd = runs.groupby("variant", sort=False)[col].std()
        rows.append({"metric": col, "seed sd (mean over variants)": sd.mean(), "min": sd.min(), "max": sd.max(),
                     "seeds": runs["seed"].nunique(), "variants": len(sd)})
    return pd.DataFrame(rows)
