"""results.py and paper_reference.yaml: the paper's numbers, atomic tables/figures, merged provenance."""
import json
import multiprocessing
import os
import re
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from imagefolder import results as R  # noqa: E402

REFERENCE_MD = Path(__file__).resolve().parents[1] / ".." / "shared" / "paper" / "reference-numbers.md"


# ----------------------------------------------------------------------------- the paper's numbers

def _markdown_tables() -> dict[str, tuple[list[str], list[list[str]]]]:
    """Table id (table1, table5a, ...) → (header, rows) from reference-numbers.md."""
    out, number, tables = {}, None, []

    def flush():
        if number is not None:
            for i, t in enumerate(tables):
                out[f"table{number}" + ("abcd"[i] if len(tables) > 1 else "")] = t

    lines = REFERENCE_MD.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        heading = re.match(r"## Table (\d+)", lines[i])
        if heading or lines[i].startswith("## "):
            flush()
            number, tables = (heading.group(1) if heading else None), []
        elif lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            tables.append((header, rows))
            continue
        i += 1
    flush()
    return out


def _same(ours, theirs: str) -> bool:
    """A yaml value equals a markdown cell: strings verbatim, numbers by value (2.40 == 2.4)."""
    if isinstance(ours, str):
        return ours == theirs
    return ours is not None and float(ours) == float(theirs)


def test_paper_reference_matches_the_markdown():
    if not REFERENCE_MD.is_file():
        pytest.skip(f"{REFERENCE_MD} is absent: cannot check paper_reference.yaml against it")
    md = _markdown_tables()
    yaml_tables = R.paper_tables()
    assert sorted(md) == sorted(yaml_tables) == sorted(
        ["table1", "table2", "table3", "table4", "table5a", "table5b", "table5c", "table5d", "table6", "table7",
         "table8", "table9"])
    cells = 0
    for tid, (header, rows) in md.items():
        spec = yaml_tables[tid]
        key_col = header.index(spec["row_header"])
        assert sorted(map(str, spec["columns"])) == sorted(h for j, h in enumerate(header) if j != key_col), tid
        assert [r[key_col] for r in rows] == [str(k) for k in spec["rows"]], tid
        for row in rows:
            for j, column in enumerate(header):
                if j != key_col:
                    ours = R.paper_value(tid, row[key_col], column)
                    assert _same(ours, row[j]), (tid, row[key_col], column, ours, row[j])
                    cells += 1
    assert cells == 109


def test_paper_text_facts():
    if REFERENCE_MD.is_file():
        text = REFERENCE_MD.read_text(encoding="utf-8")
        for phrase in ("gFID 5.24 vs 3.53 for 2", "Codebook utilization of the ImageFolder tokenizer: 100%",
                       "about 1/4 of VAR's FLOPs", "batch size 1, one A100", "same number of AR steps as VAR (10)"):
            assert phrase in text, phrase
    assert R.paper_fact("table5c", "gFID_4_branches") == 5.24 and R.paper_fact("table5c", "gFID_2_branches") == 3.53
    assert R.paper_fact("table4", "codebook_utilization") == 1.0
    assert R.paper_fact("table6", "flops_ratio_to_var") == 0.25 and R.paper_fact("table6", "device") == "A100"
    assert R.paper_fact("table6", "batch_size") == 1 and R.paper_fact("table6", "ar_steps_imagefolder") == 10
    with pytest.raises(KeyError):
        R.paper_fact("table6", "nope")


def test_paper_value_lookup():
    assert R.paper_value("table7", 286, "rFID") == 1.57
    assert R.paper_value("table1", "10×10", "rFID") == R.paper_value("table1", "rFID", "10×10") == 4.15
    assert R.paper_value("table2", "rFID", "linear") == ">5"
    assert R.paper_value("table5b", "rFID", 0.1) == 1.57
    assert R.paper_value("table4", "ImageFolder", "L.P.") == 58.0
    assert R.paper_value("table7", 300, "rFID") is None and R.paper_value("table7", 286, "PSNR") is None
    with pytest.raises(KeyError, match="unknown paper table"):
        R.paper_value("table10", 1, 2)


