"""The ledger's forest plot: per comparison claim our interval of the relative effect beside the paper's.

`draw(rows)` takes `claims.claims`' rows: one line per claim with an effect (its 95 % interval, a dot at the
mean; a dot alone for one run), the paper's effect as a diamond (a right-pointing triangle where the paper
gives only a lower bound), an equivalence claim's margin as a grey band, 0 as a vertical line, claims
grouped by the notebook that writes their table and coloured by verdict category. The x axis is the log
ratio, labelled as % change, 100·(e^x − 1).
"""
from __future__ import annotations

import math

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator

from . import stats

# verdict category → colour (seaborn's colour-blind palette)
_PALETTE = sns.color_palette("colorblind", 8)
COLOURS = {stats.HOLDS: _PALETTE[2], stats.WEAKER: _PALETTE[1],
           stats.NO_EFFECT: _PALETTE[7], stats.INCONCLUSIVE: _PALETTE[4], stats.DOES_NOT_SHOW: _PALETTE[0],
           stats.REVERSED: _PALETTE[3], stats.DOES_NOT_HOLD: _PALETTE[3]}
PERCENT_TICKS = (-75, -50, -25, 0, 25, 100, 200, 400, 1000, 2000)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The plotted claims, grouped by notebook (in the ledger's order within one), with their y position."""
    df = pd.DataFrame([r for r in rows if r["n"] >= 1 and not math.isnan(r["mean"])])
    if df.empty:
        return df
    df["group"] = df["notebook"].map(sorted(set(df["notebook"])).index)
    df = df.sort_values("group", kind="stable").reset_index(drop=True)
    df["y"] = df.index + df["group"]  # one empty row between notebooks
    return df


def draw(rows: list[dict]) -> Figure:
    """The forest plot of `rows` (`claims.claims`), a pyplot-free figure (seaborn's style set for it alone)."""
    df = _frame(rows)
    height = 1.5 + 0.28 * (len(df) + (df["group"].nunique() if len(df) else 0))
    fig = Figure(figsize=(9, height))
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        ax = fig.subplots()
        _draw(ax, df)
    return fig


def _draw(ax, df: pd.DataFrame) -> None:
    if df.empty:
        ax.text(0.5, 0.5, "no comparison claim judged yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    colour = df["category"].map(lambda c: COLOURS.get(c, "grey"))
    ranged = df[df["n"] >= 2]
    ax.hlines(ranged["y"], ranged["low"], ranged["high"], colors=colour[ranged.index].tolist(), linewidth=2.2)
    present = list(dict.fromkeys([*(c for c in COLOURS if c in set(df["category"])), *df["category"]]))
    sns.scatterplot(data=df, x="mean", y="y", hue="category", hue_order=present,
                    palette={c: COLOURS.get(c, "grey") for c in present}, s=30, ax=ax, zorder=3, legend=True)
    paper = df[~df["paper_value"].isna()]
    exact, bounded = paper[paper["paper_bound"] == ""], paper[paper["paper_bound"] != ""]
    ax.scatter(exact["paper_value"], exact["y"], marker="D", s=34, facecolors="none", edgecolors="black",
               linewidths=1.1, zorder=4, label="paper's effect")
    ax.scatter(bounded["paper_value"], bounded["y"], marker=">", s=44, facecolors="none", edgecolors="black",
               linewidths=1.1, zorder=4, label="paper's effect ≥ (bound)")
    equivalence = df[df["equivalence"]]
    for i, y in enumerate(equivalence["y"]):
        ax.plot([-stats.EQUIVALENCE_MARGIN, stats.EQUIVALENCE_MARGIN], [y, y], color="grey", alpha=0.25,
                linewidth=8, solid_capstyle="butt", zorder=1, label="" if i else "equivalence margin")
    ax.axvline(0, color="black", linewidth=0.9)
    ax.set_yticks(df["y"], [_short(t) for t in df["claim"]], fontsize=7)
    for _, first in df.groupby("group").head(1).iterrows():
        ax.text(1.01, first["y"], first["notebook"], transform=ax.get_yaxis_transform(), fontsize=7,
                va="center", color="dimgrey")
    ax.invert_yaxis()
    _percent_axis(ax, df)
    ax.set_xlabel("relative effect in the claim's direction, % change (log scale); > 0: the claim's way")
    ax.set_ylabel("")
    ax.set_title("Claims: our 95 % interval over seeds vs the paper's effect (a single run: no interval)",
                 fontsize=9)
    ax.legend(fontsize=7, title=None, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3, frameon=False)


def _percent_axis(ax, df: pd.DataFrame) -> None:
    """x in log ratio with ticks at round % changes inside the data's range."""
    values = pd.concat([df["low"], df["high"], df["mean"], df["paper_value"]]).dropna()
    lo, hi = min(values.min(), -0.1), max(values.max(), 0.1)
    pad = 0.05 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ticks = [p for p in PERCENT_TICKS if lo - pad <= math.log1p(p / 100) <= hi + pad]
    ax.xaxis.set_major_locator(FixedLocator([math.log1p(p / 100) for p in ticks]))
    ax.set_xticklabels([f"{p:+d} %" if p else "0" for p in ticks], fontsize=7)


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
