"""Results of a profile under `results/<profile>/`: tables (CSV + Markdown), figures (PNG), provenance.

Every file is written to a temporary file in its folder and moved into place with `os.replace`, so a
reader never sees half a file. Tables can carry the paper's number beside ours (`paper_reference.yaml`).
A run that is not the committed notebook as it stands (a copy, or config overrides) writes under
`results/<profile>/variants/<name>/` instead, never over the committed results.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import __version__, config
from .checkpoint import atomic_write_bytes, atomic_write_text, exclusive

PAPER_REFERENCE = Path(__file__).with_name("paper_reference.yaml")
PACKAGES = ("torch", "torchvision", "timm", "torch-fidelity", "lpips", "numpy", "pandas", "matplotlib",
            "seaborn", "safetensors", "papermill")


def results_dir(profile: str, root: str | Path = "results", variant: str | None = None) -> Path:
    """`<root>/<profile>/`, or `<root>/<profile>/variants/<variant>/` for a variant run."""
    return Path(root) / profile / "variants" / variant if variant else Path(root) / profile


# ----------------------------------------------------------------------------- the paper's numbers

@lru_cache(maxsize=1)
def paper_tables() -> dict[str, dict]:
    """The parsed `paper_reference.yaml`: table id → {title, row_header, columns, rows, facts?}."""
    return yaml.safe_load(PAPER_REFERENCE.read_text(encoding="utf-8"))


def paper_value(table: str, row: Any, column: Any) -> float | int | str | None:
    """The paper's value in `table` at (row, column), or None if the paper has none there.

    Keys compare as strings (`paper_value("table7", 286, "rFID")`) and either order works, so a table we
    lay out transposed (Table 1: ours by rows of K) finds the same cell. Bounds come back as strings (">5").
    """
    spec = paper_tables().get(table)
    if spec is None:
        raise KeyError(f"unknown paper table {table!r}; known: {sorted(paper_tables())}")
    columns = [str(c) for c in spec["columns"]]
    rows = {str(k): v for k, v in spec["rows"].items()}
    for r, c in ((str(row), str(column)), (str(column), str(row))):
        if r in rows and c in columns:
            return rows[r][columns.index(c)]
    return None


def paper_fact(table: str, key: str) -> Any:
    """A number the paper states in its text next to a table (e.g. ("table6", "flops_ratio_to_var"))."""
    facts = paper_tables()[table].get("facts", {})
    if key not in facts:
        raise KeyError(f"{table} has no fact {key!r}; known: {sorted(facts)}")
    return facts[key]


def with_paper_columns(df: pd.DataFrame, table: str, row_key: str | Sequence, columns: Sequence[str] | dict[str, str],
                       suffix: str = " (paper)", names: dict[str, str] | None = None,
                       facts: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """A copy of `df` with the paper's value right after each of our metric columns.

    `row_key`: the column of `df` holding the paper's row (or column) key, or the keys themselves, one per
    row (None: the paper has no such row). `columns`: our metric columns, or {ours: paper column name} when
    the names differ. `names`: {ours: header of its paper column} (default: ours + `suffix`). `facts`:
    {ours: {paper row key: fact key}}, numbers the paper states in its text rather than in the table, for
    the rows they name (a column of `facts` need not be in `columns`). Missing paper values are left empty.
    """
    mapping = dict(columns) if isinstance(columns, dict) else {c: c for c in columns}
    keys = list(df[row_key]) if isinstance(row_key, str) else list(row_key)
    if len(keys) != len(df):
        raise ValueError(f"{len(keys)} paper row keys for a table of {len(df)} rows")
    facts = facts or {}
    out = df.copy()
    for ours in list(mapping) + [c for c in facts if c not in mapping]:
        if ours not in out.columns:
            raise KeyError(f"column {ours!r} not in the table (columns: {list(out.columns)})")
        stated = {str(k): f for k, f in facts.get(ours, {}).items()}
        values = [None if key is None else paper_fact(table, stated[str(key)]) if str(key) in stated
                  else paper_value(table, key, mapping[ours]) if ours in mapping else None for key in keys]
        header = (names or {}).get(ours, f"{ours}{suffix}")
        out.insert(list(out.columns).index(ours) + 1, header, pd.Series(values, index=out.index, dtype=object))
    return out


# ----------------------------------------------------------------------------- tables and figures

def table_caption(title: str, network: str | None = None, n: int | str | None = None, note: str | None = None) -> str:
    """One line naming the table, the metric network and N (and the paper's setting for comparison)."""
    parts = [title]
    if network is not None:
        parts.append(f"metrics by {network}")
    if n is not None:
        parts.append(f"N = {n}")
    if note:
        parts.append(note)
    return "; ".join(parts) + "."


def budget_note(cfg: config.Config, study: bool) -> str:
    """The budget of a study-table row (`study`: `cfg.study`) or of the profile's main models, in words, for
    captions and the index."""
    if study:
        s = cfg.study
        return (f"study budget: {s.tokenizer_steps} tokenizer + {s.generator_steps} generator steps, "
                f"N = {s.num_samples} samples, seeds {s.seeds}")
    return (f"full budget: {cfg.train_tokenizer.steps} tokenizer + {cfg.train_generator.steps} generator steps, "
            f"N = {cfg.evaluation.num_samples} samples, one training run (seed {cfg.seed})")


def _cell(value: Any, float_format: str) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    text = format(value, float_format) if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def to_markdown(df: pd.DataFrame, float_format: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table of `df` (no index); empty cells for None/NaN."""
    lines = ["| " + " | ".join(_cell(c, "") for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_cell(v, float_format) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_table(df: pd.DataFrame, name: str, profile: str, *, title: str, network: str | None = None,
                n: int | str | None = None, note: str | None = None, root: str | Path = "results",
                float_format: str = ".4g", variant: str | None = None) -> dict[str, Path]:
    """Write `tables/<name>.csv` (data only) and `tables/<name>.md` (caption line, then the table).

    The caption names the metric network (e.g. `MetricNetwork.describe()`) and N. Returns both paths.
    """
    folder = results_dir(profile, root, variant) / "tables"
    md = f"**{table_caption(title, network, n, note)}**\n\n{to_markdown(df, float_format)}\n"
    return {"csv": atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False)),
            "md": atomic_write_text(folder / f"{name}.md", md)}


FIGURE_DPI = 150  # figures are written at this resolution and shown at 100 pixels per inch


def save_figure(fig, name: str, profile: str, root: str | Path = "results", dpi: int = FIGURE_DPI,
                variant: str | None = None) -> Path:
    """Save a matplotlib figure as `figures/<name>.png` (rendered by Agg, whatever the backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(results_dir(profile, root, variant) / "figures" / f"{name}.png", buf.getvalue())


# ----------------------------------------------------------------------------- tables as a reader sees them

HIDDEN_COLUMNS = ("minutes",)  # bookkeeping kept in the CSV and Markdown, not shown in a report
MAX_COLUMNS = 12  # a wider shown table splits into the paper comparison and our other columns


def is_paper_column(column: str) -> bool:
    return str(column).startswith("paper ") or "(paper)" in str(column)


def _key_columns(df: pd.DataFrame) -> list[str]:
    """The leading columns that name a row: the first, and the text columns right after it."""
    keys = [df.columns[0]]
    for c in df.columns[1:]:
        if pd.api.types.is_numeric_dtype(df[c]) or is_paper_column(c):
            break
        keys.append(c)
    return keys


def display_blocks(df: pd.DataFrame) -> tuple[list[tuple[str | None, pd.DataFrame]], dict[str, Any]]:
    """How a report shows `df`: ([(heading, block)], {column: value shared by every row}).

    Bookkeeping columns (`HIDDEN_COLUMNS`) and columns with one value in every row (the shared dict) leave
    the shown table; one still wider than `MAX_COLUMNS` splits into the paper comparison (each of our
    columns that has a paper column, beside it) and our other columns, both led by the row-naming columns.
    """
    keys = _key_columns(df)
    shared = {}
    if len(df) > 1:
        for c in df.columns:
            values = df[c].dropna()
            if c not in keys and not is_paper_column(c) and len(values) > 1 and values.astype(str).nunique() == 1:
                shared[c] = values.iloc[0]
    shown = df[[c for c in df.columns if c not in shared and c not in HIDDEN_COLUMNS]]
    if len(shown.columns) <= MAX_COLUMNS or not any(map(is_paper_column, shown.columns)):
        return [(None, shown)], shared
    cols = list(shown.columns)
    compared = [c for i, c in enumerate(cols)
                if is_paper_column(c) or (i + 1 < len(cols) and is_paper_column(cols[i + 1]))]
    rest = [c for c in cols if c not in compared and c not in keys]
    return [("compared with the paper", shown[keys + [c for c in compared if c not in keys]]),
            ("our other columns", shown[keys + rest])], shared


def table_markdown(df: pd.DataFrame, caption: str, anchor: str | None = None, float_format: str = ".4g") -> str:
    """Markdown for a notebook: the caption, `df` as `display_blocks` lays it out, the shared values."""
    blocks, shared = display_blocks(df)
    parts = [(f'<a id="{anchor}"></a>' if anchor else "") + f"**{caption}**"]
    for heading, block in blocks:
        parts += ([f"*{heading}*"] if heading else []) + [to_markdown(block, float_format)]
    if shared:
        parts.append("Every row: " + "; ".join(f"{c} {_cell(v, float_format).rstrip('.')}"
                                               for c, v in shared.items()) + ".")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- provenance

def git_commit(repo: str | Path = ".") -> dict[str, Any]:
    """{commit, dirty} of the repository at `repo`; commit None outside git. `dirty`: a tracked file
    outside `results/` differs from the commit (a run rewrites results/ itself)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                                cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


# The code this process runs: the repository's state when the package was imported (a notebook's results
# name it, not the HEAD of when the notebook ended), and the trained models it used, each with the code
# that trained it (`record_model`).
CODE_AT_IMPORT = git_commit(Path(__file__).resolve().parents[1])
_MODELS_USED: dict[str, dict[str, Any] | None] = {}
_TRAINED_AT: dict[str, str | None] = {}


def trained_at(path: str | Path) -> str | None:
    """When the model at `path` finished training: its weights file's modification time (UTC, ISO 8601),
    None where the file is absent."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return None
    return datetime.datetime.fromtimestamp(mtime, datetime.UTC).isoformat(timespec="seconds")


def record_model(path: str | Path, code: dict[str, Any] | None) -> None:
    """Note that this process used the model at `path`, trained by `code` (None: not recorded), and when
    it was trained (`trained_at`)."""
    _MODELS_USED[str(path)] = code
    _TRAINED_AT[str(path)] = trained_at(path)


def models_used() -> dict[str, dict[str, Any] | None]:
    """Every model `record_model` noted in this process, with the code that trained it."""
    return dict(_MODELS_USED)


def models_trained_at() -> dict[str, str | None]:
    """Every model `record_model` noted in this process, with when it was trained."""
    return dict(_TRAINED_AT)


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages results depend on (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def machine() -> dict[str, Any]:
    """Host, OS, CPU count and, when present, the GPUs."""
    info: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def provenance_section(profile: str, *, seeds: dict[str, int] | int, data_fingerprint: str | None,
                       metric_networks: dict[str, dict] | None = None, wall_times: dict[str, float] | None = None,
                       git: dict[str, Any] | None = None, repo: str | Path = ".", **extra: Any) -> dict[str, Any]:
    """A notebook's provenance: git state, imagefolder version, profile, seeds, data, package versions,
    networks, wall times, machine.

    `metric_networks`: metric → {name, sha256, file} (e.g. from a generation_metrics result). `git`: the
    code's {commit, dirty} (default: the repository at `repo` now).
    """
    return {"written_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git": git if git is not None else git_commit(repo), "imagefolder_version": __version__,
            "profile": profile, "seeds": seeds,
            "data_fingerprint": data_fingerprint, "packages": package_versions(),
            "metric_networks": metric_networks or {}, "wall_times_s": wall_times or {}, "machine": machine(), **extra}


def update_provenance(profile: str, section: str, entries: dict[str, Any], root: str | Path = "results",
                      variant: str | None = None) -> Path:
    """Set `sections[section]` of `provenance.json` to `entries`, keeping the other notebooks' sections.

    Read-modify-write under an exclusive lock on `provenance.json.lock`, written atomically.
    """
    path = results_dir(profile, root, variant) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path):
        data: dict[str, Any] = (json.loads(path.read_text()) if path.exists()
                                else {"profile": profile, "sections": {}})
        if data.get("profile") != profile:
            raise ValueError(f"{path} belongs to profile {data.get('profile')!r}, not {profile!r}")
        data["sections"][section] = entries
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


# overrides of fields with these roles say where or how fast a notebook runs, not what it computes
RUNTIME_ROLES = (config.EXECUTION, config.BOOKKEEPING)


class Report:
    """What one notebook writes under `<root>/<profile>/`: its tables, figures and provenance section.

    `notebook`: the committed notebook the code is (e.g. "03_quantizer_dropout"); `name`: this run's name
    (a copy's own, default `notebook`). A run named otherwise, or with an override of a field whose role
    (`config.role`) is not one of `RUNTIME_ROLES`, is a variant: it writes under
    `<root>/<profile>/variants/<name>/`, never over the committed results. `table` and `figure` write at
    once (a notebook that fails later keeps what it wrote); `finish` records the run's wall time, seeds,
    overrides and their roles, data fingerprint, metric networks, the code it ran
    (`CODE_AT_IMPORT`) and the models it used with the code that trained each in provenance.json.
    """

    def __init__(self, notebook: str, profile: str, root: str | Path = "results", *, name: str | None = None,
                 overrides: dict[str, Any] | None = None):
        self.notebook, self.profile, self.root = notebook, profile, Path(root)
        self.name, self.overrides = name or notebook, dict(overrides or {})
        self.roles = {key: config.role(key) for key in self.overrides}
        changed = {key for key, role in self.roles.items() if role not in RUNTIME_ROLES}
        self.variant = self.name if (self.name != notebook or changed) else None
        self.started = datetime.datetime.now(datetime.UTC)
        self.outputs: list[str] = []

    @property
    def folder(self) -> Path:
        return results_dir(self.profile, self.root, self.variant)

    def table(self, df: pd.DataFrame, name: str, *, title: str, network: str | None = None,
              n: int | str | None = None, note: str | None = None, show: bool = True) -> None:
        """Write `df` whole (CSV and Markdown) and, with `show`, display it as `table_markdown` lays it out."""
        paths = write_table(df, name, self.profile, title=title, network=network, n=n, note=note, root=self.root,
                            variant=self.variant)
        self.outputs += [str(p) for p in paths.values()]
        if show:
            from IPython.display import Markdown, display
            display(Markdown(table_markdown(df, table_caption(title, network, n, note), anchor=f"table-{name}")))

    def figure(self, fig, name: str, *, alt: str) -> None:
        """Write `fig` as `figures/<name>.png` and display that PNG with the alt text `alt` (what the figure
        shows, for a reader who cannot see it) in place of the notebook's own rendering of `fig`."""
        import matplotlib.pyplot as plt
        from IPython.display import Image, display
        path = save_figure(fig, name, self.profile, self.root, variant=self.variant)
        self.outputs.append(str(path))
        png = path.read_bytes()
        width = int.from_bytes(png[16:20], "big")  # the PNG header's width in pixels
        display(Image(data=png, width=round(width * 100 / FIGURE_DPI), metadata={"alt": alt}))
        plt.close(fig)

    def finish(self, *, seeds: Any, data_fingerprint: str | None, metric_networks: dict | None = None,
               **extra: Any) -> None:
        wall = (datetime.datetime.now(datetime.UTC) - self.started).total_seconds()
        section = provenance_section(self.profile, seeds=seeds, data_fingerprint=data_fingerprint,
                                     metric_networks=metric_networks, wall_times={self.name: round(wall, 1)},
                                     notebook=self.notebook, overrides=self.overrides,
                                     override_roles=self.roles, outputs=self.outputs,
                                     git=CODE_AT_IMPORT, models=models_used(),
                                     models_trained_at=models_trained_at(), **extra)
        update_provenance(self.profile, self.name, section, self.root, variant=self.variant)
