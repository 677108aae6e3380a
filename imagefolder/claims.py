"""Judging the paper's claims (`tables.CLAIMS`) against our written tables, and the claims ledger.

`assess(claim, df)` judges `claim` from the table `df`: a comparison pairs its two rows by seed (or timing
round) into per-seed relative effects and sets their interval against the paper's effect (`stats`); an
equivalence, a level, a ratio and a headline number have rules of their own; `VERDICT_RULE` states them all.
`judge` gives (ours, verdict), `verdicts(spec, df)` a notebook's closing bullets, `caveat` the confound a
verdict does not name. `write_ledger(profile, root)` reads `results/<profile>/tables/*.csv` — never typed
numbers; a table's per-seed companion (`TableSpec.runs`) where it was written — and writes `claims.md` and
the forest plot `figures/claims_forest.png`; `verdict_counts` / `counts_line` summarise the verdicts.
"""
from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import singledispatch
from pathlib import Path
from typing import Any

import pandas as pd

from . import config, stats
from .config import Config
from .results import atomic_write_text, results_dir, save_figure
from .tables import (
    CLAIMS,
    USAGE_LEVEL,
    Claim,
    ClaimBase,
    EquivalenceClaim,
    LevelClaim,
    RatioClaim,
    Reported,
    TableSpec,
    paper_number,
)

BUDGET_TABLE = "budget_check_runs"  # claim, budget (× the study generator budget), seed, better, worse, metric
FOREST = "claims_forest"  # the forest plot's figure name
BUDGET_RULE = ("**longer training** (where `tables/budget_check_runs.csv` exists): the mean relative effect of "
               "the claim's two generators trained to 1×, 2× and 4× the study budget on the same tokenizers and "
               "seeds; the ledger marks **same direction at 4×** when the mean at the largest budget has the sign "
               "of the study verdict's mean effect, else **changes at 4×**.")
VERDICT_RULE = f"""- **comparisons**: {stats.RULE} Latency is paired by interleaved timing round instead of seed.
  Effects are printed as the log ratio x and as % change, 100·(e^x − 1).
- **equivalences** ("about as well", "comparable"): {stats.EQUIVALENCE_RULE}
- **levels** (codebook usage, {USAGE_LEVEL:.0%} of the codebook's entries used on the val split for "its whole
  codebook"): {stats.LEVEL_RULE}
- **ratios** (FLOPs): **holds** if our ratio is nearer (in log) the paper's ratio than twice it, else
  **does not hold: nearer** twice the paper's ratio (named as a fraction).
- **reported**: a headline number with nothing at this scale to compare it with (one run).
- **not run**: a table the claim needs has not been written for this profile.
- {BUDGET_RULE}
- **caveat**: a confound the verdict does not name (computed from the profile and the judged table)."""
# the order verdict categories are counted and coloured in
CATEGORIES = (stats.HOLDS, stats.WEAKER, stats.NO_EFFECT, stats.INCONCLUSIVE, stats.DOES_NOT_SHOW, stats.REVERSED,
              stats.DOES_NOT_HOLD, stats.BELOW_LEVEL, "reported", "not run")


@dataclass(frozen=True)
class Judgement:
    """What the ledger says of one claim: our numbers, the verdict and, for comparisons, both effects."""

    ours: str
    verdict: str
    effect: stats.PairedGain | None = None  # our relative effect over seeds (rounds)
    paper: stats.PaperEffect | None = None  # the paper's, from its two numbers


def _metric_column(df: pd.DataFrame, prefix: str) -> str:
    """The column of a metric whatever network computed it (e.g. 'gFD_evaluator' or 'gFID')."""
    cols = [c for c in df.columns if c.startswith(prefix) and "(paper)" not in c and not c.endswith(" sd")]
    if not cols:
        raise KeyError(f"no column starting with {prefix!r} in {list(df.columns)}")
    return cols[0]


def _rows(df: pd.DataFrame, key: str, value: str) -> pd.DataFrame:
    rows = df[df[key].astype(str) == value]
    if rows.empty:
        raise KeyError(f"no row {key}={value!r}")
    return rows


def _row(df: pd.DataFrame, key: str, value: str) -> pd.Series:
    return _rows(df, key, value).iloc[0]


def _mean_sd(values: pd.Series) -> str:
    return f"{values.mean():.4g}" + (f" ± {values.std():.2g}" if len(values) > 1 else "")


