import pandas as pd
import pytest

from imagefolder import claims, tables


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


def _seeded(folded: list[float], unfolded: list[float]) -> pd.DataFrame:
    seeds = list(range(len(folded)))
    return pd.DataFrame({"variant": ["folded"] * len(seeds) + ["unfolded"] * len(seeds), "seed": seeds + seeds,
                         "gFD_evaluator": folded + unfolded})


def test_verdicts_pair_the_rows_by_seed():
    text = claims.verdicts(tables.FOLDED_VS_UNFOLDED, _seeded([5.0, 5.5, 4.5], [9.0, 9.6, 8.7]))
    assert "**holds**" in text and "folded 5 ± 0.5 vs unfolded 9.1 ± 0.46" in text and "over 3 seeds" in text
    assert "**reversed**" in claims.verdicts(tables.FOLDED_VS_UNFOLDED, _seeded([9.0, 9.6, 8.7], [5.0, 5.5, 4.5]))
    # a large mean gain with a sign flip across seeds is not enough
    assert "**does not show**" in claims.verdicts(tables.FOLDED_VS_UNFOLDED, _seeded([5.0, 12.0, 4.0], [9.0, 9.0, 9.0]))
    # pairing is by seed: a seed only one side ran is left out
    text = claims.verdicts(tables.FOLDED_VS_UNFOLDED, _seeded([5.0, 5.5, 4.5], [9.0, 9.6, 8.7]).drop(index=5))
    assert "over 2 seeds" in text


def test_one_observation_per_row_has_no_interval():
    df = pd.DataFrame({"variant": ["folded", "unfolded"], "gFD_evaluator": [5.0, 9.0]})
    text = claims.verdicts(tables.FOLDED_VS_UNFOLDED, df)
    assert "**does not show**" in text and "one run each: no interval" in text


def test_latency_is_paired_by_timing_round():
    rounds = pd.DataFrame({"layout": ["folded"] * 3 + ["unfolded"] * 3, "round": [0, 1, 2] * 2,
                           "latency_s": [0.10, 0.11, 0.09, 0.20, 0.22, 0.19], "positions": [10] * 3 + [20] * 3,
                           "device": ["cpu"] * 6})
    text = claims.verdicts(tables.TABLE6, rounds)
    assert tables.TABLE6.runs == "table6_latency_flops_runs"
    assert "**holds**" in text and "over 3 rounds" in text and "positions 10 vs 20" in text


def _usage(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"tokenizer": ["ImageFolder (main)"] * len(values), "seed": range(len(values)),
                         "usage": values})


@pytest.mark.parametrize("values, verdict", [([0.99, 0.98, 0.995], "holds"), ([0.80, 0.78, 0.82], "does not hold"),
                                             ([0.99, 0.80, 0.97], "does not show"), ([0.99], "does not show")])
def test_level_claim(values, verdict):
    claim = next(c for c in tables.CLAIMS if isinstance(c, tables.LevelClaim))
    ours, got = claims.judge(claim, _usage(values))
    assert got == verdict and f"level {tables.USAGE_LEVEL:.0%}" in ours


def test_reported_claim_states_ours_without_a_comparison():
    claim = next(c for c in tables.CLAIMS if isinstance(c, tables.Reported))
    df = pd.DataFrame([{"model": "ImageFolder (main)", "FD_evaluator": 11.5, "IS_evaluator": 3.2,
                        "precision_evaluator": 0.7, "recall_evaluator": 0.5, "class_consistency_evaluator": 0.8}])
    ours, verdict = claims.judge(claim, df)
    assert verdict == "reported" and ours.startswith("FD_evaluator 11.5, IS_evaluator 3.2")


def test_every_kind_of_claim_in_the_ledger_has_a_rule():
    unjudged = claims.judge.dispatch(tables.ClaimBase)
    assert [c.text for c in tables.CLAIMS if claims.judge.dispatch(type(c)) is unjudged] == []


def test_a_claim_without_a_rule_is_refused_by_name():
    claim = tables.ClaimBase(text="a bare claim", table="table9_branch_settings", paper="")
    with pytest.raises(TypeError, match="no rule judges a ClaimBase \\(claim 'a bare claim'\\)"):
        claims.judge(claim, pd.DataFrame())
