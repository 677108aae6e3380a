"""The paper's tables as data: one `TableSpec` per table we regenerate, and the claims the ledger judges.

A spec names its output table, its variants (name → config overrides, for `study.run_table`), the
column naming its rows, our metric columns and the paper's column beside each, and the paper's setting
of each variant. Every spec registers itself in `SPECS` when it is constructed. A claim says which row
beats which on which metric (`Claim`), or what one row reaches (`LevelClaim`, `RatioClaim`, `Reported`);
its paper numbers are references into `paper_reference.yaml`, never typed. Judging a claim against a
written table is `claims.judge`'s job.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import config
from .config import Config
from .results import paper_fact, paper_tables, paper_value

USAGE_LEVEL = 0.95  # "uses its whole codebook": at least this fraction of every branch's entries in use

# the metrics a generator's row reports beside its FD, as `metrics.generation_metrics` names them (a spec's
# column templates, e.g. "{IS}", and `study.metric_names` read them from here)
GENERATION_METRICS = ("IS", "precision", "recall", "class_consistency")

SPECS: dict[str, TableSpec] = {}  # every TableSpec constructed, by name (each registers itself)

Ref = tuple[str, ...]  # (paper table, row, column) for a cell of paper_reference.yaml, (paper table, key) for a fact
PaperRow = tuple[str, str]  # (paper table, row key): the paper's row set beside one of ours


def paper_number(ref: Ref):
    """The paper's number a `Ref` points at; KeyError naming the reference when the file lacks it."""
    value = paper_value(*ref) if len(ref) == 3 else paper_fact(*ref)
    if value is None:
        raise KeyError(f"paper_reference.yaml has no value at {ref}")
    return value


# ----------------------------------------------------------------------------- claims

@dataclass(frozen=True, kw_only=True)
class ClaimBase:
    """What every claim states: its text, the table that judges it and the paper's side."""

    text: str  # the claim as the ledger states it
    table: str  # the `TableSpec.name` whose written table judges it
    paper: str  # the paper's side, "{}" where each of `refs` goes
    refs: tuple[Ref, ...] = ()
    # a confound the verdict does not name, for the ledger's caveat column; `claims.caveat` fills its fields:
    # {queries} (which compared K×K query grids align with the patch grid), {dims} (the compared rows' feature
    # dimensions), {teacher} (what the semantic teacher is), {consistency} (the study generators' class consistency)
    caveat: str = ""

    def paper_text(self) -> str:
        return self.paper.format(*(paper_number(r) for r in self.refs))

    @property
    def spec(self) -> TableSpec:
        if self.table not in SPECS:
            raise KeyError(f"claim {self.text!r} names table {self.table!r}, which no TableSpec defines")
        return SPECS[self.table]


@dataclass(frozen=True, kw_only=True)
class Claim(ClaimBase):
    """Row `better` beats row `worse` on the metric whose column starts with `metric`."""

    better: str
    worse: str
    metric: str
    higher: bool = False
    by: str | None = None  # the column the rows are named in (default: the table's key)
    where: tuple[str, str] | None = None  # (column, value): judge only those rows
    labels: tuple[str, str] | None = None  # how to name the two rows (default: their key)
    context: tuple[str, ...] = ()  # columns printed beside the result
    effect: bool = True  # the first two `refs` are the paper's numbers of `better` and `worse` (its effect)

    @property
    def rows(self) -> tuple[str, ...]:
        return self.better, self.worse

    def row_overrides(self, cfg: Config, row: str) -> dict:
        """The config overrides of its row `row`: the variant of that paper setting where the claim names its
        rows by setting (`by`), else its table's variant of that name."""
        variants = self.spec.variants(cfg)
        named = (dict(zip(self.spec.settings, variants.values())) if self.by == self.spec.setting_column
                 else variants)
        if row not in named:
            raise KeyError(f"table {self.spec.name!r} has no {self.by or 'variant'} {row!r}")
        return named[row]

    @property
    def paper_pair(self) -> tuple[Ref, Ref] | None:
        """The references of the paper's numbers of `better` and `worse` (None: it states no such pair)."""
        return (self.refs[0], self.refs[1]) if self.effect and len(self.refs) >= 2 else None


@dataclass(frozen=True, kw_only=True)
class EquivalenceClaim(Claim):
    """Row `better` does about as well as row `worse` (the paper's word: "comparable") on `metric`."""


