"""Figures the notebooks draw from their tables: ours beside the paper's, where a table is long."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def _axis(ax, df: pd.DataFrame, x: str, y: str, label: object) -> None:
    """`y` over `x`, with the seed sd as error bars where the table has its `<y> sd` column."""
    xs = df[x]
    numeric = pd.api.types.is_numeric_dtype(xs)
    sd = df.get(f"{y} sd")
    ax.errorbar(xs if numeric else range(len(xs)), pd.to_numeric(df[y], errors="coerce"), yerr=sd, marker="o",
                capsize=3, label=label)
    if not numeric:
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=30 if max(map(len, map(str, xs))) > 4 else 0,
                      ha="right" if max(map(len, map(str, xs))) > 4 else "center", fontsize=8)
    ax.set_ylabel(y, fontsize=8)


def beside_paper(df: pd.DataFrame, x: str, pairs: dict[str, str], *, paper_x: str | None = None,
                 hue: str | None = None, title: str | None = None):
    """One column of panels per {our column: the paper's column} pair: ours over `x` on top (± the seed sd),
    the paper's over `paper_x` (default `x`) below, one line per `hue` group. Their scales differ (other data,
    other metric network), so they share no axis: compare the shapes. Bounds such as ">5" are left out."""
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.8 * len(pairs), 5), squeeze=False)
    groups = list(df.groupby(hue, sort=False)) if hue else [(None, df)]
    for j, (ours, paper) in enumerate(pairs.items()):
        for label, part in groups:
            _axis(axes[0, j], part, x, ours, label)
            _axis(axes[1, j], part, paper_x or x, paper, label)
        axes[0, j].set_title("ours", fontsize=9)
        axes[1, j].set_title("the paper", fontsize=9)
        axes[1, j].set_xlabel(paper_x or x, fontsize=8)
        if hue:
            axes[0, j].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
