import typing

import pytest
import yaml

from imagefolder import config
from imagefolder.config import ConfigError


@pytest.mark.parametrize("name", sorted(config.PROFILES))
def test_every_profile_builds_and_validates(name):
    cfg = config.profile(name)
    assert cfg.profile == name
    assert len(cfg.quantizer.scales) == len(config.PAPER_SCALES)  # small profiles keep the paper's 10 scales
    assert cfg.quantizer.branches == 2 and cfg.quantizer.dropout_n_start == 3 and cfg.quantizer.dropout_p == 0.1


def test_paper_profile_is_the_papers_configuration():
    cfg = config.profile("paper")
    assert cfg.quantizer.scales == [1, 1, 2, 3, 3, 4, 5, 6, 8, 11]
    assert cfg.tokens_per_branch == 286 and cfg.grid == 11
    assert (cfg.quantizer.codebook_size, cfg.quantizer.code_dim) == (4096, 32)
    assert (cfg.generator.depth, cfg.generator.width) == (17, 1088)
    assert cfg.data.resolution == 256 and cfg.tokenizer.encoder.width == 768
    assert cfg.tokenizer.semantic_weight == 0.1 and cfg.tokenizer.adv_weight == 0.5


def test_token_counts():
    assert config.token_count(config.PAPER_SCALES) == 286
    assert config.token_count(config.VAR_SCALES) == 680
    assert config.token_count([2, 5]) == 29


@pytest.mark.parametrize("last", [4, 6, 8, 11, 16])
def test_scaled_schedule_keeps_shape(last):
    s = config.scaled_schedule(last)
    assert len(s) == 10 and s[-1] == last and s[0] == 1
    assert all(a <= b for a, b in zip(s, s[1:]))
    assert config.scaled_schedule(11) == config.PAPER_SCALES


@pytest.mark.parametrize("overrides, field", [
    ({"quantizer.scales": [1, 3, 2]}, "quantizer.scales"),
    ({"quantizer.dropout_n_start": 11}, "quantizer.dropout_n_start"),
    ({"quantizer.dropout_p": 1.5}, "quantizer.dropout_p"),
    ({"quantizer.branches": 0}, "quantizer.branches"),
    ({"data.resolution": 18}, "patch_size"),
    ({"tokenizer.semantic_mode": "two"}, "tokenizer.semantic_mode"),
    ({"generator.top_p": 0.0}, "generator.top_p"),
    ({"train_tokenizer.warmup_steps": 10_000}, "train_tokenizer.warmup_steps"),
    ({"quantizer.nonsense": 1}, "quantizer.nonsense"),
])
def test_validation_names_the_bad_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config.profile("smoke", overrides)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'tiny'"):
        config.profile("tiny")


def test_string_overrides_are_parsed_by_type():
    overrides = ["quantizer.scales=[1,2,4]", "seed=7", "tokenizer.semantic_mode=all"]
    cfg = config.profile("smoke", config.parse_overrides(overrides))
    assert cfg.quantizer.scales == [1, 2, 4] and cfg.seed == 7 and cfg.tokenizer.semantic_mode == "all"
    with pytest.raises(ConfigError, match="expected key=value"):
        config.parse_overrides(["seed"])


def test_float_overrides_accept_exponents_and_integers():
    cfg = config.profile("smoke", config.parse_overrides(["train_tokenizer.lr=3e-3", "quantizer.dropout_p=1"]))
    assert cfg.train_tokenizer.lr == 0.003 and isinstance(cfg.quantizer.dropout_p, float)
    with pytest.raises(ConfigError, match="train_tokenizer.lr: expected a number"):
        config.profile("smoke", {"train_tokenizer.lr": "fast"})


def test_dict_and_yaml_round_trip():
    """What `imagefolder config` prints (YAML of `to_dict`) and run records read back to the same config."""
    cfg = config.profile("cpu", {"quantizer.dropout_p": 0.5})
    assert config.from_dict(config.to_dict(cfg)) == cfg
    assert config.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict(cfg)))) == cfg


def test_patch_grid_is_the_encoders_patch_grid():
    assert config.profile("paper").patch_grid == 16 and config.profile("paper").grid == 11
    assert config.profile("cpu").patch_grid == 8 == config.profile("cpu").grid
    assert config.profile("smoke", {"tokenizer.encoder.patch_size": 8}).patch_grid == 2


def test_choice_fields_are_literals_with_their_options():
    hints = typing.get_type_hints
    assert typing.get_args(hints(config.QuantizerConfig)["lookup"]) == ("cosine", "l2")
    assert typing.get_args(hints(config.TokenizerConfig)["semantic_mode"]) == ("none", "one", "all")
    assert typing.get_args(hints(config.GeneratorConfig)["layout"]) == ("folded", "unfolded", "raster")
    labels = hints(config.ReferenceNetConfig)["labels"]
    assert typing.get_origin(labels) is list
    assert typing.get_args(typing.get_args(labels)[0]) == ("category", "subcategory")


def test_int_fields_take_integral_floats_and_refuse_fractions():
    """YAML reads `1e3` as a string and `1000.0` as a float: an int field takes both as 1000."""
    cfg = config.profile("smoke", config.parse_overrides(["study.num_samples=1e3", "data.resolution=32.0"]))
    assert cfg.study.num_samples == 1000 and type(cfg.study.num_samples) is int
    assert cfg.data.resolution == 32 and type(cfg.data.resolution) is int
    with pytest.raises(ConfigError, match=r"study\.num_samples: expected an int, got 2\.7"):
        config.profile("smoke", config.parse_overrides(["study.num_samples=2.7"]))