@dataclass(frozen=True, kw_only=True)
class _OneRowClaim(ClaimBase):
    """A claim about one row, `row`, of its table."""

    row: str

    @property
    def rows(self) -> tuple[str, ...]:
        return (self.row,)


@dataclass(frozen=True, kw_only=True)
class LevelClaim(_OneRowClaim):
    """Row `row` reaches `level` on the metric whose column starts with `metric` (one gain per seed: value − level)."""

    metric: str
    level: float


@dataclass(frozen=True, kw_only=True)
class Reported(_OneRowClaim):
    """A headline number with nothing at this scale to compare it with: ours beside the paper's."""

    metrics: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class RatioClaim(_OneRowClaim):
    """Our ratio in (`row`, `column`) is nearer (in log) the paper's `target` than twice it."""

    column: str
    target: Ref
    measured: str  # how the ledger states our ratio, "{}" where it goes


# ----------------------------------------------------------------------------- table specifications

def _no_variants(cfg: Config) -> dict[str, dict]:
    return {}


# The header of a paper column beside ours: what the number is and what computed it (the paper's FID-type
# metrics are Inception-v3 statistics on ImageNet 256×256, ours the profile's metric network on its data).
PAPER_LABELS = {
    "rFID": "paper rFID (Inception, ImageNet)", "gFID": "paper gFID (Inception, ImageNet)",
    "IS": "paper IS (Inception, ImageNet)", "Pre": "paper precision (Inception, ImageNet)",
    "Rec": "paper recall (Inception, ImageNet)", "L.P.": "paper L.P. top-1 % (ImageNet classes)",
    "time (s)": "paper latency s (A100, 256 px)", "length": "paper length", "steps": "paper AR steps",
    "FLOPs vs VAR": "paper FLOPs vs VAR (≈, text)",
}


def paper_label(column: str) -> str:
    """The header of the paper's `column` beside ours (e.g. 'paper rFID (Inception, ImageNet)')."""
    return PAPER_LABELS.get(column, f"paper {column}")


@dataclass(frozen=True)
class TableSpec:
    """One paper table as we regenerate it: `results/<profile>/tables/<name>.{csv,md}`."""

    name: str
    title: str
    paper: str | None = None  # its table in paper_reference.yaml
    variants: Callable[[Config], dict[str, dict]] = _no_variants  # cfg → {name: overrides} for study.run_table
    key: str = "variant"  # the column naming each row
    columns: dict[str, str] = field(default_factory=dict)  # ours ("r{FD}", "{IS}") → the paper's column
    settings: tuple[str, ...] = ()  # the paper's setting of each variant, in order (its row or column key)
    setting_column: str = "paper setting"
    rows: tuple[str, ...] = ()  # rows written by other code than study.run_table (e.g. bench)
    # our row → the paper's row key in `paper`, or (another paper table, row key); rows not named have none
    aliases: dict[str, str | PaperRow] = field(default_factory=dict)
    # ours → (the paper's name for it, {paper row key: fact key}): numbers the paper states in its text
    facts: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    # cfg → {our row: what it ran}, where the paper's label for the row would not describe ours
    describe: Callable[[Config], dict[str, str]] | None = None
    paper_text: tuple[str, ...] = ()  # the paper's columns that describe its rows (e.g. "method"), shown beside ours
    notebook: str = ""  # the notebook that writes it (its stem, e.g. "01_token_length")
    generator: bool = False  # its variants train a generator too (study.seeded_table, plan)
    repeated: bool = False  # its rows are measured in repeated rounds (timings): `runs` holds one row per round

    def __post_init__(self):
        for _, stated in self.facts.values():
            for fact in stated.values():
                paper_fact(self.paper_table(), fact)  # KeyError naming the fact when paper_reference.yaml lacks it
        if self.name in SPECS:
            raise ValueError(f"TableSpec {self.name!r} is defined twice")
        SPECS[self.name] = self

    def paper_table(self) -> str:
        """Its table in paper_reference.yaml; ValueError naming this spec where it has none."""
        if self.paper is None:
            raise ValueError(f"TableSpec {self.name!r} names no table of paper_reference.yaml")
        return self.paper

    @property
    def runs(self) -> str | None:
        """Its companion table of one row per (variant, seed) or per (row, round), which the ledger judges
        (None: one measurement per row)."""
        return f"{self.name}_runs" if self.variants is not _no_variants or self.repeated else None

    def row_names(self, cfg: Config) -> set[str]:
        """Every name a claim may use for a row of this table under `cfg`."""
        return set(self.variants(cfg)) | set(self.rows) | set(self.settings)

    def paper_row(self, row: str) -> PaperRow | None:
        """(paper table, row key) of the paper's row beside our row `row` (None: the paper has none)."""
        alias = self.aliases.get(row) if self.aliases else row
        if alias is None or self.paper is None:
            return None
        return alias if isinstance(alias, tuple) else (self.paper, alias)

    def paper_key(self, row: str) -> str | None:
        """The key of the paper's row beside our row `row` in this spec's own paper table (None: none there)."""
        where = self.paper_row(row)
        return where[1] if where and where[0] == self.paper else None

    def paper_cell(self, row: str, column: str):
        """The paper's `column` in its row beside our row `row` (None where it has none)."""
        where = self.paper_row(row)
        return None if where is None else paper_value(where[0], where[1], column)

    @property
    def claims(self) -> tuple[ClaimBase, ...]:
        """The ledger's claims this table judges, in the ledger's order."""
        return tuple(c for c in CLAIMS if c.table == self.name)


