"""Results of a profile under `results/<profile>/`: tables (CSV + Markdown), figures (PNG), provenance.

Every file is written to a temporary file in its folder and moved into place with `os.replace`, so a
reader never sees half a file. Tables can carry the paper's number beside ours (`paper_reference.yaml`).
"""
from __future__ import annotations

import datetime
import io
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from . import __version__
from .checkpoint import atomic_write_bytes, atomic_write_text, exclusive

PAPER_REFERENCE = Path(__file__).with_name("paper_reference.yaml")
PACKAGES = ("torch", "torchvision", "timm", "torch-fidelity", "lpips", "numpy", "pandas", "matplotlib",
            "seaborn", "safetensors", "papermill")


def results_dir(profile: str, root: str | Path = "results") -> Path:
    return Path(root) / profile


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


def with_paper_columns(df: pd.DataFrame, table: str, row_key: str, columns: Sequence[str] | dict[str, str],
                       suffix: str = " (paper)") -> pd.DataFrame:
    """A copy of `df` with the paper's value right after each of our metric columns.

    `row_key`: the column of `df` holding the paper's row (or column) key. `columns`: our metric columns,
    or {ours: paper column name} when the names differ. Missing paper values are left empty.
    """
    mapping = dict(columns) if isinstance(columns, dict) else {c: c for c in columns}
    out = df.copy()
    for ours, theirs in mapping.items():
        if ours not in out.columns:
            raise KeyError(f"column {ours!r} not in the table (columns: {list(out.columns)})")
        values = [paper_value(table, key, theirs) for key in out[row_key]]
        out.insert(out.columns.get_loc(ours) + 1, f"{ours}{suffix}", pd.Series(values, index=out.index, dtype=object))
    return out


# ----------------------------------------------------------------------------- tables and figures

def table_caption(title: str, network: str | None = None, n: int | None = None, note: str | None = None) -> str:
    """One line naming the table, the metric network and N (and the paper's setting for comparison)."""
    parts = [title]
    if network is not None:
        parts.append(f"metrics by {network}")
    if n is not None:
        parts.append(f"N = {n}")
    if note:
        parts.append(note)
    return "; ".join(parts) + "."


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
                n: int | None = None, note: str | None = None, root: str | Path = "results",
                float_format: str = ".4g") -> dict[str, Path]:
    """Write `tables/<name>.csv` (data only) and `tables/<name>.md` (caption line, then the table).

    The caption names the metric network (e.g. `MetricNetwork.describe()`) and N. Returns both paths.
    """
    folder = results_dir(profile, root) / "tables"
    md = f"**{table_caption(title, network, n, note)}**\n\n{to_markdown(df, float_format)}\n"
    return {"csv": atomic_write_text(folder / f"{name}.csv", df.to_csv(index=False)),
            "md": atomic_write_text(folder / f"{name}.md", md)}


def save_figure(fig, name: str, profile: str, root: str | Path = "results", dpi: int = 150) -> Path:
    """Save a matplotlib figure as `figures/<name>.png` (rendered by Agg, whatever the backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(results_dir(profile, root) / "figures" / f"{name}.png", buf.getvalue())


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


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages results depend on (None when absent)."""
    out = {"python": platform.python_version()}
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
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def provenance_section(profile: str, *, seeds: dict[str, int] | int, data_fingerprint: str | None,
                       metric_networks: dict[str, dict] | None = None, wall_times: dict[str, float] | None = None,
                       repo: str | Path = ".", **extra: Any) -> dict[str, Any]:
    """A notebook's provenance: git state, imagefolder version, profile, seeds, data, package versions,
    networks, wall times, machine.

    `metric_networks`: metric → {name, sha256, file} (e.g. from a generation_metrics result).
    """
    return {"written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git": git_commit(repo), "imagefolder_version": __version__, "profile": profile, "seeds": seeds,
            "data_fingerprint": data_fingerprint, "packages": package_versions(),
            "metric_networks": metric_networks or {}, "wall_times_s": wall_times or {}, "machine": machine(), **extra}


def update_provenance(profile: str, section: str, entries: dict[str, Any], root: str | Path = "results") -> Path:
    """Set `sections[section]` of `provenance.json` to `entries`, keeping the other notebooks' sections.

    Read-modify-write under an exclusive lock on `provenance.json.lock`, written atomically.
    """
    path = results_dir(profile, root) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path):
        data = json.loads(path.read_text()) if path.exists() else {"profile": profile, "sections": {}}
        if data.get("profile") != profile:
            raise ValueError(f"{path} belongs to profile {data.get('profile')!r}, not {profile!r}")
        data["sections"][section] = entries
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


class Report:
    """What one notebook writes under `<root>/<profile>/`: its tables, figures and provenance section.

    `table` and `figure` write at once (a notebook that fails later keeps what it wrote); `finish`
    records the notebook's wall time, seeds, data fingerprint and metric networks in provenance.json.
    """

    def __init__(self, notebook: str, profile: str, root: str | Path = "results"):
        self.notebook, self.profile, self.root = notebook, profile, Path(root)
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.outputs: list[str] = []

    @property
    def folder(self) -> Path:
        return results_dir(self.profile, self.root)

    def table(self, df: pd.DataFrame, name: str, *, title: str, network: str | None = None,
              n: int | None = None, note: str | None = None) -> pd.DataFrame:
        paths = write_table(df, name, self.profile, title=title, network=network, n=n, note=note, root=self.root)
        self.outputs += [str(p) for p in paths.values()]
        return df

    def figure(self, fig, name: str) -> Path:
        path = save_figure(fig, name, self.profile, self.root)
        self.outputs.append(str(path))
        return path

    def finish(self, *, seeds: Any, data_fingerprint: str | None, metric_networks: dict | None = None,
               **extra: Any) -> Path:
        wall = (datetime.datetime.now(datetime.timezone.utc) - self.started).total_seconds()
        section = provenance_section(self.profile, seeds=seeds, data_fingerprint=data_fingerprint,
                                     metric_networks=metric_networks, wall_times={self.notebook: round(wall, 1)},
                                     outputs=self.outputs, **extra)
        return update_provenance(self.profile, self.notebook, section, self.root)
