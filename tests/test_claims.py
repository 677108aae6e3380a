import pandas as pd

from imagefolder import claims


def test_ledger_from_tables(tmp_path):
    tables = tmp_path / "cpu" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame({"variant": ["single detail branch", "two detail branches", "two semantic branches",
                              "one semantic, one detail"],
                  "gFD_evaluator": [9.0, 7.0, 6.5, 5.0]}).to_csv(tables / "table9_branch_settings.csv", index=False)
    gfd = {"single detail branch": [9.0, 9.2, 8.8], "two detail branches": [7.0, 7.1, 6.9],
           "two semantic branches": [6.5, 6.6, 6.4], "one semantic, one detail": [4.9, 5.0, 5.1]}
    pd.DataFrame([{"variant": v, "seed": s, "gFD_evaluator": g[s]} for v, g in gfd.items() for s in range(3)]).to_csv(
        tables / "table9_branch_settings_runs.csv", index=False)  # the per-seed rows the ledger judges
    pd.DataFrame({"model": ["ImageFolder", "VAR d16"], "flops_vs_VAR": [0.49, 1.0]}).to_csv(
        tables / "table6_paper_config_flops.csv", index=False)
    text = claims.write_ledger("cpu", tmp_path).read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**holds**" in rows["Two branches beat one at equal length (product quantization)"]
    assert "**holds**" in rows["Semantic regularization on one branch beats all branches"]
    assert "**does not hold: nearer 1/2**" in rows["ImageFolder needs about 1/4 of VAR's FLOPs"]
    assert "**not run**" in rows["Quantizer dropout improves generation"]
    assert "5 ± 0.1" in rows["Semantic regularization on one branch beats none"]