def var_style(cfg: Config, scales: list[int] | None = None) -> dict:
    """Overrides of the VAR-style single-branch baseline: the patch-grid feature map quantized by one
    MSRQ (a VAR-shaped schedule ending at the grid unless `scales` is given), no semantic loss."""
    return {"quantizer.branches": 1, "tokenizer.token_source": "feature_map", "tokenizer.semantic_mode": "none",
            "quantizer.scales": scales or config.scaled_schedule(cfg.patch_grid, config.VAR_SCALES)}


def _header(table: str) -> tuple[str, ...]:
    return tuple(str(c) for c in paper_tables()[table]["columns"])


def _schedules(lasts: dict[str, int]) -> dict[str, dict]:
    return {name: {"quantizer.scales": config.scaled_schedule(k)} for name, k in lasts.items()}


BRANCH_SETTINGS = {
    "single detail branch": {"quantizer.branches": 1, "tokenizer.semantic_mode": "none"},
    "single semantic branch": {"quantizer.branches": 1, "tokenizer.semantic_mode": "one"},
    "two semantic branches": {"quantizer.branches": 2, "tokenizer.semantic_mode": "all"},
    "two detail branches": {"quantizer.branches": 2, "tokenizer.semantic_mode": "none"},
    "one semantic, one detail": {"quantizer.branches": 2, "tokenizer.semantic_mode": "one"},
}
RECON = {"r{FD}": "rFID"}
RECON_GEN = {"r{FD}": "rFID", "g{FD}": "gFID"}


def _ladder(cfg: Config) -> dict[str, dict]:
    vs = var_style(cfg)
    return {"1": vs | {"quantizer.dropout_p": 0.0}, "2": vs | {"quantizer.dropout_p": 0.1},
            "3": BRANCH_SETTINGS["single detail branch"], "4": BRANCH_SETTINGS["two detail branches"],
            "5": BRANCH_SETTINGS["two semantic branches"], "6": BRANCH_SETTINGS["one semantic, one detail"],
            "7": BRANCH_SETTINGS["one semantic, one detail"] | {"tokenizer.discriminator": "dino"}}


def _ladder_rows(cfg: Config) -> dict[str, str]:
    g, K = cfg.patch_grid, cfg.grid
    feature_map = config.token_count(var_style(cfg)["quantizer.scales"])
    return {"1": f"VAR-style MSRQ of the {g}×{g} patch-grid feature map ({feature_map} tokens), no dropout",
            "2": "+ quantizer dropout",
            "3": f"+ {K}×{K} query tokens on the paper's schedule shape ({cfg.tokens_per_branch} tokens; "
                 + ("K equals the patch grid here, where the paper's K = 11 is below its 16×16 grid"
                    if K == g else f"K below the {g}×{g} patch grid") + "), one detail branch",
            "4": "+ product quantization (two detail branches, folded)",
            "5": "+ semantic regularization on all branches",
            "6": "+ semantic regularization on one branch",
            "7": "+ 'DINO' discriminator (frozen teacher features)"}


