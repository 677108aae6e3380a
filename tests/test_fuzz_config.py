"""Bad config values planted one at a time: each is refused with a ConfigError
that names the field and the value, before anything runs; the profiles themselves are unchanged."""
import copy
import dataclasses
import hashlib
import json

import pytest

from imagefolder import cli, config
from imagefolder.config import ConfigError


def _known(cls) -> str:
    """The field names an unknown-field error lists: the section's fields, sorted."""
    return ", ".join(sorted(f.name for f in dataclasses.fields(cls)))


# command-line override → the whole error message
BAD_OVERRIDES = [
    ("train_tokenizer.steps=abc", "train_tokenizer.steps: expected an int, got 'abc'"),
    ("train_tokenizer.steps=2.7", "train_tokenizer.steps: expected an int, got 2.7"),
    ("train_tokenizer.steps=1e-3", "train_tokenizer.steps: expected an int, got '1e-3'"),
    ("train_generator.steps=-3", "train_generator.steps: must be at least 1, got -3"),
    ("seed=1.5", "seed: expected an int, got 1.5"),
    ("seed=null", "seed: expected an int, got None"),
    ("quantizer.codebook_size=null", "quantizer.codebook_size: expected an int, got None"),
    ("quantizer.branches=two", "quantizer.branches: expected an int, got 'two'"),
    ("quantizer.scales=4", "quantizer.scales: expected a list, got 4"),
    ("quantizer.scales=[true,2,4]", "quantizer.scales[0]: expected an int, got True"),
    ("quantizer.scales=[1,2", "quantizer.scales: expected a list, got '[1,2' (not valid YAML)"),
    ("quantizer.lookup=cosin", "quantizer.lookup: expected one of ('cosine', 'l2'), got 'cosin'"),
    ("data.hflip=maybe", "data.hflip: expected true or false, got 'maybe'"),
    ("data.hflip=yes", "data.hflip: expected true or false, got 'yes'"),
    ("generator.class_dropout=1.5", "generator.class_dropout: must be in [0, 1), got 1.5"),
    ("train_tokenizer.ema_decay=-0.5", "train_tokenizer.ema_decay: must be in [0, 1), got -0.5"),
    ("train_tokenizer.betas=[0.9,fast]", "train_tokenizer.betas[1]: expected a number, got 'fast'"),
    ("teacher.labels=[category,3]", "teacher.labels[1]: expected one of ('category', 'subcategory'), got 3"),
    ("tokenizer.encoder.width=wide", "tokenizer.encoder.width: expected an int, got 'wide'"),
    ("tokenizer.encoder=5", "tokenizer.encoder: expected a ViTConfig section, got 5"),
    ("evaluation.num_reference=many", "evaluation.num_reference: expected an int or None, got 'many'"),
    ("quantizer.nonsense=1", f"quantizer.nonsense: unknown field (given '1'; known: {_known(config.QuantizerConfig)})"),
    ("tokenizer.encoder={widht: 3}", f"tokenizer.encoder.widht: unknown field (given 3; known: "
                                     f"{_known(config.ViTConfig)})"),
]


@pytest.mark.parametrize("override, message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_refused_naming_field_and_value(override, message):
    with pytest.raises(ConfigError) as err:
        config.profile("smoke", config.parse_overrides([override]))
    assert str(err.value) == message


def test_the_command_line_refuses_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit) as err:
        cli.main(["train-tokenizer", "--profile", "smoke", f"run_dir={tmp_path}", "train_tokenizer.steps=abc"])
    assert str(err.value) == "config error: train_tokenizer.steps: expected an int, got 'abc'"
    assert not any(tmp_path.iterdir())


