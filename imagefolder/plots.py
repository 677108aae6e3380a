"""Figures the notebooks draw from their tables: ours beside the paper's, where a table is long."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

SEED_SD = "mean ± seed sd, dots: seeds"  # what a panel with the seeds' runs shows


def bound(value: object) -> tuple[str, float] | None:
    """(">" or "<", the number) of a bound the paper states instead of a value (e.g. ">20"), else None."""
    text = str(value).strip()
    if text[:1] in "<>" and text[1:]:
        try:
            return text[0], float(text[1:])
        except ValueError:
            return None
    return None


def _positions(xs: pd.Series) -> tuple[list, bool]:
    numeric = pd.api.types.is_numeric_dtype(xs)
    return (list(xs) if numeric else list(range(len(xs)))), numeric


def _off_scale(ax, positions: list, values: pd.Series) -> None:
    """Each bound of `values` as an arrow at the panel's top (">") or bottom ("<") edge, labelled with the bound."""
    for x, value in zip(positions, values):
        b = bound(value)
        if b is None:
            continue
        top = b[0] == ">"
        ax.annotate(str(value).strip(), xy=(x, 1.0 if top else 0.0), xytext=(x, 0.8 if top else 0.2),
                    xycoords=ax.get_xaxis_transform(), textcoords=ax.get_xaxis_transform(), ha="center",
                    va="top" if top else "bottom", fontsize=8, color="C3",
                    arrowprops={"arrowstyle": "->", "color": "C3"})


def _axis(ax, df: pd.DataFrame, x: str, y: str, label: object, runs: pd.DataFrame | None = None,
          by: str | None = None) -> None:
    """`y` over `x`, with the seed sd as error bars where the table has its `<y> sd` column, each seed of
    `runs` (matched on `by`) as a dot beside its mean, and the paper's bounds as off-scale marks."""
    positions, numeric = _positions(df[x])
    values = pd.to_numeric(df[y], errors="coerce")
    line = ax.errorbar(positions, values, yerr=df.get(f"{y} sd"), marker="o", capsize=3, label=label)
    if runs is not None and by is not None and y in runs.columns:
        step = 0.08 * (np.ptp(positions) / max(1, len(positions) - 1) if numeric and len(positions) > 1 else 1)
        for pos, key in zip(positions, df[by].astype(str)):
            seeds = pd.to_numeric(runs.loc[runs[by].astype(str) == key, y], errors="coerce").dropna()
            ax.scatter(np.full(len(seeds), pos + step), seeds, s=10, color=line[0].get_color(), alpha=0.6,
                       zorder=3)
    _off_scale(ax, positions, df[y])
    if not numeric:
        long = max(map(len, map(str, df[x]))) > 4
        ax.set_xticks(range(len(df)), [str(v) for v in df[x]], rotation=30 if long else 0,
                      ha="right" if long else "center", fontsize=8)
    ax.set_ylabel(y, fontsize=8)


def beside_paper(df: pd.DataFrame, x: str, pairs: dict[str, str], *, paper_x: str | None = None,
                 hue: str | None = None, title: str | None = None, runs: pd.DataFrame | None = None,
                 by: str = "variant", xlabel: str | None = None, paper_xlabel: str | None = None,
                 spread: str = SEED_SD):
    """One column of panels per {our column: the paper's column} pair: ours over `x` on top (mean ± the seed
    sd, and each seed of `runs`, matched to the rows of `df` on the column `by`, as a dot beside it), the
    paper's over `paper_x` (default `x`) below, one line per `hue` group. Their scales differ (other data,
    other metric network), so they share no axis: compare the shapes. The paper's bounds (">20") are arrows
    at the panel's edge, labelled with the bound. `spread` says what the top panels show where `runs` is given
    (e.g. a median and timing rounds in place of the default mean ± seed sd and seeds)."""
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.8 * len(pairs), 5), squeeze=False)
    groups = list(df.groupby(hue, sort=False)) if hue else [(None, df)]
    for j, (ours, paper) in enumerate(pairs.items()):
        for label, part in groups:
            _axis(axes[0, j], part, x, ours, label, runs, by)
            _axis(axes[1, j], part, paper_x or x, paper, label)
        axes[0, j].set_title("ours" + (f" ({spread})" if runs is not None else ""), fontsize=9)
        axes[1, j].set_title("the paper (one run each)", fontsize=9)
        axes[0, j].set_xlabel(xlabel or x, fontsize=8)
        axes[1, j].set_xlabel(paper_xlabel or paper_x or xlabel or x, fontsize=8)
        if hue:
            axes[0, j].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