TABLE1 = TableSpec(
    "table1_final_scale", "Table 1: final scale K×K vs quality", "table1",
    lambda cfg: _schedules({f"{k}×{k}": k for k in (cfg.grid - 2, cfg.grid, cfg.grid + 2)}),
    columns=RECON_GEN, settings=_header("table1"), generator=True, notebook="01_token_length")
TABLE2 = TableSpec(
    "table2_encoder_tuning", "Table 2: encoder initialised from the teacher, tuned three ways", "table2",
    lambda cfg: {name: {"tokenizer.encoder_tuning": name.lower()} for name in ("linear", "LoRA", "full")},
    columns=RECON, settings=_header("table2"), notebook="02_pq_tokenizer")
TABLE3_ROWS12 = TableSpec(
    "table3_rows1-2", "Table 3 rows 1–2: VAR-style multi-scale residual quantization, ± dropout", "table3",
    lambda cfg: {k: v for k, v in _ladder(cfg).items() if k in ("1", "2")}, columns=RECON_GEN, generator=True,
    describe=lambda cfg: {k: v for k, v in _ladder_rows(cfg).items() if k in ("1", "2")}, paper_text=("method",),
    notebook="03_quantizer_dropout")
TABLE3 = TableSpec("table3_ablation_ladder", "Table 3: each row adds to the one above", "table3", _ladder,
                   columns=RECON_GEN, describe=_ladder_rows, paper_text=("method",), generator=True,
                   notebook="04_semantic_branch")
# The paper's rows made like ours: our ImageFolder models use the PatchGAN discriminator, as Table 3 row 6 does
# (Table 4's ImageFolder row is row 7, with the DINO discriminator); our VAR-style tokenizer is the paper's recipe
# with a VAR-style quantizer and dropout, Table 3 row 2 (Table 4's VAR d16 has VAR's own tokenizer, 680 tokens).
SAME_RECIPE = {"ImageFolder": ("table3", "6"), "VAR-style": ("table3", "2")}
TABLE4 = TableSpec(
    "table4_comparison", "Table 4 (our rows): class-conditional generation at equal budget; paper: Table 3 rows 6 "
    "(ImageFolder with PatchGAN, as ours) and 2 (VAR-style tokenizer + dropout, same recipe), LlamaGen-L", "table4",
    lambda cfg: {"raster (LlamaGen-like)": var_style(cfg, scales=[cfg.patch_grid])
                 | {"quantizer.dropout_p": 0.0, "quantizer.dropout_n_start": 1, "generator.layout": "raster"},
                 "VAR-style": var_style(cfg), "ImageFolder": {}},
    key="method", generator=True, notebook="05_ar_training",
    columns={"r{FD}": "rFID", "g{FD}": "gFID", "{IS}": "IS", "{precision}": "Pre", "{recall}": "Rec"},
    # our generators share the profile's width and depth: the paper's rows they stand for, not its models
    aliases={"raster (LlamaGen-like)": "LlamaGen-L", "VAR-style": SAME_RECIPE["VAR-style"],
             "ImageFolder": SAME_RECIPE["ImageFolder"], "ImageFolder (main, full budget)": SAME_RECIPE["ImageFolder"]},
    rows=("ImageFolder (main, full budget)", "real val images (baseline)"),  # beside the variants (notebook 05)
    describe=lambda cfg: {
        "raster (LlamaGen-like)": f"next-token over the {cfg.patch_grid}×{cfg.patch_grid} patch grid, one branch",
        "VAR-style": "next-scale, one branch of feature-map tokens", "ImageFolder": "next-scale, two folded branches",
        "ImageFolder (main, full budget)": f"the main models: {cfg.train_tokenizer.steps} tokenizer + "
                                           f"{cfg.train_generator.steps} generator steps, one seed",
        "real val images (baseline)": "val images scored as if generated"})
GENERATOR_MAIN = TableSpec(
    "generator_main", "Main folded generator: samples against the train split (paper: Table 3 row 6, PatchGAN "
    "discriminator as ours)", "table3", key="model", rows=("ImageFolder (main)",),
    aliases={"ImageFolder (main)": "6"}, notebook="05_ar_training")