# a value planted in a profile's dict (a run record, a YAML file) → the whole error message
BAD_DICT_VALUES = [
    ("train_tokenizer.steps", "abc", "train_tokenizer.steps: expected an int, got 'abc'"),
    ("seed", 1.5, "seed: expected an int, got 1.5"),
    ("seed", None, "seed: expected an int, got None"),
    ("quantizer.scales", [True, 2, 4], "quantizer.scales[0]: expected an int, got True"),
    ("quantizer.lookup", "cosin", "quantizer.lookup: expected one of ('cosine', 'l2'), got 'cosin'"),
    ("data.hflip", "maybe", "data.hflip: expected true or false, got 'maybe'"),
    ("quantizer.dropout_p", "0.1", "quantizer.dropout_p: expected a number, got '0.1'"),
    ("evaluator.labels", ["category", 3], "evaluator.labels[1]: expected one of ('category', 'subcategory'), got 3"),
    ("tokenizer.encoder", 5, "tokenizer.encoder: expected a ViTConfig section, got 5"),
    ("study.nonsense", 1, f"study.nonsense: unknown field (given 1; known: {_known(config.StudyConfig)})"),
    # values of the wrong type that look right
    ("seed", True, "seed: expected an int, got True"),
    ("train_tokenizer.steps", "3", "train_tokenizer.steps: expected an int, got '3'"),
    ("quantizer.branches", 1.0, "quantizer.branches: expected an int, got 1.0"),
    ("data.hflip", 1, "data.hflip: expected true or false, got 1"),
    ("data.hflip", 0, "data.hflip: expected true or false, got 0"),
    ("quantizer.dropout_p", True, "quantizer.dropout_p: expected a number, got True"),
    ("quantizer.scales", (1, 2), "quantizer.scales: expected a list, got (1, 2)"),
    ("evaluation.num_reference", False, "evaluation.num_reference: expected an int or None, got False"),
    ("quantizer.lookup", "L2", "quantizer.lookup: expected one of ('cosine', 'l2'), got 'L2'"),
    ("train_tokenizer.betas", [0.9, "0.95"], "train_tokenizer.betas[1]: expected a number, got '0.95'"),
]


@pytest.mark.parametrize("dotted, value, message", BAD_DICT_VALUES, ids=[f"{d}={v!r}" for d, v, _ in BAD_DICT_VALUES])
def test_bad_dict_value_is_refused_naming_field_and_value(dotted, value, message):
    with pytest.raises(ConfigError) as err:
        config.from_dict(_with(config.to_dict(config.profile("smoke")), dotted, value))
    assert str(err.value) == message


