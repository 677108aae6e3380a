import string

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


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_row_descriptions_cover_exactly_the_rows(profile):
    cfg = config.profile(profile)
    for spec in SPECS.values():
        if spec.describe is not None:
            assert set(spec.describe(cfg)) == set(spec.variants(cfg)) | set(spec.rows), spec.name


def test_runs_tables_exist_for_the_specs_with_variants():
    assert tables.TABLE9.runs == "table9_branch_settings_runs" and tables.TOKENIZER_MAIN.runs is None
    assert all(s.runs for s in SPECS.values() if s.variants(config.profile("smoke")))


def test_a_newly_defined_spec_registers_itself(monkeypatch):
    monkeypatch.setattr(tables, "SPECS", dict(tables.SPECS))  # the module's registry is left as it was
    spec = TableSpec("table_new", "A table no list names")
    assert tables.SPECS["table_new"] is spec
    claim = Claim(text="t", table="table_new", better="a", worse="b", metric="gFD", paper="")
    assert claim.spec is spec


def test_a_spec_name_defined_twice_is_refused(monkeypatch):
    monkeypatch.setattr(tables, "SPECS", dict(tables.SPECS))
    with pytest.raises(ValueError, match="'table9_branch_settings' is defined twice"):
        TableSpec("table9_branch_settings", "Another Table 9")
