import math

import pandas as pd
import pytest

from imagefolder import claims, config, forest, stats, tables


def _claim(text: str) -> tables.ClaimBase:
    return next(c for c in tables.CLAIMS if c.text == text)


def test_ledger_from_tables(tmp_path):
    folder = tmp_path / "cpu" / "tables"
    folder.mkdir(parents=True)
    pd.DataFrame({"variant": ["single detail branch", "two detail branches", "two semantic branches",
                              "one semantic, one detail"],
                  "gFD_evaluator": [9.0, 7.0, 6.5, 5.0]}).to_csv(folder / "table9_branch_settings.csv", index=False)
    gfd = {"single detail branch": [9.0, 9.2, 8.8], "two detail branches": [7.0, 7.1, 6.9],
           "two semantic branches": [6.5, 6.6, 6.4], "one semantic, one detail": [4.9, 5.0, 5.1]}
    pd.DataFrame([{"variant": v, "seed": s, "gFD_evaluator": g[s], "class_consistency_evaluator": 0.2 + s / 10}
                  for v, g in gfd.items() for s in range(3)]).to_csv(
        folder / "table9_branch_settings_runs.csv", index=False)  # the per-seed rows the ledger judges
    pd.DataFrame({"model": ["ImageFolder", "VAR d16"], "flops_vs_VAR": [0.49, 1.0]}).to_csv(
        folder / "table6_paper_config_flops.csv", index=False)
    text = claims.write_ledger("cpu", tmp_path).read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["claim"] == ["| claim", "paper", "ours", "our effect, 95 % CI", "paper's effect", "verdict", "caveat |"]
    # ln(9/7) = 0.251 over a paper's ln(6.56/5.96) = 0.096: beyond it
    two = rows["Two branches beat one at equal length (product quantization)"]
    assert two[5] == "**holds**" and two[3].startswith("+0.251 [") and two[4] == "+0.096 (+10.1 %)"
    assert two[6] == ("study-budget generators with class consistency 0.20–0.40; one that always drew the most "
                      "frequent class would score about that class's share of the labels: where that is higher, "
                      "this is an early-training comparison |")
    # ln(6.5/5) = 0.262 below the paper's ln(5.21/3.53) = 0.389
    assert rows["Semantic regularization on one branch beats all branches"][5] == "**holds, weaker than the paper's**"
    assert rows["ImageFolder needs about 1/4 of VAR's FLOPs"][5] == "**does not hold: nearer 1/2**"
    assert rows["Quantizer dropout improves generation"][5] == "**not run**"
    assert "5 ± 0.1" in rows["Semantic regularization on one branch beats none"][2]
    assert (f"{len(tables.CLAIMS)} claims: 1 holds; 2 holds, weaker than the paper's; 1 does not hold; "
            f"{len(tables.CLAIMS) - 4} not run.") in text
    assert (tmp_path / "cpu" / "figures" / "claims_forest.png").stat().st_size > 10_000
    assert f"![{claims.FOREST_ALT}](figures/claims_forest.png)" in text


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
    rounds = pd.DataFrame({"layout": ["folded"] * 3 + ["unfolded"] * 3 + ["VAR-style"] * 3, "round": [0, 1, 2] * 3,
                           "latency_s": [0.10, 0.11, 0.09, 0.20, 0.22, 0.19, 0.101, 0.109, 0.092],
                           "positions": [10] * 3 + [20] * 3 + [11] * 3, "device": ["cpu"] * 9})
    text = claims.verdicts(tables.TABLE6, rounds)
    assert tables.TABLE6.runs == "table6_latency_flops_runs"
    folding, comparable = text.splitlines()
    assert "**holds**" in folding and "over 3 rounds" in folding and "positions 10 vs 20" in folding
    assert "paper's effect" not in folding  # the paper times no unfolded generator
    # folded vs VAR-style within ±10 % per round: comparable, beside the paper's ln(0.134 / 0.130)
    assert comparable.startswith("- Folded sampling latency is comparable to VAR-style's: **holds**")
    assert "paper's effect +0.030 (+3.1 %)" in comparable


def _usage(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"tokenizer": ["ImageFolder (main)"] * len(values), "seed": range(len(values)),
                         "usage": values})


@pytest.mark.parametrize("values, verdict", [([0.99, 0.98, 0.995], "holds"), ([0.80, 0.78, 0.82], "does not hold"),
                                             ([0.99, 0.80, 0.97], "does not show"), ([0.99], "does not show"),
                                             ([0.78], "below the level (one run)"), ([0.92], "does not show")])
def test_level_claim(values, verdict):
    claim = next(c for c in tables.CLAIMS if isinstance(c, tables.LevelClaim))
    ours, got = claims.judge(claim, _usage(values))
    assert got == verdict and f"level {tables.USAGE_LEVEL:.0%}" in ours