def test_with_paper_columns_puts_the_paper_beside_ours():
    ours = pd.DataFrame({"length": [265, 286, 999], "rFID": [9.0, 8.0, 7.0], "gFID": [1.0, 2.0, 3.0]})
    out = R.with_paper_columns(ours, "table7", "length", ["rFID", "gFID"])
    assert list(out.columns) == ["length", "rFID", "rFID (paper)", "gFID", "gFID (paper)"]
    assert out["rFID (paper)"].tolist() == [1.86, 1.57, None] and out["gFID (paper)"].tolist()[:2] == [3.98, 3.53]
    renamed = R.with_paper_columns(ours.rename(columns={"rFID": "FD_evaluator (recon)"}), "table7", "length",
                                   {"FD_evaluator (recon)": "rFID"})
    assert renamed["FD_evaluator (recon) (paper)"].tolist()[0] == 1.86
    with pytest.raises(KeyError):
        R.with_paper_columns(ours, "table7", "length", ["IS"])


# ----------------------------------------------------------------------------- tables, figures, atomicity

def test_write_table_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"method": ["a|b", "c"], "FD_evaluator": [1.23456, float("nan")], "N": [100, 100]})
    paths = R.write_table(df, "table7", "smoke", title="Table 7 — token length",
                          network="evaluator (sha256 0123456789abcdef)", n=100, root=tmp_path)
    assert paths["csv"] == tmp_path / "smoke" / "tables" / "table7.csv"
    back = pd.read_csv(paths["csv"])
    assert back["method"].tolist() == ["a|b", "c"] and back["FD_evaluator"].iloc[0] == 1.23456
    md = paths["md"].read_text().splitlines()
    assert md[0] == "**Table 7 — token length; metrics by evaluator (sha256 0123456789abcdef); N = 100.**"
    assert md[2] == "| method | FD_evaluator | N |" and md[4] == "| a\\|b | 1.235 | 100 |" and md[5] == "| c |  | 100 |"
    assert sorted(p.name for p in paths["csv"].parent.iterdir()) == ["table7.csv", "table7.md"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    R.atomic_write_text(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        R.atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    monkeypatch.undo()
    R.atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_save_figure_png(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    path = R.save_figure(fig, "curve", "smoke", root=tmp_path)
    plt.close(fig)
    assert path == tmp_path / "smoke" / "figures" / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- provenance

def _add_sections(args):
    root, worker = args
    for i in range(5):
        R.update_provenance("smoke", f"nb{worker}_{i}", {"worker": worker, "i": i}, root=root)


def test_provenance_sections_merge(tmp_path):
    section = R.provenance_section("smoke", seeds={"tokenizer": 0}, data_fingerprint="abc",
                                   metric_networks={"FD": {"name": "evaluator", "sha256": "0123"}},
                                   wall_times={"train": 1.5}, repo=Path(__file__).parent)
    assert len(section["git"]["commit"]) == 40 and section["packages"]["torch"] and section["machine"]["cpu_count"]
    R.update_provenance("smoke", "01_token_length", section, root=tmp_path)
    R.update_provenance("smoke", "02_pq_tokenizer", {"seeds": 1}, root=tmp_path)
    R.update_provenance("smoke", "02_pq_tokenizer", {"seeds": 2}, root=tmp_path)
    data = json.loads((tmp_path / "smoke" / "provenance.json").read_text())
    assert data["profile"] == "smoke" and sorted(data["sections"]) == ["01_token_length", "02_pq_tokenizer"]
    assert data["sections"]["02_pq_tokenizer"] == {"seeds": 2}
    assert data["sections"]["01_token_length"]["metric_networks"]["FD"]["sha256"] == "0123"
    with pytest.raises(ValueError, match="profile"):
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "provenance.json").write_text(json.dumps({"profile": "smoke", "sections": {}}))
        R.update_provenance("cpu", "x", {}, root=tmp_path)


def test_provenance_concurrent_writers_lose_nothing(tmp_path):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_add_sections, [(tmp_path, 0), (tmp_path, 1)])
    data = json.loads((tmp_path / "smoke" / "provenance.json").read_text())
    assert len(data["sections"]) == 10


def test_dirty_means_code_changed_not_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "results" / "t.csv").write_text("b\n")
    assert R.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert R.git_commit(tmp_path)["dirty"] is True


