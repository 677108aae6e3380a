"""reports.py: a figure's alt text reaches its report, and the index page from a small synthetic results folder."""
import base64
import datetime
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402

from imagefolder import claims, config, reports  # noqa: E402
from imagefolder import results as R  # noqa: E402


def test_report_figure_shows_its_png_with_alt_text_and_the_report_keeps_it(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **k: shown.append(obj))
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    report = R.Report("01_token_length", "smoke", tmp_path)
    report.figure(fig, "curve", alt="a line falling from 1 to 0")
    assert not plt.fignum_exists(fig.number)  # closed: the notebook does not render it a second time
    png = (tmp_path / "smoke" / "figures" / "curve.png").read_bytes()
    data, meta = shown[0]._repr_png_()  # base64, as a notebook stores it
    assert base64.b64decode(data) == png and meta["alt"] == "a line falling from 1 to 0"
    assert meta["width"] == round(int.from_bytes(png[16:20], "big") * 100 / R.FIGURE_DPI)

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": data}, metadata={"image/png": meta}),
                    nbformat.v4.new_output("display_data", data={"image/png": data})]
    nb.cells = [cell]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    page = reports.render_report(path, tmp_path / "nb.html", "smoke").read_text()
    assert 'alt="a line falling from 1 to 0"' in page and f'width="{meta["width"]}"' in page
    assert page.count("<img") == 2  # an image without alt text is rendered as nbconvert renders it


def _results(root: Path) -> Path:
    """A cpu results folder with the tables the index reads its anchors from, one notebook and its provenance."""
    folder = root / "cpu"
    (folder / "tables").mkdir(parents=True)
    pd.DataFrame({"method": ["ImageFolder", "real val images (baseline)"], "gFD_evaluator": [40.0, 3.75],
                  "paper gFID (Inception, ImageNet)": [3.53, None], "N_gen": [500, 500]}
                 ).to_csv(folder / "tables" / "table4_comparison.csv", index=False)
    pd.DataFrame({"model": ["ImageFolder (main)", "the main tokenizer's reconstructions of val images (ceiling)",
                            "real val images (baseline)"], "gFD_evaluator": [11.25, 4.5, 2.5],
                  "recall_evaluator": [0.3, 0.5, 0.75], "gFD_evaluator sd": [0.25, None, None]}
                 ).to_csv(folder / "tables" / "generator_main.csv", index=False)
    pd.DataFrame({"target": ["gFD_evaluator at most 12", "recall_evaluator at least 0.9 × the reconstructions' 0.5"],
                  "ours": [11.25, 0.3], "threshold": [12, 0.45], "met": [True, False]}
                 ).to_csv(folder / "tables" / "generator_main_targets.csv", index=False)
    pd.DataFrame({"variant": ["a", "a", "b"], "seed": [0, 1, 0], "gFD_evaluator": [31.5, 44.0, 46.5]}
                 ).to_csv(folder / "tables" / "table9_branch_settings_runs.csv", index=False)
    pd.DataFrame({"tokenizer": ["ImageFolder (main)"], "rFD_evaluator": [3.125]}
                 ).to_csv(folder / "tables" / "tokenizer_main.csv", index=False)
    (folder / "figures").mkdir()
    (folder / "figures" / "claims_forest.png").write_bytes(b"\x89PNG")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 04 · Branches")]
    (folder / "executed").mkdir()
    nbformat.write(nb, folder / "executed" / "04_semantic_branch.ipynb")
    written = datetime.datetime(2026, 12, 2, 1, 0, tzinfo=datetime.UTC)
    R.update_provenance("cpu", "04_semantic_branch", {
        "written_at": written.isoformat(), "wall_times_s": {"04_semantic_branch": 600.0},
        "outputs": ["results/cpu/tables/table9_branch_settings.csv", "results/cpu/figures/table9_gfd.png"],
        "metric_networks": {"FD/IS/precision/recall": {"name": "evaluator", "sha256": "ff7af471"}},
        "models": {"runs/a.safetensors": None, "runs/b.safetensors": None},
        "models_trained_at": {"runs/a.safetensors": "2026-12-01T20:00:00+00:00",  # before the run: cached
                              "runs/b.safetensors": "2026-12-02T00:55:00+00:00"}}, root=root)
    return folder


def test_index_opens_with_counts_and_forest_then_how_to_read_then_the_ledger_with_caveats(tmp_path, monkeypatch):
    _results(tmp_path)
    rows = [{"claim": "Two beat one", "paper": "gFID 5.96 vs 6.56", "ours": "39.9 vs 39.9", "verdict": "inconclusive",
             "table": "table9_branch_settings", "caveat": "study generators are early in training",
             "budget": "same direction at 4×"},
            {"claim": "Headline", "paper": "gFID 3.53", "ours": "11.3", "verdict": "reported",
             "table": "generator_main", "caveat": ""}]
    monkeypatch.setattr(claims, "claims", lambda tables, cfg: rows)
    monkeypatch.setattr(claims, "counts_line", lambda got: f"verdicts: {len(got)} counted", raising=False)
    page = reports.write_index("cpu", tmp_path).read_text()
    order = [page.index(s) for s in ("verdicts: 2 counted", 'src="figures/claims_forest.png"', "How to read this page",
                                     "<table class='ledger'>", "<table class='provenance'>")]
    assert order == sorted(order)
    forest = page[page.index('src="figures/claims_forest.png"'):]
    assert forest.index(f'alt="{html.escape(claims.FOREST_ALT)}"') < forest.index(">")  # the plot has alt text
    assert "<th>caveat</th>" in page and "<td>study generators are early in training</td>" in page
    assert "<th>at 4× the study budget</th>" in page and "<td>same direction at 4×</td>" in page
    cfg = config.profile("cpu")
    for anchor in ("gFD_evaluator 3.75 at N = 500", "gFD_evaluator 11.2, recall_evaluator 0.3 (mean over sampling",
                   "scored as samples: gFD_evaluator 4.5, recall_evaluator 0.5",
                   html.escape("gFD_evaluator at most 12: 11.2 (met); recall_evaluator at least 0.9 × the "
                               "reconstructions' 0.5: 0.3 (not met)"), "31.5 to 46.5 over 3 runs",
                   "rFD_evaluator 3.12", "(sha256 ff7af471)", R.budget_note(cfg, study=True),
                   R.budget_note(cfg, study=False), f"{cfg.data.resolution} px"):
        assert anchor in page, anchor
    assert "..." not in page and "…" not in page
    assert "2 models, 2026-12-01 20:00 to 2026-12-02 00:55 UTC; 1 trained before this run (cached)" in page
    assert 'src="figures/table9_gfd.png"' in page  # the card's thumbnail


def test_index_without_caveats_or_forest_leaves_them_out(tmp_path, monkeypatch):
    folder = _results(tmp_path)
    (folder / "figures" / "claims_forest.png").unlink()
    monkeypatch.setattr(claims, "claims", lambda tables, cfg: [
        {"claim": "c", "paper": "p", "ours": "o", "verdict": "holds", "table": "table9_branch_settings"}])
    monkeypatch.setattr(claims, "counts_line", lambda got: "1 holds", raising=False)
    page = reports.write_index("cpu", tmp_path).read_text()
    assert "<th>caveat</th>" not in page and "claims_forest" not in page and "<b>1 holds</b>" in page
    section = json.loads((folder / "provenance.json").read_text())["sections"]["04_semantic_branch"]
    del section["models_trained_at"]
    R.update_provenance("cpu", "04_semantic_branch", section, root=tmp_path)
    assert "<td>not recorded</td>" in reports.write_index("cpu", tmp_path).read_text()