def test_reported_claim_states_ours_without_a_comparison():
    claim = next(c for c in tables.CLAIMS if isinstance(c, tables.Reported))
    df = pd.DataFrame([{"model": "ImageFolder (main)", "gFD_evaluator": 11.5, "gFD_evaluator sd": 0.25,
                        "IS_evaluator": 3.2, "precision_evaluator": 0.7, "recall_evaluator": 0.5,
                        "class_consistency_evaluator": 0.8},
                       {"model": "the main tokenizer's reconstructions of val images (ceiling)", "gFD_evaluator": 4.0}])
    ours, verdict = claims.judge(claim, df)
    assert verdict == "reported" and ours.startswith("gFD_evaluator 11.5 ± 0.25, IS_evaluator 3.2, precision")


def test_every_kind_of_claim_in_the_ledger_has_a_rule():
    unjudged = claims.assess.dispatch(tables.ClaimBase)
    assert [c.text for c in tables.CLAIMS if claims.assess.dispatch(type(c)) is unjudged] == []


def test_a_claim_without_a_rule_is_refused_by_name():
    claim = tables.ClaimBase(text="a bare claim", table="table9_branch_settings", paper="")
    with pytest.raises(TypeError, match="no rule judges a ClaimBase \\(claim 'a bare claim'\\)"):
        claims.assess(claim, pd.DataFrame())


def test_token_length_caveats_from_the_profiles_grids():
    """cpu: an 8×8 patch grid and K = 8, so Table 7's K = 7, 8, 9 and Table 1's K = 6, 8, 10 (by hand)."""
    cfg = config.profile("cpu")
    assert (cfg.patch_grid, cfg.grid) == (8, 8)
    df = pd.DataFrame()
    paper_length = _claim("The paper's token length generates better than a shorter one (last scale K vs K − 1)")
    assert claims.caveat(paper_length, df, cfg).startswith(
        "only K = 8 of the table's K = 7, 8, 9 divides the 8×8 patch grid: K = 8 vs K = 7 also sets aligned "
        "against misaligned query cells; study-budget generators: an early-training comparison")
    longer = _claim("A longer token sequence (last scale K + 1 vs K − 1) reconstructs better")
    assert claims.caveat(longer, df, cfg) == ("neither of K = 9 vs K = 7 divides the 8×8 patch grid (only the table's "
                                              "K = 8 does): both sides' query cells straddle patches")
    larger = _claim("A larger final scale reconstructs better")
    assert claims.caveat(larger, df, cfg).startswith("neither of K = 10 vs K = 6")
    smoke = config.profile("smoke")  # a 4×4 patch grid, Table 1's K = 2, 4, 6
    assert (smoke.patch_grid, smoke.grid) == (4, 4)
    assert claims.caveat(larger, df, smoke) == ("only K = 2, 4 of the table's K = 2, 4, 6 divide the 4×4 patch grid: "
                                                "K = 6 vs K = 2 also sets aligned against misaligned query cells")
    # without a profile the caveat says what to look for; a grid that none of the table's K divides has no confound
    assert claims.caveat(longer, df) == "a K×K query grid that does not divide the patch grid straddles patches"
    paper = config.profile("paper")
    assert paper.patch_grid % 10 and paper.patch_grid % 11 and paper.patch_grid % 12
    assert claims.caveat(longer, df, paper) == ""


def test_linear_probe_caveat_names_the_dimensions_and_the_teacher():
    claim = _claim("Better linear probing than a VAR-style tokenizer")
    df = pd.DataFrame({"features": ["ImageFolder (study budget)", "VAR-style (study budget)"] * 2,
                       "label": ["category"] * 2 + ["subcategory"] * 2, "L.P. top-1 (%)": [72.0, 68.0, 40.0, 30.0],
                       "dim": [64, 32, 64, 32]})
    cfg = config.profile("cpu")
    assert cfg.tokenizer.teacher_network == "reference" and cfg.teacher.labels == ["subcategory"]
    assert claims.caveat(claim, df, cfg) == (
        "the probe reads 64 (ImageFolder) vs 32 (VAR-style) feature dimensions; the semantic branch is pulled "
        "towards a teacher trained as a supervised subcategory classifier of this data set, so the probe partly "
        "measures label distillation")
    assert claims.caveat(claim, df, config.profile("paper")).startswith("the probe reads 64 (ImageFolder) vs 32")
    assert claims.caveat(claim, df.drop(columns="dim")) == ""