def _compared(claim: Claim, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `claim.better` and `claim.worse` (within `claim.where`)."""
    if claim.where:
        df = df[df[claim.where[0]].astype(str) == claim.where[1]]
    a, b = (_rows(df, claim.by or claim.spec.key, r) for r in claim.rows)
    return a, b


def paper_effect(claim: Claim) -> stats.PaperEffect | None:
    """The paper's relative effect for `claim` from its two numbers (None where it states no pair)."""
    pair = claim.paper_pair
    return None if pair is None else stats.paper_effect(paper_number(pair[0]), paper_number(pair[1]), claim.higher)


@singledispatch
def assess(claim: ClaimBase, df: pd.DataFrame) -> Judgement:
    """The `Judgement` of `claim` from the written table `df` that judges it."""
    raise TypeError(f"no rule judges a {type(claim).__name__} (claim {claim.text!r})")


@assess.register
def _comparison(claim: Claim, df: pd.DataFrame) -> Judgement:
    """With a `seed` (or timing `round`) column, the two rows are paired by it (one effect per seed both ran),
    else each row is one observation; `stats.comparison_verdict` (or `equivalence_verdict`) gives the verdict."""
    col = _metric_column(df, claim.metric)
    a, b = _compared(claim, df)
    pair = next((c for c in ("seed", "round") if c in df.columns), None)
    if pair:
        pairs = a[[pair, col]].merge(b[[pair, col]], on=pair, suffixes=("_a", "_b"))
        va, vb = pairs[f"{col}_a"], pairs[f"{col}_b"]
    else:
        va, vb = a[col].iloc[:1], b[col].iloc[:1]
    gain = stats.paired_gain(stats.log_effects(va.tolist(), vb.tolist(), claim.higher))
    paper = paper_effect(claim)
    verdict = (stats.equivalence_verdict(gain) if isinstance(claim, EquivalenceClaim)
               else stats.comparison_verdict(gain, paper))
    key = claim.spec.key
    names = claim.labels or (str(a.iloc[0][key]), str(b.iloc[0][key]))
    label = col + (f", {claim.where[1]}" if claim.where else "")
    first_a, first_b = a.iloc[0], b.iloc[0]
    extra = [f"{c} {first_a[c]}" if first_a[c] == first_b[c] else f"{c} {first_a[c]} vs {first_b[c]}"
             for c in claim.context]
    unit = "rounds" if pair == "round" else "seeds"
    runs = f"over {gain.n} {unit}" if gain.interval else "one run each: no interval"
    ours = (f"{names[0]} {_mean_sd(va)} vs {names[1]} {_mean_sd(vb)} ({label}, "
            f"{'higher' if claim.higher else 'lower'} is better; {runs})")
    return Judgement("; ".join([ours] + extra), verdict, gain, paper)


@assess.register
def _level(claim: LevelClaim, df: pd.DataFrame) -> Judgement:
    """One gain per seed, value − level, under `stats.level_verdict`."""
    col = _metric_column(df, claim.metric)
    values = _rows(df, claim.spec.key, claim.row)[col]
    gain = stats.paired_gain((values - claim.level).tolist())
    ours = f"{claim.row} {_mean_sd(values)} ({col}, level {claim.level:.0%}; {gain.describe(name='value − level')})"
    return Judgement(ours, stats.level_verdict(gain))


@assess.register
def _reported(claim: Reported, df: pd.DataFrame) -> Judgement:
    """Our numbers, named as the tables name them, each ± its sd where the table gives one (over sampling seeds)."""
    row = _row(df, claim.spec.key, claim.row)
    cols = [_metric_column(df, m) for m in claim.metrics]
    sd = {c: f" ± {row[f'{c} sd']:.2g}" if f"{c} sd" in row and pd.notna(row[f"{c} sd"]) else "" for c in cols}
    return Judgement(", ".join(f"{c} {row[c]:.3g}{sd[c]}" for c in cols), "reported")


@assess.register
def _ratio(claim: RatioClaim, df: pd.DataFrame) -> Judgement:
    """Holds when our ratio is nearer (in log) the paper's than twice the paper's."""
    ratio = float(_row(df, claim.spec.key, claim.row)[claim.column])
    target = paper_number(claim.target)
    other = 2 * target
    nearer = abs(math.log(ratio / target)) < abs(math.log(ratio / other))
    return Judgement(claim.measured.format(ratio), "holds" if nearer else
                     f"does not hold: nearer {Fraction(other).limit_denominator(64)}")


def judge(claim: ClaimBase, df: pd.DataFrame) -> tuple[str, str]:
    """(ours, verdict) of `claim` from the written table `df` that judges it."""
    j = assess(claim, df)
    return j.ours, j.verdict


# ----------------------------------------------------------------------------- caveats

def _ks(claim: Claim, cfg: Config) -> list[int]:
    """The final scale K of each compared row (rows named by the paper's setting or by our variant)."""
    return [claim.row_overrides(cfg, r)["quantizer.scales"][-1] for r in claim.rows]


def _queries(claim: ClaimBase, df: pd.DataFrame, cfg: Config | None) -> str:
    """Whether the compared K×K query grids divide the patch grid (aligned cells) where others in the table do."""
    if cfg is None or not isinstance(claim, Claim):
        return "a K×K query grid that does not divide the patch grid straddles patches"
    g, ks = cfg.patch_grid, _ks(claim, cfg)
    every = sorted({v["quantizer.scales"][-1] for v in claim.spec.variants(cfg).values()})
    aligned = [k for k in every if g % k == 0]
    shown, listed = " vs ".join(f"K = {k}" for k in ks), ", ".join(map(str, aligned))
    divide, do = ("divides", "does") if len(aligned) == 1 else ("divide", "do")
    if len({g % k == 0 for k in ks}) > 1:
        return (f"only K = {listed} of the table's K = {', '.join(map(str, every))} {divide} the {g}×{g} patch "
                f"grid: {shown} also sets aligned against misaligned query cells")
    if aligned and not any(g % k == 0 for k in ks):
        return (f"neither of {shown} divides the {g}×{g} patch grid (only the table's K = {listed} {do}): both "
                "sides' query cells straddle patches")
    return ""


def _dims(claim: ClaimBase, df: pd.DataFrame, cfg: Config | None) -> str:
    if not isinstance(claim, Claim) or "dim" not in df.columns:
        return ""
    a, b = _compared(claim, df)
    names = claim.labels or claim.rows
    return f"the probe reads {a['dim'].iloc[0]:g} ({names[0]}) vs {b['dim'].iloc[0]:g} ({names[1]}) feature dimensions"


def _teacher(claim: ClaimBase, df: pd.DataFrame, cfg: Config | None) -> str:
    if cfg is None or cfg.tokenizer.teacher_network != "reference":
        return ""
    return (f"the semantic branch is pulled towards a teacher trained as a supervised {'/'.join(cfg.teacher.labels)} "
            "classifier of this data set, so the probe partly measures label distillation")


def _consistency(claim: ClaimBase, df: pd.DataFrame, cfg: Config | None) -> str:
    cols = [c for c in df.columns if c.startswith("class_consistency") and not c.endswith(" sd")]
    if not isinstance(claim, Claim) or not cols:
        return "study-budget generators: an early-training comparison"
    values = pd.concat([rows[cols[0]] for rows in _compared(claim, df)])
    return (f"study-budget generators with class consistency {values.min():.2f}–{values.max():.2f}; one that "
            "always drew the most frequent class would score about that class's share of the labels: where that "
            "is higher, this is an early-training comparison")


CAVEAT_FIELDS: dict[str, Callable[[ClaimBase, pd.DataFrame, Config | None], str]] = {
    "queries": _queries, "dims": _dims, "teacher": _teacher, "consistency": _consistency}


def caveat(claim: ClaimBase, df: pd.DataFrame, cfg: Config | None = None) -> str:
    """`claim.caveat` with its fields computed from `cfg` (the profile) and `df` (the judged table); the
    "; "-separated parts that come out empty are left out."""
    fields = {f for _, f, _, _ in string.Formatter().parse(claim.caveat) if f}
    text = claim.caveat.format(**{f: CAVEAT_FIELDS[f](claim, df, cfg) for f in fields})
    return "; ".join(p for p in text.split("; ") if p.strip())


# ----------------------------------------------------------------------------- longer training

def budget_effects(df: pd.DataFrame) -> pd.DataFrame:
    """One row per claim × budget of a budget-check table (`BUDGET_TABLE`'s columns): the mean relative effect
    of its `better` over its `worse` (in the claim's direction; lower is better for a claim not in CLAIMS),
    its 95 % interval and n."""
    higher = {c.text: c.higher for c in CLAIMS if isinstance(c, Claim)}
    rows = []
    for (text, budget), g in df.groupby(["claim", "budget"], sort=False):
        effects = stats.log_effects(g["better"].tolist(), g["worse"].tolist(), higher.get(str(text), False))
        gain = stats.paired_gain(effects)
        rows.append({"claim": text, "budget": budget, "mean": gain.mean, "low": gain.low, "high": gain.high,
                     "n": gain.n})
    return pd.DataFrame(rows, columns=["claim", "budget", "mean", "low", "high", "n"])


def budget_marks(effects: pd.DataFrame, study_means: dict[str, float]) -> dict[str, str]:
    """Per claim of `effects` (`budget_effects`) with a study mean: "same direction at B×" when the mean
    effect at the largest budget B has the sign of the study verdict's mean, else "changes at B×"."""
    marks = {}
    for text, g in effects.groupby("claim", sort=False):
        study = study_means.get(str(text), math.nan)
        if math.isnan(study):
            continue
        last = g.sort_values("budget").iloc[-1]
        same = math.copysign(1, last["mean"]) == math.copysign(1, study)
        marks[str(text)] = f"{'same direction' if same else 'changes'} at {last['budget']:g}×"
    return marks


# ----------------------------------------------------------------------------- the ledger

def verdicts(spec: TableSpec, df: pd.DataFrame) -> str:
    """Markdown bullets, one per claim `spec` judges: the claim, its verdict, ours (from `df`) with our effect,
    and the paper's with its effect."""
    lines = []
    for claim in spec.claims:
        j = assess(claim, df)
        effects = (f"; effect {j.effect.effect_text()}" if j.effect else "") + (
            f"; paper's effect {j.paper.text()}" if j.paper else "")
        lines.append(f"- {claim.text}: **{j.verdict}** ({j.ours}; paper: {claim.paper_text()}{effects}).")
    return "\n".join(lines)


class Tables:
    """Lazy reader of one profile's CSV tables."""

    def __init__(self, folder: Path):
        self.folder = folder

    def get(self, name: str, text_columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
        """The table `name`, its `text_columns` (row names such as "0" or "0.1") read as written."""
        path = self.folder / f"{name}.csv"
        return pd.read_csv(path, dtype={c: str for c in text_columns}) if path.exists() else None


def claims(tables: Tables, cfg: Config | None = None) -> list[dict]:
    """One dict per ledger claim: claim, paper, ours, verdict and its category, effect and paper_effect (texts),
    mean / low / high / n of our effect and paper_value / paper_bound of the paper's (NaN / "" where none),
    equivalence, caveat (profile-dependent parts from `cfg`), budget (the longer-training mark, or ""), and the
    table that judged it with its notebook."""
    out: list[dict[str, Any]] = []
    for claim in CLAIMS:
        names = (claim.spec.key, claim.spec.setting_column)
        runs = tables.get(claim.spec.runs, names) if claim.spec.runs else None
        df = runs if runs is not None else tables.get(claim.table, names)
        j = Judgement(f"tables {[claim.table]} not written", "not run") if df is None else assess(claim, df)
        e, p = j.effect, j.paper
        out.append({"claim": claim.text, "paper": claim.paper_text(), "ours": j.ours, "verdict": j.verdict,
                    "category": stats.category(j.verdict), "effect": e.effect_text() if e else "",
                    "paper_effect": p.text() if p else "", "mean": e.mean if e else math.nan,
                    "low": e.low if e else math.nan, "high": e.high if e else math.nan, "n": e.n if e else 0,
                    "paper_value": p.value if p else math.nan, "paper_bound": p.bound if p else "",
                    "equivalence": isinstance(claim, EquivalenceClaim),
                    "caveat": "" if df is None else caveat(claim, df, cfg), "budget": "",
                    "table": claim.table, "notebook": claim.spec.notebook})
    checked = tables.get(BUDGET_TABLE)
    if checked is not None:
        marks = budget_marks(budget_effects(checked), {r["claim"]: r["mean"] for r in out})
        for r in out:
            r["budget"] = marks.get(r["claim"], "")
    return out


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    """How many claims of `rows` (`claims`) fall in each verdict category, in `CATEGORIES`' order (others after)."""
    counts = Counter(r["category"] for r in rows)
    return {c: counts[c] for c in [*CATEGORIES, *sorted(set(counts) - set(CATEGORIES))] if counts[c]}


def counts_line(rows: list[dict]) -> str:
    """One line of verdict counts, e.g. "33 claims: 3 holds; 1 holds, weaker than the paper's; 2 reversed; …"."""
    return f"{len(rows)} claims: " + "; ".join(f"{n} {c}" for c, n in verdict_counts(rows).items())


FOREST_ALT = ("Forest plot: per comparison claim, grouped by notebook, our 95 % interval of the relative effect "
              "(a line, % change) beside the paper's effect (a diamond; a triangle where the paper gives a bound), "
              "coloured by verdict, 0 marked")


def write_ledger(profile: str, root: str | Path = "results") -> Path:
    """Write `<root>/<profile>/claims.md` and `figures/claims_forest.png` from the profile's tables."""
    from . import forest
    folder = results_dir(profile, root)
    rows = claims(Tables(folder / "tables"), config.profile(profile))
    save_figure(forest.draw(rows), FOREST, profile, root)
    lines = [f"# Claims ledger — profile `{profile}`", "",
             "Generated by `python -m imagefolder claims` from the tables in `tables/`; never edited by hand.", "",
             counts_line(rows) + ".", "", f"![{FOREST_ALT}](figures/{FOREST}.png)", "",
             "Verdict rules:", "", VERDICT_RULE, "",
             "| claim | paper | ours | our effect, 95 % CI | paper's effect | verdict | caveat |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"**{r['verdict']}**" + (f" · {r['budget']}" if r["budget"] else "")
        lines.append(f"| {r['claim']} | {r['paper']} | {r['ours']} | {r['effect']} | {r['paper_effect']} | "
                     f"{verdict} | {r['caveat']} |")
    return atomic_write_text(folder / "claims.md", "\n".join(lines) + "\n")
