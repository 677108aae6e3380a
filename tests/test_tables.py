import string

import pandas as pd
import pytest

from imagefolder import bench, config, tables
from imagefolder.results import paper_value
from imagefolder.tables import CLAIMS, SPECS, Claim, TableSpec

PROFILES = sorted(config.PROFILES)


def undefined(claims, cfg: config.Config) -> list[str]:
    """What each claim names (its table, its rows) that no specification defines under `cfg`."""
    out = []
    for claim in claims:
        if claim.table not in SPECS:
            out.append(f"{claim.text!r}: table {claim.table!r}")
            continue
        names = SPECS[claim.table].row_names(cfg)
        out += [f"{claim.text!r}: row {r!r} of {claim.table}" for r in claim.rows if r not in names]
    return out


@pytest.mark.parametrize("name", PROFILES)
def test_every_claim_names_a_defined_table_and_rows(name):
    assert undefined(CLAIMS, config.profile(name)) == []


def test_a_misnamed_claim_is_caught():
    cfg = config.profile("smoke")
    bad = [Claim(text="t", table="table9_branch_settings", better="two detail branch", worse="single detail branch",
                 metric="gFD", paper=""),
           Claim(text="u", table="table99", better="a", worse="b", metric="gFD", paper="")]
    assert undefined(bad, cfg) == ["'t': row 'two detail branch' of table9_branch_settings", "'u': table 'table99'"]


def test_claims_paper_numbers_resolve():
    for claim in CLAIMS:
        slots = [f for _, f, _, _ in string.Formatter().parse(claim.paper) if f is not None]
        assert len(slots) == len(claim.refs), claim.text
        claim.paper_text()  # raises KeyError naming the reference when paper_reference.yaml lacks it


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_spec_paper_numbers_resolve(spec: TableSpec):
    cfg = config.profile("cpu")
    variants = spec.variants(cfg)
    if spec.settings:
        assert len(spec.settings) == len(variants), f"{spec.name}: one paper setting per variant"
    keys = spec.settings or tuple(k for k in map(spec.paper_key, [*variants, *spec.rows]) if k is not None)
    for theirs in spec.columns.values():
        missing = [k for k in keys if paper_value(spec.paper, k, theirs) is None]
        assert not missing, f"{spec.name}: paper_reference.yaml {spec.paper} has no {theirs} for {missing}"


@pytest.mark.parametrize("name", PROFILES)
def test_variants_are_valid_configs(name):
    cfg = config.profile(name)
    for spec in SPECS.values():
        for overrides in spec.variants(cfg).values():
            config.validate(config.apply_overrides(cfg, overrides))


def test_rows_written_by_bench_match_its_generator_setups():
    assert set(tables.TABLE6.rows) == set(bench.generator_setups(config.profile("smoke")))
    assert set(tables.TABLE6_PAPER.rows) == set(bench.PAPER_MODELS)


def _seeded(folded: list[float], unfolded: list[float]) -> pd.DataFrame:
    seeds = list(range(len(folded)))
    return pd.DataFrame({"variant": ["folded"] * len(seeds) + ["unfolded"] * len(seeds), "seed": seeds + seeds,
                         "gFD_evaluator": folded + unfolded})


def test_verdicts_pair_the_rows_by_seed():
    text = tables.FOLDED_VS_UNFOLDED.verdicts(_seeded([5.0, 5.5, 4.5], [9.0, 9.6, 8.7]))
    assert "**holds**" in text and "folded 5 ± 0.5 vs unfolded 9.1 ± 0.46" in text and "over 3 seeds" in text
    assert "**reversed**" in tables.FOLDED_VS_UNFOLDED.verdicts(_seeded([9.0, 9.6, 8.7], [5.0, 5.5, 4.5]))
    # a large mean gain with a sign flip across seeds is not enough
    assert "**does not show**" in tables.FOLDED_VS_UNFOLDED.verdicts(_seeded([5.0, 12.0, 4.0], [9.0, 9.0, 9.0]))
    # pairing is by seed: a seed only one side ran is left out
    text = tables.FOLDED_VS_UNFOLDED.verdicts(_seeded([5.0, 5.5, 4.5], [9.0, 9.6, 8.7]).drop(index=5))
    assert "over 2 seeds" in text


def test_one_observation_per_row_has_no_interval():
    df = pd.DataFrame({"variant": ["folded", "unfolded"], "gFD_evaluator": [5.0, 9.0]})
    text = tables.FOLDED_VS_UNFOLDED.verdicts(df)
    assert "**does not show**" in text and "one run each: no interval" in text


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_row_descriptions_cover_exactly_the_rows(profile):
    cfg = config.profile(profile)
    for spec in SPECS.values():
        if spec.describe is not None:
            assert set(spec.describe(cfg)) == set(spec.variants(cfg)) | set(spec.rows), spec.name


def test_latency_is_paired_by_timing_round():
    rounds = pd.DataFrame({"layout": ["folded"] * 3 + ["unfolded"] * 3, "round": [0, 1, 2] * 2,
                           "latency_s": [0.10, 0.11, 0.09, 0.20, 0.22, 0.19], "positions": [10] * 3 + [20] * 3,
                           "device": ["cpu"] * 6})
    text = tables.TABLE6.verdicts(rounds)
    assert tables.TABLE6.runs == "table6_latency_flops_runs"
    assert "**holds**" in text and "over 3 rounds" in text and "positions 10 vs 20" in text


def _usage(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"tokenizer": ["ImageFolder (main)"] * len(values), "seed": range(len(values)),
                         "usage": values})


@pytest.mark.parametrize("values, verdict", [([0.99, 0.98, 0.995], "holds"), ([0.80, 0.78, 0.82], "does not hold"),
                                             ([0.99, 0.80, 0.97], "does not show"), ([0.99], "does not show")])
def test_level_claim(values, verdict):
    claim = next(c for c in CLAIMS if isinstance(c, tables.LevelClaim))
    ours, got = claim.judge(_usage(values))
    assert got == verdict and f"level {tables.USAGE_LEVEL:.0%}" in ours


def test_reported_claim_states_ours_without_a_comparison():
    claim = next(c for c in CLAIMS if isinstance(c, tables.Reported))
    df = pd.DataFrame([{"model": "ImageFolder (main)", "FD_evaluator": 11.5, "IS_evaluator": 3.2,
                        "precision_evaluator": 0.7, "recall_evaluator": 0.5, "class_consistency_evaluator": 0.8}])
    ours, verdict = claim.judge(df)
    assert verdict == "reported" and ours.startswith("FD_evaluator 11.5, IS_evaluator 3.2")


def test_runs_tables_exist_for_the_specs_with_variants():
    assert tables.TABLE9.runs == "table9_branch_settings_runs" and tables.TOKENIZER_MAIN.runs is None
    assert all(s.runs for s in SPECS.values() if s.variants(config.profile("smoke")))