TABLE4_LP = TableSpec(
    "table4_linear_probe", "Table 4, L.P.: linear probe on frozen features", "table4",
    lambda cfg: {"ImageFolder (study budget)": {}, "VAR-style (study budget)": var_style(cfg)},
    key="features", rows=("ImageFolder (main)", "teacher (ceiling)"), columns={"L.P. top-1 (%)": "L.P."},
    aliases={"ImageFolder (main)": "ImageFolder", "ImageFolder (study budget)": "ImageFolder",
             "VAR-style (study budget)": "VAR (d16)"}, notebook="06_latency_linear_probe")
TABLE5A = TableSpec(
    "table5a_n_start", "Table 5a: N_start of quantizer dropout", "table5a",
    lambda cfg: {str(n): {"quantizer.dropout_n_start": n} for n in (1, 3, 5)}, columns=RECON,
    settings=_header("table5a"), notebook="03_quantizer_dropout")
TABLE5B = TableSpec(
    "table5b_dropout_ratio", "Table 5b: dropout ratio p", "table5b",
    lambda cfg: {str(p): {"quantizer.dropout_p": p} for p in (0.0, 0.1, 0.5)}, columns=RECON,
    settings=_header("table5b"), notebook="03_quantizer_dropout")
TABLE5C = TableSpec(
    "table5c_branches", "Table 5c: branches P", "table5c",
    lambda cfg: {str(p): {"quantizer.branches": p} for p in (1, 2, 4)}, columns=RECON, settings=_header("table5c"),
    generator=True, notebook="02_pq_tokenizer",
    facts={"g{FD}": ("gFID", {"2": "gFID_2_branches", "4": "gFID_4_branches"})})
TABLE5D = TableSpec(
    "table5d_lambda_clip", "Table 5d: λ_clip (0 = no semantic loss)", "table5d",
    lambda cfg: {"0": {"tokenizer.semantic_mode": "none"}, "0.01": {"tokenizer.semantic_weight": 0.01},
                 "0.1": {"tokenizer.semantic_weight": 0.1}}, columns=RECON, settings=_header("table5d"),
    notebook="04_semantic_branch")
TABLE6 = TableSpec("table6_latency_flops", "Table 6: batch-1 sampling latency and FLOPs, timed in interleaved rounds",
                   "table6", key="layout", rows=("folded", "unfolded", "VAR-style", "raster"), repeated=True,
                   columns={"latency_s": "time (s)"}, notebook="06_latency_linear_probe",
                   aliases={"folded": "ImageFolder", "VAR-style": "VAR", "raster": "LlamaGen"})
TABLE6_PAPER = TableSpec("table6_paper_config_flops", "FLOPs per image of the paper's configurations, with CFG",
                         "table6", key="model", rows=("ImageFolder", "VAR d16"), notebook="06_latency_linear_probe",
                         facts={"flops_vs_VAR": ("FLOPs vs VAR", {"ImageFolder": "flops_ratio_to_var"})})
def _last_scales(cfg: Config) -> dict[str, dict]:
    """As the paper's Table 7: only the last scale changes (K − 1, K, K + 1)."""
    return {f"last scale {k}": {"quantizer.scales": cfg.quantizer.scales[:-1] + [k]}
            for k in (cfg.grid - 1, cfg.grid, cfg.grid + 1)}


TABLE7 = TableSpec(
    "table7_token_length", "Table 7: token length", "table7", _last_scales, columns=RECON_GEN, generator=True,
    settings=tuple(paper_tables()["table7"]["rows"]), setting_column="paper length", notebook="01_token_length",
    describe=lambda cfg: {name: "scales " + ",".join(map(str, v["quantizer.scales"]))
                          for name, v in _last_scales(cfg).items()})
TABLE8 = TableSpec(
    "table8_codebook_size", "Table 8: codebook size (×1, ×2, ×4 of the profile's); the paper's sweep is of its "
    "DINO-discriminator model (Table 3 row 7), ours use PatchGAN", "table8",
    lambda cfg: {str(v): {"quantizer.codebook_size": v} for v in (cfg.quantizer.codebook_size * m for m in (1, 2, 4))},
    columns=RECON, settings=_header("table8"), notebook="02_pq_tokenizer")
TABLE9 = TableSpec("table9_branch_settings", "Table 9: branch settings", "table9", lambda cfg: dict(BRANCH_SETTINGS),
                   columns=RECON_GEN, generator=True, notebook="04_semantic_branch")