def test_an_annotation_the_type_check_does_not_know_is_a_programming_error():
    """A field annotated with a type `check_value` cannot check (here a dict) fails loudly as a TypeError naming
    the annotation, not as a ConfigError blaming the user's value."""
    with pytest.raises(TypeError) as err:
        config.check_value({"a": 1}, dict[str, int], "section.field")
    assert str(err.value) == "config annotation dict[str, int] is not supported by check_value"


def test_from_dict_checks_types_and_names_the_field():
    data = config.to_dict(config.profile("smoke"))
    data["train_tokenizer"]["steps"] = "abc"
    with pytest.raises(ConfigError, match=r"train_tokenizer\.steps: expected an int, got 'abc'"):
        config.from_dict(data)
    with pytest.raises(ConfigError, match=r"labels\[0\]: expected one of \('category', 'subcategory'\), got 'colour'"):
        config.from_dict({"labels": ["colour"]}, config.ReferenceNetConfig)


def test_diff_lists_changed_fields():
    a = config.to_dict(config.profile("smoke"))
    b = config.to_dict(config.profile("smoke", {"quantizer.codebook_size": 32}))
    assert config.diff(a, b) == ["quantizer.codebook_size: 64 → 32"]


def test_study_variant_scales_the_adversarial_start():
    from imagefolder import pipeline
    cfg = config.profile("cpu")
    v = pipeline.variant(cfg, {"quantizer.dropout_p": 0.5})
    assert v.train_tokenizer.steps == cfg.study.tokenizer_steps and v.quantizer.dropout_p == 0.5
    frac = cfg.tokenizer.disc_start / cfg.train_tokenizer.steps
    assert abs(v.tokenizer.disc_start / v.train_tokenizer.steps - frac) < 0.01
    assert pipeline.variant(cfg, {}, study=False).tokenizer.disc_start == cfg.tokenizer.disc_start


def test_study_variant_scales_the_ema_horizon_with_the_run():
    from imagefolder import pipeline
    cfg = config.profile("cpu")
    v = pipeline.variant(cfg, {})

    def horizon(t):
        return 1 / (1 - t.ema_decay)

    assert horizon(v.train_tokenizer) / v.train_tokenizer.steps == pytest.approx(
        horizon(cfg.train_tokenizer) / cfg.train_tokenizer.steps, rel=1e-3)
    assert v.train_generator.ema_decay == cfg.train_generator.ema_decay == 0  # no EMA stays none
    short = pipeline.run_of_length(cfg.train_tokenizer, 2)  # a horizon shorter than one step: no EMA
    assert short == {"steps": 2, "warmup_steps": 2, "ema_decay": 0.0}
    assert v.train_generator.compile == cfg.train_generator.compile  # study runs compile as the profile says


# ----------------------------------------------------------------------------- roles

def _leaf_paths(node, path=""):
    """Every leaf field of a config instance, walked by hand (not by the code under test)."""
    import dataclasses
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        out += _leaf_paths(value, f"{path}{f.name}.") if dataclasses.is_dataclass(value) else [f"{path}{f.name}"]
    return out


@pytest.mark.parametrize("name", sorted(config.PROFILES))
def test_every_field_of_every_profile_has_a_role(name):
    paths = _leaf_paths(config.profile(name))
    assert len(paths) > 100
    assert {p: config.role(p) for p in paths} == config.field_roles()
    assert set(config.field_roles().values()) <= set(config.ROLES)


def test_a_field_has_its_own_role_or_its_sections():
    expected = {"seed": "tokenizer", "device": "execution", "run_dir": "bookkeeping",
                "quantizer.codebook_size": "tokenizer", "tokenizer.encoder.width": "tokenizer",
                "tokenizer.perceptual_loss": "tokenizer", "evaluation.perceptual_network": "evaluation",
                "generator.width": "generator", "generator.cfg_scale": "sampling", "generator.top_p": "sampling",
                "train_tokenizer.lr": "tokenizer", "train_generator.lr": "generator",
                "train_generator.compile": "execution", "teacher.train.ckpt_every": "bookkeeping",
                "teacher.width": "tokenizer", "evaluator.train.lr": "evaluation", "study.seeds": "evaluation",
                "evaluation.compile_sampler": "execution", "evaluation": "evaluation", "train_tokenizer": "tokenizer"}
    assert {p: config.role(p) for p in expected} == expected
    for bad in ("generator.nope", "nope", "seed.x"):
        with pytest.raises(ConfigError, match=bad.split(".")[0]):
            config.role(bad)


def test_run_definition_holds_exactly_the_defining_fields():
    cfg = config.profile("smoke")
    tok, gen = config.run_definition(cfg, "tokenizer"), config.run_definition(cfg, "generator")
    assert set(tok) == {"profile", "seed", "data", "quantizer", "tokenizer", "train_tokenizer", "teacher"}
    assert set(gen) == set(tok) | {"generator", "train_generator"}
    assert tok["train_tokenizer"]["lr"] == cfg.train_tokenizer.lr and "compile" not in tok["train_tokenizer"]
    assert "ckpt_every" not in tok["teacher"]["train"] and tok["tokenizer"]["encoder"]["width"] == 32
    assert "cfg_scale" not in gen["generator"] and gen["generator"]["width"] == cfg.generator.width
    assert tok["tokenizer"]["perceptual_loss"] == "teacher"
    reference = config.without_roles(cfg.evaluator)
    assert reference["width"] == cfg.evaluator.width and "log_every" not in reference["train"]