# ----------------------------------------------------------------------------- reports: variants, tables, HTML

def test_a_copy_or_an_override_run_is_a_variant(tmp_path, monkeypatch):
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    df = pd.DataFrame({"variant": ["a", "b"], "x": [1.0, 2.0]})
    for name, overrides, folder in (("03_q", {}, tmp_path / "smoke"),
                                    ("03_q", {"run_dir": "r", "threads": 1}, tmp_path / "smoke"),
                                    ("07_mine", {}, tmp_path / "smoke" / "variants" / "07_mine"),
                                    ("03_q", {"quantizer.dropout_p": 0.3}, tmp_path / "smoke" / "variants" / "03_q")):
        report = R.Report("03_q", "smoke", tmp_path, name=name, overrides=overrides)
        assert report.folder == folder
        report.table(df, "t", title="T")
        report.finish(seeds=[0], data_fingerprint=None)
        section = json.loads((folder / "provenance.json").read_text())["sections"][name]
        assert (folder / "tables" / "t.csv").exists() and section["overrides"] == overrides
        assert section["notebook"] == "03_q" and name in section["wall_times_s"]


def test_shown_tables_keep_the_csv_whole_and_fit_a_page():
    wide = pd.DataFrame({"variant": ["a", "b"], "seed": [0, 0], "minutes": [1.0, 2.0]}
                        | {f"m{i}": [float(i), i + 0.5] for i in range(12)})
    wide.insert(4, "paper m0", [9.0, 8.0])  # beside m0, as with_paper_columns puts it
    blocks, shared = R.display_blocks(wide)
    assert shared == {"seed": 0}
    assert [h for h, _ in blocks] == ["compared with the paper", "our other columns"]
    assert list(blocks[0][1].columns) == ["variant", "m0", "paper m0"]
    assert "minutes" not in blocks[1][1].columns and list(blocks[1][1].columns)[:2] == ["variant", "m1"]
    text = R.table_markdown(wide, "Cap.", anchor="table-x")
    assert text.startswith('<a id="table-x"></a>**Cap.**') and text.endswith("Every row: seed 0.")
    narrow = R.display_blocks(pd.DataFrame({"k": ["a"], "v": [1]}))
    assert narrow[0][0][0] is None and narrow[1] == {}  # one row: nothing is "the same in every row"


def test_with_paper_columns_names_keys_and_facts():
    ours = pd.DataFrame({"P": ["one", "two", "four"], "gFD": [1.0, 2.0, 3.0]})
    out = R.with_paper_columns(ours, "table5c", [None, "2", "4"], {}, names={"gFD": "paper gFID"},
                               facts={"gFD": {"2": "gFID_2_branches", "4": "gFID_4_branches"}})
    assert list(out.columns) == ["P", "gFD", "paper gFID"] and out["paper gFID"].tolist() == [None, 3.53, 5.24]
    with pytest.raises(ValueError, match="2 paper row keys"):
        R.with_paper_columns(ours, "table5c", ["1", "2"], ["gFD"])