TOKEN_COUNTS = TableSpec(
    "token_counts", "Tokens and autoregressive steps per image (computed from the schedules)", "table4",
    key="design", notebook="01_token_length",
    rows=("LlamaGen (raster, 16×16)", "VAR (16×16 latent)", "ImageFolder, unfolded", "ImageFolder, folded"),
    columns={"AR positions": "length", "AR steps": "steps"},
    aliases={"LlamaGen (raster, 16×16)": "LlamaGen-L", "VAR (16×16 latent)": "VAR (d16)",
             "ImageFolder, folded": "ImageFolder"})
TOKENIZER_MAIN = TableSpec(
    "tokenizer_main", "Main tokenizer and the VAR-style baseline, reconstruction on the val split (paper: Table 3 "
    "rows 6 and 2, the same recipe with the PatchGAN discriminator, as ours)", "table3",
    key="tokenizer", rows=("ImageFolder (main)", "VAR-style single branch, same budget"), columns=RECON,
    aliases={"ImageFolder (main)": "6", "VAR-style single branch, same budget": "2"}, notebook="02_pq_tokenizer")
FOLDED_VS_UNFOLDED = TableSpec(
    "folded_vs_unfolded", "Folded vs unfolded generation from the same tokenizer",
    variants=lambda cfg: {m: {"generator.layout": m} for m in ("folded", "unfolded")}, generator=True,
    notebook="05_ar_training")


# caveats (`ClaimBase.caveat`), their fields filled by `claims.caveat`
QUERIES = "{queries}"
STUDY_GENERATORS = "{consistency}"
TOKEN_GENERATION = "{queries}; {consistency}"


def _by_setting(text: str, spec: TableSpec, better: str, worse: str, metric: str = "rFD", label: bool = False,
                kind: type[Claim] = Claim, caveat: str = "") -> Claim:
    """A claim between two of `spec`'s rows named by the paper's setting, its numbers from the paper's table
    (`label`: the paper's text names the two settings, e.g. "rFID 2.4 (14×14) vs 4.15 (10×10)")."""
    theirs = {"rFD": "rFID", "gFD": "gFID"}[metric]
    paper_id = spec.paper_table()
    table = paper_tables()[paper_id]
    tokens = {"paper length": " tokens"}.get(spec.setting_column, "")
    ref = ((lambda k: (paper_id, theirs, k)) if better in map(str, table["columns"])
           else (lambda k: (paper_id, k, theirs)))
    paper = (f"{theirs} {{}} ({better}{tokens}) vs {{}} ({worse})" if label else f"{theirs} {{}} vs {{}}")
    return kind(text=text, table=spec.name, by=spec.setting_column, better=better, worse=worse, metric=metric,
                paper=paper, refs=(ref(better), ref(worse)), caveat=caveat)


