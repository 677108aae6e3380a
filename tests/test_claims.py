import pandas as pd

from imagefolder import claims
from imagefolder.tables import Comparison


def test_verdict_rule():
    assert Comparison(3.0, 4.0).verdict == "holds"  # lower is better, beats 5% of 4.0
    assert Comparison(3.9, 4.0).verdict == "does not show at this scale"
    assert Comparison(3.0, 4.0, sd_a=1.5, sd_b=0.2).verdict == "does not show at this scale"  # within seed spread
    assert Comparison(60.0, 10.0, higher=True).verdict == "holds"
    assert Comparison(10.0, 60.0, higher=True).verdict == "does not show at this scale"


def test_ledger_from_tables(tmp_path):
    tables = tmp_path / "cpu" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame({"variant": ["single detail branch", "two detail branches", "two semantic branches",
                              "one semantic, one detail"],
                  "gFD_evaluator": [9.0, 7.0, 6.5, 5.0], "gFD_evaluator sd": [0.1, 0.1, 0.1, 0.1],
                  "gFD_evaluator (paper)": [6.56, 5.96, 5.21, 3.53]}).to_csv(tables / "table9_branch_settings.csv", index=False)
    pd.DataFrame({"model": ["ImageFolder", "VAR d16"], "flops_vs_VAR": [0.49, 1.0]}).to_csv(
        tables / "table6_paper_config_flops.csv", index=False)
    text = claims.write_ledger("cpu", tmp_path).read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**holds**" in rows["Two branches beat one at equal length (product quantization)"]
    assert "**holds**" in rows["Semantic regularization on one branch beats all branches"]
    assert "**does not hold: nearer 1/2**" in rows["ImageFolder needs about 1/4 of VAR's FLOPs"]
    assert "**not run**" in rows["Quantizer dropout improves generation"]
    assert "5 ± 0.1" in rows["Semantic regularization on one branch beats none"]
