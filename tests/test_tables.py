import string
from pathlib import Path

import pytest

from imagefolder import bench, config, tables
from imagefolder.results import paper_tables, paper_value
from imagefolder.tables import CLAIMS, SPECS, Claim, TableSpec

PROFILES = sorted(config.PROFILES)
ROOT = Path(__file__).resolve().parents[1]


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
    """Every paper row beside ours exists, with a number in each of the spec's columns its table has."""
    cfg = config.profile("cpu")
    variants = spec.variants(cfg)
    if spec.settings:
        assert len(spec.settings) == len(variants), f"{spec.name}: one paper setting per variant"
    where = ([(spec.paper, k) for k in spec.settings] if spec.settings
             else [w for w in map(spec.paper_row, [*variants, *spec.rows]) if w is not None])
    for table, key in where:
        header = [str(c) for c in paper_tables()[table]["columns"]]
        for theirs in spec.columns.values():
            if theirs in header or key in header:
                assert paper_value(table, key, theirs) is not None, f"{spec.name}: {table} has no {theirs} for {key}"


def test_the_papers_rows_made_like_ours():
    """PatchGAN ImageFolder models sit beside Table 3 row 6, the VAR-style tokenizer beside row 2, raster beside
    LlamaGen-L; Table 4's ImageFolder (row 7, DINO discriminator) and VAR d16 (its own tokenizer) beside none."""
    t4 = tables.TABLE4
    assert [t4.paper_cell(r, "gFID") for r in ("ImageFolder", "ImageFolder (main, full budget)", "VAR-style",
                                                "raster (LlamaGen-like)")] == [3.53, 3.53, 6.03, 3.80]
    assert t4.paper_cell("ImageFolder", "IS") is None and t4.paper_cell("real val images (baseline)", "gFID") is None
    assert t4.paper_key("raster (LlamaGen-like)") == "LlamaGen-L" and t4.paper_key("ImageFolder") is None
    assert [tables.TOKENIZER_MAIN.paper_cell(r, "rFID") for r in tables.TOKENIZER_MAIN.rows] == [1.57, 1.71]
    assert tables.GENERATOR_MAIN.paper_cell("ImageFolder (main)", "gFID") == 3.53
    assert tables.TABLE5A.paper_cell("3", "rFID") == 1.57  # no aliases: our row is the paper's key


def _variable(spec: TableSpec) -> str:
    return next(name for name, value in vars(tables).items() if value is spec)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_each_spec_names_the_notebook_that_writes_it(spec: TableSpec):
    notebooks = {p.stem: p.read_text(encoding="utf-8") for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert spec.notebook in notebooks, f"{spec.name}: notebook {spec.notebook!r}"
    assert f"tables.{_variable(spec)}" in notebooks[spec.notebook]


def test_claims_with_a_paper_effect_name_the_two_rows_numbers():
    """A comparison's first two references are the paper's numbers of its better and worse rows, so they differ;
    "Folding halves…" times no unfolded generator and states none."""
    pairs = {c.text: c.paper_pair for c in CLAIMS if isinstance(c, Claim)}
    assert all(p[0] != p[1] for p in pairs.values() if p)
    assert pairs["Folding halves the sequence and cuts sampling cost"] is None
    assert pairs["Folded tokens generate better than unfolded at the same token number"] is None
    assert sum(isinstance(c, tables.EquivalenceClaim) for c in CLAIMS) == 2


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


def test_a_table_beside_rows_of_two_paper_tables():
    """study.with_paper sets each row's paper numbers from its own paper table, in the table's row order."""
    import pandas as pd

    from imagefolder import study
    from imagefolder.metrics import MetricNetwork
    net = MetricNetwork(name="evaluator", extractor="evaluator-test", sha256="0")
    df = pd.DataFrame({"method": ["raster (LlamaGen-like)", "VAR-style", "ImageFolder", "real val images (baseline)"],
                       "rFD_evaluator": 1.0, "gFD_evaluator": 2.0, "IS_evaluator": 3.0, "precision_evaluator": 0.5,
                       "recall_evaluator": 0.4})
    out = study.with_paper(tables.TABLE4, df, net)
    assert list(out["method"]) == list(df["method"])
    assert list(out["paper gFID (Inception, ImageNet)"]) == [3.80, 6.03, 3.53, None]
    assert list(out["paper IS (Inception, ImageNet)"]) == [248.3, None, None, None]