def test_the_new_claims_are_judged_from_their_tables():
    ladder = pd.DataFrame([{"variant": str(r), "seed": s, "gFD_evaluator": g + s / 10, "AR positions": p}
                           for r, g, p in ((2, 6.0, 164), (4, 5.9, 152), (5, 5.0, 152)) for s in range(3)])
    pq = _claim("Product quantization at the paper's length generates better than VAR-style tokens with dropout at "
                "a longer one (Table 3 row 4 vs 2)")
    j = claims.assess(pq, ladder)
    assert j.paper == stats.paper_effect(5.96, 6.03) and "AR positions 152 vs 164" in j.ours
    semantic = claims.assess(_claim("Semantic regularization on all branches beats none (Table 3 row 5 vs 4)"), ladder)
    assert semantic.paper == stats.paper_effect(5.21, 5.96)
    length = pd.DataFrame([{"paper length": str(n), "variant": f"last scale {k}", "seed": s, "gFD_evaluator": g}
                           for n, k, g in ((286, 8, 40.0), (309, 9, 40.4)) for s in range(3)])
    j = claims.assess(_claim("A longer token sequence generates about as well as the paper's (last scale K + 1 vs K)"),
                      length)
    assert j.verdict == "holds" and j.effect.mean == pytest.approx(math.log(40 / 40.4))  # within ±10 %


def _budget_table() -> pd.DataFrame:
    text = "Quantizer dropout improves generation"
    return pd.DataFrame([{"claim": text, "budget": b, "seed": s, "better": 40.0 - b, "worse": 40.0 - b + d,
                          "metric": "gFD_evaluator"} for b, d in ((1, 1.0), (2, 0.5), (4, -1.0)) for s in range(2)]
                        + [{"claim": "Two branches beat one at equal length (product quantization)", "budget": b,
                            "seed": s, "better": 30.0, "worse": 33.0 + s, "metric": "gFD_evaluator"}
                           for b in (1, 4) for s in range(2)])


def test_budget_effects_per_claim_and_budget():
    be = claims.budget_effects(_budget_table())
    assert list(be.columns) == ["claim", "budget", "mean", "low", "high", "n"] and len(be) == 5
    last = be[(be["claim"] == "Quantizer dropout improves generation") & (be["budget"] == 4)].iloc[0]
    assert last["mean"] == pytest.approx(math.log(35 / 36)) and last["n"] == 2 and last["low"] == last["high"]
    marks = claims.budget_marks(be, {"Quantizer dropout improves generation": 0.03,
                                     "Two branches beat one at equal length (product quantization)": 0.05})
    assert marks == {"Quantizer dropout improves generation": "changes at 4×",
                     "Two branches beat one at equal length (product quantization)": "same direction at 4×"}
    assert claims.budget_marks(be, {"Quantizer dropout improves generation": math.nan}) == {}


def test_the_ledger_marks_the_budget_check(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    runs = pd.DataFrame([{"variant": v, "seed": s, "gFD_evaluator": g + s} for v, g in (("1", 41.0), ("2", 40.0))
                         for s in range(3)])
    runs.to_csv(folder / "table3_rows1-2_runs.csv", index=False)
    rows = {r["claim"]: r for r in claims.claims(claims.Tables(folder))}
    assert rows["Quantizer dropout improves generation"]["budget"] == ""  # no budget table: no mark
    _budget_table().to_csv(folder / "budget_check_runs.csv", index=False)
    rows = {r["claim"]: r for r in claims.claims(claims.Tables(folder))}
    assert rows["Quantizer dropout improves generation"]["budget"] == "changes at 4×"
    assert rows["Two branches beat one at equal length (product quantization)"]["budget"] == ""  # not judged


def test_verdict_counts_and_their_line():
    rows = [{"category": c} for c in ("reversed", "holds", "inconclusive", "holds", "not run", "something new")]
    assert claims.verdict_counts(rows) == {"holds": 2, "inconclusive": 1, "reversed": 1, "not run": 1,
                                           "something new": 1}
    assert claims.counts_line(rows) == "6 claims: 2 holds; 1 inconclusive; 1 reversed; 1 not run; 1 something new"


def _row(claim: str, notebook: str, mean: float, low: float, high: float, n: int, category: str,
         paper: float = math.nan, bound: str = "", equivalence: bool = False) -> dict:
    return {"claim": claim, "notebook": notebook, "mean": mean, "low": low, "high": high, "n": n,
            "category": category, "paper_value": paper, "paper_bound": bound, "equivalence": equivalence}


def test_forest_plot_rows_grouped_by_notebook():
    rows = [_row("b", "02_x", 0.1, -0.1, 0.3, 3, "inconclusive", 0.2),
            _row("a", "01_y", 0.5, 0.4, 0.6, 3, "holds", 2.5, "≥"),
            _row("one run", "02_x", 0.05, math.nan, math.nan, 1, "does not show", 0.1),
            _row("same", "01_y", 0.0, -0.05, 0.05, 3, "holds", 0.01, equivalence=True),
            _row("ratio", "06_z", math.nan, math.nan, math.nan, 0, "holds")]  # no effect: not drawn
    df = forest._frame(rows)
    assert list(df["claim"]) == ["a", "same", "b", "one run"] and list(df["y"]) == [0, 1, 3, 4]
    fig = forest.draw(rows)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "same", "b", "one run"]
    assert ax.get_xlim()[1] > 2.5  # the paper's bound is on the axis
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "0" in labels and "+100 %" in labels
    assert len(forest.draw([]).axes[0].texts) == 1  # nothing to draw: says so
