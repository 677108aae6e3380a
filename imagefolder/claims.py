"""The claims ledger: each claim of the paper, the paper's numbers, ours (from the written tables) and a verdict.

`write_ledger(profile, root)` reads `results/<profile>/tables/*.csv` — never typed numbers — and writes
`results/<profile>/claims.md`, judged by `VERDICT_RULE`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .results import atomic_write_text, paper_fact, paper_value, results_dir

RELATIVE_MARGIN = 0.05
VERDICT_RULE = """For a comparison "A is better than B" on a metric:
- **holds**: A beats B by more than the margin: the larger seed standard deviation of the two when several
  seeds ran, else 5% of B's value;
- **does not show at this scale**: A does not beat B by that margin (the numbers are given either way);
- **not run**: a table the claim needs has not been written for this profile."""


@dataclass
class Comparison:
    """A better than B on `metric` (lower is better unless `higher`), with optional seed spreads."""

    a: float
    b: float
    sd_a: float = float("nan")
    sd_b: float = float("nan")
    higher: bool = False

    @property
    def margin(self) -> float:
        spreads = [s for s in (self.sd_a, self.sd_b) if not math.isnan(s)]
        return max(spreads) if spreads else RELATIVE_MARGIN * abs(self.b)

    @property
    def verdict(self) -> str:
        gain = (self.a - self.b) if self.higher else (self.b - self.a)
        return "holds" if gain > self.margin else "does not show at this scale"

    def describe(self, names: tuple[str, str], metric: str) -> str:
        def fmt(v: float, sd: float) -> str:
            return f"{v:.4g}" + ("" if math.isnan(sd) else f" ± {sd:.2g}")
        return (f"{names[0]} {fmt(self.a, self.sd_a)} vs {names[1]} {fmt(self.b, self.sd_b)} ({metric}, "
                f"{'higher' if self.higher else 'lower'} is better; margin {self.margin:.3g})")


class Tables:
    """Lazy reader of one profile's CSV tables."""

    def __init__(self, folder: Path):
        self.folder = folder

    def get(self, name: str) -> pd.DataFrame | None:
        path = self.folder / f"{name}.csv"
        return pd.read_csv(path) if path.exists() else None


def _metric(df: pd.DataFrame, prefix: str) -> str:
    """The column of a metric whatever network computed it (e.g. 'gFD_evaluator' or 'gFID')."""
    cols = [c for c in df.columns if c.startswith(prefix) and "(paper)" not in c and not c.endswith(" sd")]
    if not cols:
        raise KeyError(f"no column starting with {prefix!r} in {list(df.columns)}")
    return cols[0]


def _row(df: pd.DataFrame, key: str, value: str, column: str) -> tuple[float, float]:
    row = df[df[key].astype(str) == value]
    if row.empty:
        raise KeyError(f"no row {key}={value!r}")
    sd = row[f"{column} sd"].iloc[0] if f"{column} sd" in row else float("nan")
    return float(row[column].iloc[0]), float(sd)


def _compare(df, key, a, b, prefix, higher=False) -> tuple[Comparison, str]:
    col = _metric(df, prefix)
    (va, sa), (vb, sb) = _row(df, key, a, col), _row(df, key, b, col)
    return Comparison(va, vb, sa, sb, higher), col