def _executed_notebook(path: Path) -> Path:
    import nbformat
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("x")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="\rtok:  10%|█ | 5/50 [00:01<00:09, 5img/s]"),
        nbformat.v4.new_output("stream", name="stderr",
                               text="/home/me/.venv/lib/x.py:21: UserWarning: something\n  import y\n"),
        nbformat.v4.new_output("stream", name="stderr", text="W1202 02:10:19.118000 5570 /home/me/.venv/lib/torch/"
                               "utils/cpp_extension.py:183] [0/0] No CUDA runtime is found\n"),
        nbformat.v4.new_output("stream", name="stderr", text="tok-123: 50 steps in 9 s, 44 img/s, loss_model 1.2\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "PosixPath('results/x.png')"}, execution_count=1),
        nbformat.v4.new_output("display_data",
                               data={"text/markdown": "| a |\n|---|\n| 1 |", "text/plain": "<Markdown>"}),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# 01 · A title"), code,
                nbformat.v4.new_markdown_cell("## What this run shows")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_make_html_cleans_reports_and_writes_the_index(tmp_path, monkeypatch):
    from imagefolder import claims, reports
    from imagefolder.claims import VERDICT_RULE
    monkeypatch.setattr(claims, "counts_line", lambda rows: f"{len(rows)} claims", raising=False)
    folder = tmp_path / "smoke"
    _executed_notebook(folder / "executed" / "01_token_length.ipynb")
    R.update_provenance("smoke", "01_token_length", {"outputs": ["results/smoke/tables/table9_branch_settings.csv",
                                                                 "results/smoke/figures/token_counts.png"],
                                                     "wall_times_s": {"01_token_length": 60.0}}, root=tmp_path)
    paths = reports.render("smoke", tmp_path)
    assert paths == [folder / "reports" / "01_token_length.html", folder / "index.html"]
    page = paths[0].read_text()
    assert "5/50" not in page and "UserWarning" not in page and "/home/me" not in page and "PosixPath" not in page
    assert "CUDA runtime" not in page
    assert "44 img/s" in page and 'href="../index.html"' in page and 'id="What-this-run-shows"' in page
    index = paths[1].read_text()
    assert 'href="reports/01_token_length.html"' in index and 'src="figures/token_counts.png"' in index
    assert "reports/01_token_length.html#What-this-run-shows" in index  # Table 9 claims
    assert index.count("<tr>") >= 2 and "1.0 min" in index
    assert index.count("<li><strong>") == VERDICT_RULE.count("\n- ") + 1 and "<br>" not in index  # one item per rule
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        reports.render("cpu", tmp_path)


def _compare_results():
    """`compare` of scripts/compare_results.py (a script, not a module of the package)."""
    import runpy
    return runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "compare_results.py"))["compare"]


def test_compare_results_flags_means_beyond_the_committed_sd(tmp_path):
    compare = _compare_results()
    for folder, rfd in (("a", [10.0, 20.0]), ("b", [10.5, 23.0])):
        (tmp_path / folder).mkdir()
        table = pd.DataFrame({"variant": ["x", "y"], "rFD": rfd, "rFD sd": [1.0, 2.0]})
        table.to_csv(tmp_path / folder / "t.csv", index=False)
    result = compare(tmp_path / "a", tmp_path / "b", [])
    assert result["difference"].tolist() == [0.5, 3.0] and result["|difference| / sd"].tolist() == [0.5, 1.5]
    assert result["beyond sd"].tolist() == [False, True]


def test_compare_results_matches_rows_a_single_column_does_not_name(tmp_path):
    compare = _compare_results()
    for folder, acc in (("a", [70.0, 50.0, 60.0]), ("b", [70.0, 51.0, 60.0])):  # b: rows reordered
        (tmp_path / folder).mkdir()
        table = pd.DataFrame({"features": ["main", "main", "study"], "label": ["category", "subcategory", "category"],
                              "acc": acc, "acc sd": [1.0, 2.0, 4.0]})
        (table if folder == "a" else table.iloc[[2, 1, 0]]).to_csv(tmp_path / folder / "probe.csv", index=False)
    result = compare(tmp_path / "a", tmp_path / "b", [])
    assert result["row"].tolist() == ["main / category", "main / subcategory", "study / category"]
    assert result["difference"].tolist() == [0.0, 1.0, 0.0]