CLAIMS: tuple[ClaimBase, ...] = (  # in the ledger's order
    Claim(text="Two branches beat one at equal length (product quantization)", table="table9_branch_settings",
          better="two detail branches", worse="single detail branch", metric="gFD",
          paper="gFID {} (2 detail branches) vs {} (1 branch)", caveat=STUDY_GENERATORS,
          refs=(("table9", "two detail branches", "gFID"), ("table9", "single detail branch", "gFID"))),
    Claim(text="Quantizer dropout improves generation", table="table3_rows1-2", better="2", worse="1", metric="gFD",
          labels=("with dropout", "without"), paper="gFID {} vs {} (VAR-style tokenizer)", caveat=STUDY_GENERATORS,
          refs=(("table3", "2", "gFID"), ("table3", "1", "gFID"))),
    Claim(text="Product quantization at the paper's length generates better than VAR-style tokens with dropout at "
               "a longer one (Table 3 row 4 vs 2)", table="table3_ablation_ladder", better="4", worse="2",
          metric="gFD", labels=("row 4: two detail branches, folded", "row 2: VAR-style + dropout"),
          context=("AR positions",), paper="gFID {} (286 tokens) vs {} (680 tokens)",
          refs=(("table3", "4", "gFID"), ("table3", "2", "gFID")),
          caveat="{consistency}; the paper's 286 vs 680 tokens are the AR positions named beside ours here"),
    Claim(text="Semantic regularization on all branches beats none (Table 3 row 5 vs 4)",
          table="table3_ablation_ladder", better="5", worse="4", metric="gFD",
          labels=("row 5: all branches", "row 4: none"), paper="gFID {} vs {}", caveat=STUDY_GENERATORS,
          refs=(("table3", "5", "gFID"), ("table3", "4", "gFID"))),
    Claim(text="Semantic regularization on one branch beats none", table="table9_branch_settings",
          better="one semantic, one detail", worse="two detail branches", metric="gFD", paper="gFID {} vs {}",
          caveat=STUDY_GENERATORS,
          refs=(("table9", "one semantic, one detail", "gFID"), ("table9", "two detail branches", "gFID"))),
    Claim(text="Semantic regularization on one branch beats all branches", table="table9_branch_settings",
          better="one semantic, one detail", worse="two semantic branches", metric="gFD", paper="gFID {} vs {}",
          caveat=STUDY_GENERATORS,
          refs=(("table9", "one semantic, one detail", "gFID"), ("table9", "two semantic branches", "gFID"))),
    Claim(text="Folding halves the sequence and cuts sampling cost", table="table6_latency_flops",
          better="folded", worse="unfolded", metric="latency_s", context=("positions", "device"), effect=False,
          paper="{} positions folded, twice as many unfolded; {} s per image ({}); no unfolded timing",
          refs=(("table4", "ImageFolder", "length"), ("table6", "time (s)", "ImageFolder"), ("table6", "device"))),
    EquivalenceClaim(text="Folded sampling latency is comparable to VAR-style's", table="table6_latency_flops",
                     better="folded", worse="VAR-style", metric="latency_s", context=("positions", "device"),
                     paper="{} s (ImageFolder) vs {} s (VAR), one A100",
                     refs=(("table6", "time (s)", "ImageFolder"), ("table6", "time (s)", "VAR"))),
    Claim(text="Folded tokens generate better than unfolded at the same token number", table="folded_vs_unfolded",
          better="folded", worse="unfolded", metric="gFD", paper="stated in §1, no number", caveat=STUDY_GENERATORS),
    RatioClaim(text="ImageFolder needs about 1/4 of VAR's FLOPs", table="table6_paper_config_flops",
               row="ImageFolder", column="flops_vs_VAR", target=("table6", "flops_ratio_to_var"),
               measured="measured FLOPs per image ImageFolder / VAR d16 = {:.3f} (flop counter, both with CFG)",
               paper="≈ {}", refs=(("table6", "flops_ratio_to_var"),)),
    Claim(text="Better linear probing than a VAR-style tokenizer", table="table4_linear_probe",
          better="ImageFolder (study budget)", worse="VAR-style (study budget)", metric="L.P.", higher=True,
          where=("label", "category"), labels=("ImageFolder", "VAR-style"),
          paper="L.P. {} vs {} (VAR d16, its own tokenizer)", caveat="{dims}; {teacher}",
          refs=(("table4", "ImageFolder", "L.P."), ("table4", "VAR (d16)", "L.P."))),
    Claim(text="ImageFolder generates better than VAR-style at equal budget", table="table4_comparison",
          better="ImageFolder", worse="VAR-style", metric="gFD", caveat=STUDY_GENERATORS,
          paper="gFID {} vs {} (Table 3 rows 6 and 2: the same recipe with PatchGAN, as ours; Table 4's VAR d16 "
                "has VAR's own tokenizer)",
          refs=(("table3", "6", "gFID"), ("table3", "2", "gFID"))),
    Claim(text="ImageFolder generates better than raster next-token generation at equal budget",
          table="table4_comparison", better="ImageFolder", worse="raster (LlamaGen-like)", metric="gFD",
          paper="gFID {} (Table 3 row 6, PatchGAN as ours) vs {} (LlamaGen-L)", caveat=STUDY_GENERATORS,
          refs=(("table3", "6", "gFID"), ("table4", "LlamaGen-L", "gFID"))),
    _by_setting("A larger final scale reconstructs better", TABLE1, "14×14", "10×10", label=True, caveat=QUERIES),
    _by_setting("A smaller final scale generates better, the trade-off that motivates folding", TABLE1,
                "10×10", "14×14", "gFD", label=True, caveat=TOKEN_GENERATION),
    _by_setting("A longer token sequence (last scale K + 1 vs K − 1) reconstructs better", TABLE7, "309", "265",
                label=True, caveat=QUERIES),
    _by_setting("The paper's token length generates better than a shorter one (last scale K vs K − 1)", TABLE7,
                "286", "265", "gFD", label=True, caveat=TOKEN_GENERATION),
    _by_setting("A longer token sequence generates about as well as the paper's (last scale K + 1 vs K)", TABLE7,
                "309", "286", "gFD", label=True, kind=EquivalenceClaim, caveat=TOKEN_GENERATION),
    _by_setting("Fully tuning the pretrained encoder reconstructs better than LoRA", TABLE2, "full", "LoRA"),
    _by_setting("LoRA-tuning the pretrained encoder reconstructs better than freezing it (\"linear\": only the "
                "queries, quantizer and decoder train)", TABLE2, "LoRA", "linear"),
    Claim(text="A 4× larger codebook reconstructs better", table="table8_codebook_size", by="paper setting",
          better="16384", worse="4096", metric="rFD",
          paper="rFID {} (16384) vs {} (4096), of the paper's DINO-discriminator model (Table 3 row 7; ours: PatchGAN)",
          refs=(("table8", "rFID", "16384"), ("table8", "rFID", "4096"))),
    _by_setting("Dropout from N_start = 3 reconstructs better than from 1", TABLE5A, "3", "1"),
    _by_setting("Dropout from N_start = 3 reconstructs better than from 5", TABLE5A, "3", "5"),
    _by_setting("Dropout ratio p = 0.1 reconstructs better than no dropout", TABLE5B, "0.1", "0"),
    _by_setting("Dropout ratio p = 0.1 reconstructs better than p = 0.5", TABLE5B, "0.1", "0.5"),
    _by_setting("More branches reconstruct better: 2 vs 1", TABLE5C, "2", "1"),
    _by_setting("More branches reconstruct better: 4 vs 2", TABLE5C, "4", "2"),
    Claim(text="Two branches generate better than four", table="table5c_branches", by="paper setting",
          better="2", worse="4", metric="gFD", paper="gFID {} vs {}", caveat=STUDY_GENERATORS,
          refs=(("table5c", "gFID_2_branches"), ("table5c", "gFID_4_branches"))),
    _by_setting("The semantic loss (λ_clip = 0.1) reconstructs better than none", TABLE5D, "0.1", "0"),
    Claim(text="The DINO discriminator improves reconstruction", table="table3_ablation_ladder", better="7",
          worse="6", metric="rFD", labels=("with", "PatchGAN"), paper="rFID {} vs {}",
          refs=(("table3", "7", "rFID"), ("table3", "6", "rFID"))),
    Claim(text="The DINO discriminator improves generation", table="table3_ablation_ladder", better="7",
          worse="6", metric="gFD", labels=("with", "PatchGAN"), paper="gFID {} vs {}", caveat=STUDY_GENERATORS,
          refs=(("table3", "7", "gFID"), ("table3", "6", "gFID"))),
    Claim(text="At the full budget ImageFolder's tokenizer reconstructs better than a VAR-style one",
          table="tokenizer_main", better="ImageFolder (main)", worse="VAR-style single branch, same budget",
          metric="rFD", labels=("ImageFolder", "VAR-style"),
          paper="rFID {} vs {} (Table 3 rows 6 and 2: the same recipe with PatchGAN, as ours)",
          refs=(("table3", "6", "rFID"), ("table3", "2", "rFID"))),
    Reported(text="The main generator (headline)", table="generator_main", row="ImageFolder (main)",
             metrics=("gFD", *GENERATION_METRICS),
             paper="gFID {} (Table 3 row 6: PatchGAN, as ours; the paper gives no IS, precision or recall for it); "
                   "its Table 4 model (row 7, DINO discriminator): gFID {}, IS {}, precision {}, recall {}",
             refs=(("table3", "6", "gFID"), *(("table4", "ImageFolder", c) for c in ("gFID", "IS", "Pre", "Rec")))),
    LevelClaim(text="The main tokenizer uses its whole codebook", table="tokenizer_main", row="ImageFolder (main)",
               metric="usage", level=USAGE_LEVEL, paper="{:.0%} codebook utilization",
               refs=(("table4", "codebook_utilization"),)),
)
