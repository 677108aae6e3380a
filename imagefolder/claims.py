"""Judging the paper's claims (`tables.CLAIMS`) against our written tables, and the claims ledger.

`judge(claim, df)` gives (ours, verdict) from the table `df` that judges `claim`: a comparison pairs its
two rows by seed (or timing round) and applies `stats.paired_gain`'s rule; a level, a ratio and a headline
number have rules of their own; `VERDICT_RULE` states them all. `verdicts(spec, df)` gives a notebook's
closing bullets; `write_ledger(profile, root)` reads `results/<profile>/tables/*.csv` — never typed numbers;
a table's per-seed companion (`TableSpec.runs`) where it was written — and writes `results/<profile>/claims.md`.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import singledispatch
from pathlib import Path

import pandas as pd

from . import stats
from .results import atomic_write_text, results_dir
from .tables import CLAIMS, USAGE_LEVEL, Claim, ClaimBase, LevelClaim, RatioClaim, Reported, TableSpec, paper_number

VERDICT_RULE = f"""- **comparisons**: {stats.RULE} Latency is paired by interleaved timing round instead of seed.
- **levels** (codebook usage): the same interval, of the mean over seeds of the value minus the level
  ({USAGE_LEVEL:.0%} of the codebook's entries used on the val split for "its whole codebook"): **holds** above
  0, **does not hold** below 0, **does not show** otherwise.
- **ratios** (FLOPs): **holds** if our ratio is nearer (in log) the paper's ratio than twice it, else
  **does not hold: nearer** twice the paper's ratio (named as a fraction).
- **reported**: a headline number with nothing at this scale to compare it with (one run).
- **not run**: a table the claim needs has not been written for this profile."""


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


@singledispatch
def judge(claim: ClaimBase, df: pd.DataFrame) -> tuple[str, str]:
    """(ours, verdict) of `claim` from the written table `df` that judges it."""
    raise TypeError(f"no rule judges a {type(claim).__name__} (claim {claim.text!r})")


@judge.register
def _comparison(claim: Claim, df: pd.DataFrame) -> tuple[str, str]:
    """With a `seed` (or timing `round`) column, the two rows are paired by it (one gain per seed both ran),
    else each row is one observation; `stats.paired_gain` gives the verdict."""
    key = claim.spec.key
    if claim.where:
        df = df[df[claim.where[0]].astype(str) == claim.where[1]]
    col = _metric_column(df, claim.metric)
    a, b = (_rows(df, claim.by or key, r) for r in claim.rows)
    pair = next((c for c in ("seed", "round") if c in df.columns), None)
    if pair:
        pairs = a[[pair, col]].merge(b[[pair, col]], on=pair, suffixes=("_a", "_b"))
        va, vb = pairs[f"{col}_a"], pairs[f"{col}_b"]
    else:
        va, vb = a[col].iloc[:1], b[col].iloc[:1]
    diff = va.to_numpy() - vb.to_numpy()  # by position: the pairs' indices differ
    unit = "rounds" if pair == "round" else "seeds"
    gain = stats.paired_gain((diff if claim.higher else -diff).tolist())
    names = claim.labels or (str(a.iloc[0][key]), str(b.iloc[0][key]))
    label = col + (f", {claim.where[1]}" if claim.where else "")
    first_a, first_b = a.iloc[0], b.iloc[0]
    extra = [f"{c} {first_a[c]}" if first_a[c] == first_b[c] else f"{c} {first_a[c]} vs {first_b[c]}"
             for c in claim.context]
    ours = (f"{names[0]} {_mean_sd(va)} vs {names[1]} {_mean_sd(vb)} ({label}, "
            f"{'higher' if claim.higher else 'lower'} is better; {gain.describe(unit)})")
    return "; ".join([ours] + extra), gain.verdict


@judge.register
def _level(claim: LevelClaim, df: pd.DataFrame) -> tuple[str, str]:
    """One gain per seed, value − level, under `stats.paired_gain`'s rule ("reversed" reads "does not hold")."""
    col = _metric_column(df, claim.metric)
    values = _rows(df, claim.spec.key, claim.row)[col]
    gain = stats.paired_gain((values - claim.level).tolist())
    verdict = "does not hold" if gain.verdict == "reversed" else gain.verdict
    return f"{claim.row} {_mean_sd(values)} ({col}, level {claim.level:.0%}; {gain.describe()})", verdict


@judge.register
def _reported(claim: Reported, df: pd.DataFrame) -> tuple[str, str]:
    row = _row(df, claim.spec.key, claim.row)
    return ", ".join(f"{c} {row[c]:.3g}" for c in (_metric_column(df, m) for m in claim.metrics)), "reported"


@judge.register
def _ratio(claim: RatioClaim, df: pd.DataFrame) -> tuple[str, str]:
    """Holds when our ratio is nearer (in log) the paper's than twice the paper's."""
    ratio = float(_row(df, claim.spec.key, claim.row)[claim.column])
    target = paper_number(claim.target)
    other = 2 * target
    nearer = abs(math.log(ratio / target)) < abs(math.log(ratio / other))
    return claim.measured.format(ratio), ("holds" if nearer else
                                          f"does not hold: nearer {Fraction(other).limit_denominator(64)}")


def verdicts(spec: TableSpec, df: pd.DataFrame) -> str:
    """Markdown bullets, one per claim `spec` judges: the claim, its verdict, ours (from `df`) and the paper's."""
    lines = []
    for claim in spec.claims:
        ours, verdict = judge(claim, df)
        lines.append(f"- {claim.text}: **{verdict}** ({ours}; paper: {claim.paper_text()}).")
    return "\n".join(lines)


class Tables:
    """Lazy reader of one profile's CSV tables."""

    def __init__(self, folder: Path):
        self.folder = folder

    def get(self, name: str, text_columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
        """The table `name`, its `text_columns` (row names such as "0" or "0.1") read as written."""
        path = self.folder / f"{name}.csv"
        return pd.read_csv(path, dtype={c: str for c in text_columns}) if path.exists() else None


def claims(tables: Tables) -> list[dict]:
    """One dict per ledger claim: claim, paper, ours, verdict, and the table that judged it."""
    out = []
    for claim in CLAIMS:
        names = (claim.spec.key, claim.spec.setting_column)
        runs = tables.get(claim.spec.runs, names) if claim.spec.runs else None
        df = runs if runs is not None else tables.get(claim.table, names)
        ours, verdict = (f"tables {[claim.table]} not written", "not run") if df is None else judge(claim, df)
        out.append({"claim": claim.text, "paper": claim.paper_text(), "ours": ours, "verdict": verdict,
                    "table": claim.table})
    return out


def write_ledger(profile: str, root: str | Path = "results") -> Path:
    """Write `<root>/<profile>/claims.md` from the profile's tables."""
    folder = results_dir(profile, root)
    rows = claims(Tables(folder / "tables"))
    lines = [f"# Claims ledger — profile `{profile}`", "",
             "Generated by `python -m imagefolder claims` from the tables in `tables/`; never edited by hand.",
             "", "Verdict rules:", "", VERDICT_RULE, "",
             "| claim | paper | ours | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['paper']} | {r['ours']} | **{r['verdict']}** |" for r in rows]
    return atomic_write_text(folder / "claims.md", "\n".join(lines) + "\n")