def _with(data: dict, dotted: str, value) -> dict:
    """`data` with the field at the dotted path set to `value`."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[leaf] = value
    return data


# values at the edge of what a field accepts: an int where a number is expected, None where it is allowed,
# the closed end of a half-open range
ACCEPTED_DICT_VALUES = [("quantizer.dropout_p", 0), ("generator.class_dropout", 0.0),
                        ("train_tokenizer.ema_decay", 0.0), ("evaluation.num_reference", None),
                        ("train_generator.warmup_steps", 6)]  # = the smoke profile's steps


@pytest.mark.parametrize("dotted, value", ACCEPTED_DICT_VALUES, ids=[f"{d}={v!r}" for d, v in ACCEPTED_DICT_VALUES])
def test_edge_values_are_accepted(dotted, value):
    cfg = config.from_dict(_with(config.to_dict(config.profile("smoke")), dotted, value))
    config.validate(cfg)
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    assert node == value and type(node) is type(value)


@pytest.mark.parametrize("override, message", [
    ("generator.class_dropout=1", "generator.class_dropout: must be in [0, 1), got 1.0"),
    ("train_generator.warmup_steps=7", "train_generator.warmup_steps: must be in [0, steps=6], got 7"),
    ("train_generator.steps=0", "train_generator.steps: must be at least 1, got 0"),
])
def test_just_outside_a_range_is_refused(override, message):
    with pytest.raises(ConfigError) as err:
        config.profile("smoke", config.parse_overrides([override]))
    assert str(err.value) == message


# sha256 of each profile's `to_dict` as JSON, recorded before the type checks came in, and again at each
# deliberate change of a profile (the latest: `generator.mode` → `generator.layout`, `tokenizer.token_layout` →
# `tokenizer.token_source`, the fields of the official choices, and the paper profile's official
# `quantizer.codebook_init` and `tokenizer.disc_backbone`, then `tokenizer.decoder_init` and `generator.init`
# removed until the code reads them, then `study.budget_check_seeds` added and the gpu profile's study budget
# and seeds; no field that names a run changed): runs are named by a hash of most of it, so a
# refactor must not move these
PROFILE_DIGESTS = {
    "smoke": "c65c4b13d86793a6",
    "cpu": "f356057e2bd55dee",
    "gpu": "04061aa183e250c4",
    "paper": "a70dc6f623617ace",
}


@pytest.mark.parametrize("name", sorted(PROFILE_DIGESTS))
def test_every_profile_validates_and_is_unchanged(name):
    cfg = config.profile(name)
    config.validate(cfg)
    digest = hashlib.sha256(json.dumps(config.to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]
    assert digest == PROFILE_DIGESTS[name]


# every range rule of `validate` at its edge: (field, the last value it accepts, the first it refuses, the whole
# message), on the smoke profile (resolution 16, patch 4, scales [1 ×6, 2, 2, 3, 4], width 32, 2 ViT heads)
EDGES = [
    ("threads", 0, -1, "threads: must be ≥ 0 (0 = torch's default), got -1"),
    ("data.resolution", 16, 0, "data.resolution: must be positive, got 0"),
    ("data.max_per_split", 1, 0, "data.max_per_split: must be positive or None, got 0"),
    ("quantizer.scales", [1, 1, 4], [0, 1, 4], "quantizer.scales: must be a non-empty list of positive integers, "
                                               "got [0, 1, 4]"),
    ("quantizer.scales", [1, 2, 2, 4], [1, 3, 2, 4], "quantizer.scales: must be non-decreasing, got [1, 3, 2, 4]"),
    ("quantizer.branches", 1, 0, "quantizer.branches: must be at least 1 (P), got 0"),
    ("quantizer.codebook_size", 2, 1, "quantizer.codebook_size: must be at least 2, got 1"),
    ("quantizer.code_dim", 1, 0, "quantizer.code_dim: must be positive, got 0"),
    ("quantizer.dropout_p", 1.0, 1.01, "quantizer.dropout_p: must be in [0, 1], got 1.01"),
    ("quantizer.dropout_p", 0.0, -0.01, "quantizer.dropout_p: must be in [0, 1], got -0.01"),
    ("quantizer.dropout_n_start", 10, 11, "quantizer.dropout_n_start: must be in [1, number of scales=10], got 11"),
    ("quantizer.dropout_n_start", 1, 0, "quantizer.dropout_n_start: must be in [1, number of scales=10], got 0"),
    ("quantizer.phi_gamma", 1.0, 1.5, "quantizer.phi_gamma: must be in [0, 1], got 1.5"),
    ("quantizer.phi_gamma", 0.0, -0.5, "quantizer.phi_gamma: must be in [0, 1], got -0.5"),
    ("quantizer.phi_convs", 1, 0, "quantizer.phi_convs: must be at least 1, got 0"),
    ("tokenizer.encoder.patch_size", 16, 0, "tokenizer.encoder.patch_size: must be positive, got 0"),
    ("tokenizer.encoder.patch_size", 8, 3, "tokenizer.encoder.patch_size: resolution 16 is not divisible by patch "
                                           "size 3"),
    ("tokenizer.decoder.patch_size", 2, 5, "tokenizer.decoder.patch_size: resolution 16 is not divisible by patch "
                                           "size 5"),
    ("tokenizer.encoder.heads", 1, 0, "tokenizer.encoder.heads: must be at least 1, got 0"),
    ("tokenizer.decoder.heads", 4, 3, "tokenizer.decoder.heads: width 32 not divisible by 3 heads"),
    ("tokenizer.encoder.drop_path", 0.0, 1.0, "tokenizer.encoder.drop_path: must be in [0, 1), got 1.0"),
    ("tokenizer.decoder.drop_path", 0.5, -0.1, "tokenizer.decoder.drop_path: must be in [0, 1), got -0.1"),
    ("tokenizer.teacher_patch_size", None, 0, "tokenizer.teacher_patch_size: must be None or a divisor of the "
                                              "resolution 16, got 0"),
    ("tokenizer.teacher_patch_size", None, 3, "tokenizer.teacher_patch_size: must be None or a divisor of the "
                                              "resolution 16, got 3"),
    ("tokenizer.teacher_patch_size", None, 4, "tokenizer.teacher_patch_size: re-patches a pretrained teacher; the "
                                              "reference teacher keeps the profile's own patch (set None)"),
    ("tokenizer.query_window", 0, -1, "tokenizer.query_window: must be None (global attention) or a radius ≥ 0 in "
                                      "query cells, got -1"),
    ("tokenizer.semantic_weight", 0.0, -1.0, "tokenizer.semantic_weight: must be non-negative, got -1.0"),
    ("tokenizer.lecam_weight", 0.0, -1.0, "tokenizer.lecam_weight: must be non-negative, got -1.0"),
    ("tokenizer.adv_ramp_steps", 0, -1, "tokenizer.adv_ramp_steps: must be non-negative, got -1"),
    ("generator.heads", 32, 0, "generator.heads: must be at least 1, got 0"),
    ("generator.heads", 2, 3, "generator.heads: width 32 not divisible by 3 heads"),
    ("generator.class_dropout", 0.0, -0.1, "generator.class_dropout: must be in [0, 1), got -0.1"),
    ("generator.drop_path", 0.0, 1.0, "generator.drop_path: must be in [0, 1), got 1.0"),
    ("generator.top_k", 0, -1, "generator.top_k: must be ≥ 0 (0 disables), got -1"),
    ("generator.top_p", 1.0, 0.0, "generator.top_p: must be in (0, 1], got 0.0"),
    ("generator.top_p", 1.0, 1.01, "generator.top_p: must be in (0, 1], got 1.01"),
    ("train_tokenizer.steps", 2, 0, "train_tokenizer.steps: must be at least 1, got 0"),
    ("train_tokenizer.batch_size", 1, 0, "train_tokenizer.batch_size: must be at least 1, got 0"),
    ("train_tokenizer.lr", 1e-9, 0.0, "train_tokenizer.lr: must be positive, got 0.0"),
    ("train_tokenizer.warmup_steps", 0, -1, "train_tokenizer.warmup_steps: must be in [0, steps=6], got -1"),
    ("train_tokenizer.ema_decay", 0.999, 1.0, "train_tokenizer.ema_decay: must be in [0, 1), got 1.0"),
    ("train_tokenizer.betas", [0.5, 0.5], [0.9], "train_tokenizer.betas: must be two values, got [0.9]"),
    ("train_tokenizer.ckpt_every", 1, 0, "train_tokenizer.ckpt_every: must be at least 1, got 0"),
    ("teacher.train.steps", 2, 0, "teacher.train.steps: must be at least 1, got 0"),  # its warmup is 2
    ("evaluator.train.lr", 1.0, -1.0, "evaluator.train.lr: must be positive, got -1.0"),
    ("evaluation.num_samples", 1, 0, "evaluation.num_samples: must be positive, got 0"),
    ("evaluation.num_recon", 1, 0, "evaluation.num_recon: must be positive, got 0"),
    ("evaluation.num_reference", 2, 1, "evaluation.num_reference: must be None (all) or > 1, got 1"),
    ("study.tokenizer_steps", 1, 0, "study.tokenizer_steps: must be at least 1, got 0"),
    ("study.generator_steps", 1, 0, "study.generator_steps: must be at least 1, got 0"),
    ("study.seeds", [7, 8], [], "study.seeds: must be at least one seed, got []"),  # smoke checks 2 seeds' budgets
    ("study.budget_check_seeds", 2, 3, "study.budget_check_seeds: must be between 1 and the 2 study seeds, got 3"),
    ("study.budget_check_seeds", 1, 0, "study.budget_check_seeds: must be between 1 and the 2 study seeds, got 0"),
]


def _validated(dotted: str, value) -> config.Config:
    cfg = config.from_dict(_with(config.to_dict(config.profile("smoke")), dotted, value))
    config.validate(cfg)
    return cfg


@pytest.mark.parametrize("dotted, inside, outside, message", EDGES,
                         ids=[f"{d}={o!r}" for d, _, o, _ in EDGES])
def test_each_rule_at_its_edge(dotted, inside, outside, message):
    _validated(dotted, inside)
    with pytest.raises(ConfigError) as err:
        _validated(dotted, outside)
    assert str(err.value) == message


@pytest.mark.parametrize("part", ["train_tokenizer", "train_generator", "teacher.train", "evaluator.train"])
def test_a_one_step_run_is_valid_and_a_zero_step_run_is_not(part):
    """A run's length is valid from 1 step (warm-up 0); the smoke profile's 2-step warm-up keeps EDGES above it."""
    data = _with(config.to_dict(config.profile("smoke")), f"{part}.warmup_steps", 0)
    config.validate(config.from_dict(_with(data, f"{part}.steps", 1)))
    with pytest.raises(ConfigError) as err:
        config.validate(config.from_dict(_with(data, f"{part}.steps", 0)))
    assert str(err.value) == f"{part}.steps: must be at least 1, got 0"


def test_sizes_are_valid_from_one():
    """Resolution, the ViT patches and the teacher's re-patching are valid at 1 (a 1-pixel image in 1-pixel
    patches), the edge EDGES cannot reach with one field changed."""
    config.profile("smoke", {"data.resolution": 1, "tokenizer.encoder.patch_size": 1,
                             "tokenizer.decoder.patch_size": 1})
    config.profile("smoke", {"tokenizer.teacher_network": "dinov2_vitb14", "tokenizer.teacher_patch_size": 1})


def test_a_field_set_to_the_wrong_type_after_loading_is_named_from_the_top():
    """`validate` type-checks the whole tree again: a field assigned after loading is named by its full path."""
    cfg = config.profile("smoke")
    cfg.quantizer.codebook_size = "64"  # type: ignore[assignment]
    with pytest.raises(ConfigError) as err:
        config.validate(cfg)
    assert str(err.value) == "quantizer.codebook_size: expected an int, got '64'"


def test_unknown_profile_is_named():
    with pytest.raises(ConfigError) as err:
        _validated("profile", "nope")
    assert str(err.value) == "profile: unknown profile 'nope'; choose one of ['cpu', 'gpu', 'paper', 'smoke']"


def test_feature_map_token_source_needs_one_branch_at_the_patch_grid():
    """The feature-map baseline: the last scale must be the patch grid (16 / 4 = 4) and P must be 1."""
    base = config.to_dict(config.profile("smoke"))
    for dotted, value in (("tokenizer.token_source", "feature_map"), ("quantizer.branches", 1)):
        _with(base, dotted, value)
    config.validate(config.from_dict(base))
    for dotted, value, message in (
            ("quantizer.scales", [1, 2, 3], "quantizer.scales: token_source feature_map needs the last scale to equal "
                                            "the patch grid 4, got 3"),
            ("quantizer.branches", 2, "quantizer.branches: token_source feature_map is the single-branch (VAR) "
                                      "baseline: P must be 1")):
        with pytest.raises(ConfigError) as err:
            config.validate(config.from_dict(_with(copy.deepcopy(base), dotted, value)))
        assert str(err.value) == message
