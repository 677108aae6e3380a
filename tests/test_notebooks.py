"""Every notebook executes under papermill with the smoke profile and writes its tables and figures; a copy
run with an override (the README's example) writes its own results and leaves the original's untouched."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client.kernelspec import find_kernel_specs
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))  # the six below, and any copy a user adds
KERNEL = "imagefolder"
EXPECTED = {  # notebook → tables and figures it must write
    "01_token_length": ["tables/table7_token_length.csv", "tables/table7_token_length_runs.csv",
                        "tables/table1_final_scale.csv", "tables/table1_final_scale_runs.csv",
                        "figures/token_counts.png"],
    "02_pq_tokenizer": ["tables/tokenizer_main.csv", "tables/table2_encoder_tuning.csv", "tables/table5c_branches.csv",
                        "tables/table8_codebook_size.csv", "tables/table8_codebook_size_runs.csv",
                        "figures/fig6_branch_zeroing.png", "figures/tokenizer_training_curve.png"],
    "03_quantizer_dropout": ["tables/table5a_n_start.csv", "tables/table5a_n_start_runs.csv",
                             "tables/table5b_dropout_ratio.csv", "tables/table3_rows1-2.csv",
                             "tables/table3_rows1-2_runs.csv", "figures/fig7_first_n_scales.png"],
    "04_semantic_branch": ["tables/table9_branch_settings.csv", "tables/table9_branch_settings_runs.csv",
                           "tables/seed_noise.csv", "tables/table5d_lambda_clip.csv",
                           "tables/table3_ablation_ladder.csv", "tables/table3_ablation_ladder_runs.csv"],
    "05_ar_training": ["tables/generator_main.csv", "tables/generator_main_curve.csv", "tables/table4_comparison.csv",
                       "tables/table4_comparison_runs.csv", "tables/folded_vs_unfolded.csv", "figures/fig9_samples.png",
                       "figures/fig8_zero_shot.png", "figures/fig10_topk_topp.png", "tables/fig10_sampling_sweep.csv",
                       "figures/generator_training_curve.png"],
    "06_latency_linear_probe": ["tables/table6_latency_flops.csv", "tables/table6_latency_flops_runs.csv",
                                "tables/table6_paper_config_flops.csv", "tables/table4_linear_probe.csv",
                                "tables/table4_linear_probe_runs.csv", "figures/table6_latency.png"],
}


def test_every_notebook_is_listed_and_stripped():
    assert [nb.stem for nb in NOTEBOOKS if nb.stem in EXPECTED] == list(EXPECTED)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
            f"{path.name} has outputs: commit source notebooks stripped"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if KERNEL not in find_kernel_specs():
        pytest.fail(f"Jupyter kernel {KERNEL!r} is not registered: run `make setup`")
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_under_smoke(path, smoke_run):
    params = papermill.inspect_notebook(str(path))
    smoke = {"profile": "smoke", "out_dir": str(smoke_run / "results"), "name": path.stem,
             "overrides": {"run_dir": str(smoke_run / "runs")}}
    assert set(smoke) <= set(params), f"{path.name} lacks parameters {set(smoke) - set(params)}"
    executed = smoke_run / "executed" / path.name
    executed.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(path), str(executed), parameters=smoke, kernel_name=KERNEL, cwd=str(ROOT),
                               progress_bar=False)
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images and all(o.get("metadata", {}).get("image/png", {}).get("alt") for o in images), \
        f"{path.name}: a figure without alt text (write figures with report.figure(..., alt=...))"
    out = smoke_run / "results" / "smoke"
    out = out if path.stem in EXPECTED else out / "variants" / path.stem  # a copy writes its own results
    missing = [f for f in EXPECTED.get(path.stem, []) if not (out / f).exists()]
    assert not missing, f"{path.name} did not write {missing}"
    provenance = json.loads((out / "provenance.json").read_text())
    section = provenance["sections"][path.stem]
    assert section["profile"] == "smoke" and section["wall_times_s"][path.stem] > 0
    html, _ = HTMLExporter(exclude_input=True).from_notebook_node(nb)
    assert "<html" in html and "Traceback" not in html
    from imagefolder import reports
    page, _ = reports.exporter().from_notebook_node(nb, resources={"profile": "smoke"})
    assert page.count("<img") == len(images) and "No description has been provided" not in page


def test_plan_lists_exactly_the_runs_the_notebooks_trained(smoke_run):
    """`plan` (no training) names the same runs as the six notebooks left in their run dir, both ways."""
    from imagefolder import config, plan
    runs = smoke_run / "runs" / "smoke"
    trained = {(kind, d.name) for kind in ("tokenizer", "generator") for d in (runs / kind).glob("*")
               if (d / "model.safetensors").exists()}
    assert trained, f"no trained runs under {runs}: the notebook tests of this module run first"
    listed = plan.runs(config.profile("smoke", {"run_dir": str(smoke_run / "runs")}))
    named = {(r.kind, r.name) for r in listed}
    assert named - trained == set(), "plan lists runs no notebook trained"
    assert trained - named == set(), "notebooks trained runs plan does not list"
    assert all(r.trained for r in listed)


def test_claims_ledger_from_the_smoke_tables(smoke_run):
    from imagefolder.claims import write_ledger
    from imagefolder.tables import CLAIMS
    text = write_ledger("smoke", smoke_run / "results").read_text()
    verdicts = [line.rsplit("|", 2)[-2].strip() for line in text.splitlines() if line.startswith("| ") and "**" in line]
    assert len(verdicts) == len(CLAIMS) and "**not run**" not in verdicts  # every claim found the tables it needs
    assert "over 2 seeds" in text  # the smoke profile's two seeds are paired


def _readme_example() -> tuple[str, str, dict]:
    """(notebook copied, the copy's name, OVERRIDES) of the README's "Adapting an ablation" example."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    copy = re.search(r"cp notebooks/(\S+)\.ipynb notebooks/(\S+)\.ipynb", text)
    overrides = re.search(r"make nb-\d+ OVERRIDES='(.+?)'", text)
    assert copy and overrides, "README: the ablation example (cp ... and make nb-NN OVERRIDES='...') is missing"
    return copy.group(1), copy.group(2), json.loads(overrides.group(1))


def test_readme_example_overrides_a_field_the_notebook_does_not_sweep():
    from imagefolder import config, tables
    original, _, overrides = _readme_example()
    assert original == "03_quantizer_dropout"
    cfg = config.profile("cpu")
    swept = {k for spec in (tables.TABLE5A, tables.TABLE5B, tables.TABLE3_ROWS12)
             for variant in spec.variants(cfg).values() for k in variant} | {"quantizer.dropout_p"}  # + Fig. 7
    assert overrides and not set(overrides) & swept, \
        f"the README's example overrides swept fields {set(overrides) & swept}"
    config.validate(config.apply_overrides(cfg, overrides))


def test_a_copy_with_an_override_leaves_the_original_untouched(smoke_run, tmp_path):
    original, name, overrides = _readme_example()
    copy = tmp_path / f"{name}.ipynb"
    shutil.copy(ROOT / "notebooks" / f"{original}.ipynb", copy)
    out = smoke_run / "results" / "smoke"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "variants" not in p.parts}
    params = {"profile": "smoke", "out_dir": str(smoke_run / "results"), "name": name,
              "overrides": {"run_dir": str(smoke_run / "runs")} | overrides}
    papermill.execute_notebook(str(copy), str(tmp_path / "executed.ipynb"), parameters=params, kernel_name=KERNEL,
                               cwd=str(ROOT), progress_bar=False)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "variants" not in p.parts}
    assert after == before, "the copy wrote into results/smoke/ outside variants/"
    variant = out / "variants" / name
    missing = [f for f in EXPECTED[original] if not (variant / f).exists()]
    assert not missing, f"the copy did not write {missing} under {variant}"
    section = json.loads((variant / "provenance.json").read_text())["sections"][name]
    assert section["notebook"] == original and section["overrides"] == params["overrides"]


def test_a_notebook_starts_and_finishes_in_one_call_each(tmp_path, capsys):
    from imagefolder import notebook
    run = notebook.start("01_token_length", "smoke", 3, "cpu", "01_token_length", str(tmp_path),
                         {"run_dir": str(tmp_path / "runs")})
    cfg, report, network, FD, IS = run
    assert (cfg.profile, cfg.seed, cfg.device, cfg.run_dir) == ("smoke", 3, "cpu", str(tmp_path / "runs"))
    assert report.variant is None and (FD, IS) == ("FD_evaluator", "IS_evaluator")  # run_dir: not a variant
    assert "metrics by evaluator" in capsys.readouterr().out
    notebook.finish(run, tokenizer="tok.safetensors")
    section = json.loads((tmp_path / "smoke" / "provenance.json").read_text())["sections"]["01_token_length"]
    assert section["seeds"] == cfg.study.seeds and section["tokenizer"] == "tok.safetensors"
    assert section["metric_networks"]["FD/IS/precision/recall"]["sha256"] == network.sha256
    assert section["override_roles"] == {"run_dir": "bookkeeping"} and section["data_fingerprint"]