def claims(tables: Tables) -> list[dict]:
    """One dict per claim: claim, paper, ours, verdict."""
    out = []

    def add(claim: str, paper: str, needs: list[str], judge) -> None:
        dfs = [tables.get(n) for n in needs]
        if any(d is None for d in dfs):
            out.append({"claim": claim, "paper": paper, "ours": f"tables {needs} not written", "verdict": "not run"})
            return
        ours, verdict = judge(*dfs)
        out.append({"claim": claim, "paper": paper, "ours": ours, "verdict": verdict})

    def branch_claim(a, b):
        def judge(t9):
            cmp, col = _compare(t9, "variant", a, b, "gFD")
            return cmp.describe((a, b), col), cmp.verdict
        return judge

    add("Two branches beat one at equal length (product quantization)",
        f"gFID {paper_value('table3', '4', 'gFID')} (2 detail branches) vs {paper_value('table3', '3', 'gFID')} (1 branch)",
        ["table9_branch_settings"], branch_claim("two detail branches", "single detail branch"))

    def dropout(t3):
        cmp, col = _compare(t3, "variant", "2", "1", "gFD")
        return cmp.describe(("with dropout", "without"), col), cmp.verdict
    add("Quantizer dropout improves generation",
        f"gFID {paper_value('table3', '2', 'gFID')} vs {paper_value('table3', '1', 'gFID')} (VAR-style tokenizer)",
        ["table3_rows1-2"], dropout)

    for other, paper_other in (("two detail branches", "5.96"), ("two semantic branches", "5.21")):
        add(f"Semantic regularization on one branch beats {'none' if 'detail' in other else 'all branches'}",
            f"gFID 3.53 vs {paper_other}", ["table9_branch_settings"], branch_claim("one semantic, one detail", other))

    def folding_cost(t6):
        t = t6.set_index("layout")
        pos = t.loc["folded", "positions"] / t.loc["unfolded", "positions"]
        cmp = Comparison(float(t.loc["folded", "latency_s"]), float(t.loc["unfolded", "latency_s"]))
        return (f"positions folded/unfolded = {pos:.2f}; " + cmp.describe(("folded", "unfolded"), "batch-1 latency, s")
                + f" on {t.loc['folded', 'device']}"), cmp.verdict
    add("Folding halves the sequence and cuts sampling cost", "286 vs 572 positions; 0.130 s per image (A100)",
        ["table6_latency_flops"], folding_cost)

    def folded_vs_unfolded(fu):
        cmp, col = _compare(fu, "variant", "folded", "unfolded", "gFD")
        return cmp.describe(("folded", "unfolded"), col), cmp.verdict
    add("Folded tokens generate better than unfolded at the same token number", "stated in §1, no number",
        ["folded_vs_unfolded"], folded_vs_unfolded)

    def flops(pf):
        ratio = float(pf.set_index("model").loc["ImageFolder", "flops_vs_VAR"])
        target = paper_fact("table6", "flops_ratio_to_var")
        nearer_quarter = abs(math.log(ratio / target)) < abs(math.log(ratio / (2 * target)))
        return (f"measured FLOPs per image ImageFolder / VAR d16 = {ratio:.3f} (flop counter, both with CFG)",
                "holds" if nearer_quarter else "does not hold: nearer 1/2")
    add("ImageFolder needs about 1/4 of VAR's FLOPs", f"≈ {paper_fact('table6', 'flops_ratio_to_var')}", ["table6_paper_config_flops"], flops)

    def probe(lp):
        lp = lp[lp["label"] == "category"]
        cmp, col = _compare(lp, "features", "ImageFolder (study budget)", "VAR-style (study budget)", "L.P.", higher=True)
        return cmp.describe(("ImageFolder", "VAR-style"), col + ", category"), cmp.verdict
    add("Better linear probing than a VAR-style tokenizer", f"L.P. {paper_value('table4', 'ImageFolder', 'L.P.')} "
        f"vs {paper_value('table4', 'VAR (d16)', 'L.P.')}", ["table4_linear_probe"], probe)
    return out


def write_ledger(profile: str, root: str | Path = "results") -> Path:
    """Write `<root>/<profile>/claims.md` from the profile's tables."""
    folder = results_dir(profile, root)
    rows = claims(Tables(folder / "tables"))
    lines = [f"# Claims ledger — profile `{profile}`", "",
             "Generated by `python -m imagefolder claims` from the tables in `tables/`; never edited by hand.",
             "Verdict rule. " + VERDICT_RULE, "",
             "| claim | paper | ours | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['paper']} | {r['ours']} | **{r['verdict']}** |" for r in rows]
    return atomic_write_text(folder / "claims.md", "\n".join(lines) + "\n")
