"""Tests of the token layouts (`imagefolder.layouts`): every registered layout keeps the interface's
invariants (lengths, steps, indices ↔ targets, block-causal mask, inputs for training and sampling).
A new layout adds its class to `LAYOUTS` and one row to `EXAMPLES`."""
from __future__ import annotations

import types
import typing

import pytest
import torch

from imagefolder import config
from imagefolder.config import ConfigError, QuantizerConfig
from imagefolder.layouts import LAYOUTS, build_layout, flatten_indices
from imagefolder.quantize import ProductQuantizer

SMOKE = config.profile("smoke").quantizer  # 10 scales up to 4×4, 2 branches, V = 64, C = 32
RASTER = config.profile("smoke", {"quantizer.scales": [4], "quantizer.branches": 1,
                                  "quantizer.dropout_n_start": 1}).quantizer
# layout → (the tokenizer's quantizer config, expected L, AR steps, G)
EXAMPLES = {"folded": (SMOKE, 39, 10, 2), "unfolded": (SMOKE, 78, 10, 1), "raster": (RASTER, 16, 16, 1)}


def random_indices(layout, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(layout.codebook_size, (B, layout.branches, s, s), generator=g) for s in layout.scales]


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request):
    return build_layout(request.param, EXAMPLES[request.param][0])


def test_every_registered_layout_has_an_example():
    assert set(EXAMPLES) == set(LAYOUTS) and all(cls.name == name for name, cls in LAYOUTS.items())


def test_config_offers_exactly_the_registered_layouts():
    assert set(typing.get_args(typing.get_type_hints(config.GeneratorConfig)["layout"])) == set(LAYOUTS)


def test_a_config_saved_with_the_former_names_fails_naming_the_field():
    """A saved config naming a field by its former name (`generator.mode` for `generator.layout`,
    `tokenizer.token_layout` for `tokenizer.token_source`) is an unknown field."""
    for section, old, new in (("generator", "mode", "layout"), ("tokenizer", "token_layout", "token_source")):
        saved = config.to_dict(config.profile("smoke"))
        saved[section][old] = saved[section].pop(new)
        with pytest.raises(ConfigError, match=rf"{section}.{old}: unknown field .*known: .*\b{new}\b"):
            config.from_dict(saved)


def test_registry_names_the_field_for_an_unknown_layout():
    with pytest.raises(ConfigError,
                       match=r"generator.layout: 'zigzag' is not one of \('folded', 'unfolded', 'raster'\)"):
        build_layout("zigzag", SMOKE)
    with pytest.raises(ConfigError, match="raster' needs a single-scale, single-branch tokenizer"):
        build_layout("raster", SMOKE)


def test_lengths_and_steps(layout):
    _, L, n_steps, G = EXAMPLES[layout.name]
    assert (layout.length, len(layout.steps), layout.tokens_per_position) == (L, n_steps, G)
    assert all(len(ids) == L for ids in (layout.block, layout.level, layout.site, layout.branch))
    assert L * G == layout.branches * config.token_count(layout.scales)  # every token predicted once
    # the steps tile the sequence in order, each step one scale, scales in order, every scale present
    assert layout.steps[0][0] == 0 and layout.steps[-1][1] == L
    assert all(a < b == c for (a, b), (c, _) in zip(layout.steps, layout.steps[1:] + [(L, L)]))
    assert layout.step_scale == sorted(layout.step_scale)
    assert set(layout.step_scale) == set(range(len(layout.scales)))
    for (a, b), scale in zip(layout.steps, layout.step_scale):
        assert set(layout.level[a:b]) == {scale}
    assert layout.n_steps(len(layout.scales)) == n_steps
    assert all(0 <= p < layout.branches for p in layout.branch) and min(layout.site) == 0


def test_block_causal_mask(layout):
    mask = layout.block_mask()
    assert mask.shape == (layout.length, layout.length) and mask.dtype == torch.bool
    step_of = torch.zeros(layout.length, dtype=torch.long)
    for k, (a, b) in enumerate(layout.steps):
        step_of[a:b] = k
    # a position sees exactly its own step and all earlier ones
    assert torch.equal(mask, step_of[:, None] >= step_of[None, :])


def test_indices_targets_round_trip(layout):
    idx = random_indices(layout)
    tokens_BLG = layout.targets(idx)
    assert tokens_BLG.shape == (3, layout.length, layout.tokens_per_position)
    assert all(torch.equal(a, b) for a, b in zip(layout.indices(tokens_BLG), idx))
    for n in range(1, len(layout.scales) + 1):  # any prefix of scales is a prefix of the steps
        end = layout.steps[layout.n_steps(n) - 1][1]
        assert torch.equal(layout.targets(idx[:n]), tokens_BLG[:, :end])
        assert all(torch.equal(a, b) for a, b in zip(layout.indices(tokens_BLG[:, :end]), idx[:n]))
    # a permutation of the token cache order, and each token sits where `token_branch` says
    unique = [torch.arange(t.numel()).view(t.shape) + sum(u.numel() for u in idx[:i]) for i, t in enumerate(idx)]
    assert torch.equal(layout.targets(unique).flatten().sort().values, flatten_indices(unique).flatten().sort().values)
    branch_of = [torch.arange(layout.branches).view(1, -1, 1, 1).expand_as(t) for t in idx]
    assert torch.equal(layout.targets(branch_of)[0], layout.token_branch())


def test_teacher_forcing_inputs_equal_the_sampling_inputs(layout):
    """Embedded teacher-forcing inputs (training) = the inputs built step by step (sampling)."""
    torch.manual_seed(0)
    quantizer = ProductQuantizer(EXAMPLES[layout.name][0]).eval() if layout.uses_quantizer else None
    word_embed = layout.input_embedding(16)
    idx = random_indices(layout, B=2)
    tokens_BLG = layout.targets(idx)
    with torch.no_grad():
        train_BLW = layout.embed_inputs(word_embed, layout.teacher_forcing_inputs(idx, quantizer))
        state, steps_BLW = layout.start_state(torch.zeros(2, 1)), []
        for k, (a, b) in enumerate(layout.steps[:-1]):
            state, x = layout.next_input(k, tokens_BLG[:, a:b], quantizer, state)
            steps_BLW.append(layout.embed(word_embed, x))
    n_first = layout.steps[0][1]
    assert train_BLW.shape == (2, layout.length - n_first, 16)
    torch.testing.assert_close(torch.cat(steps_BLW, dim=1), train_BLW, atol=1e-5, rtol=1e-5)


def test_var_style_is_folded_with_one_branch():
    with torch.device("meta"):
        var = build_layout("folded", QuantizerConfig(scales=config.VAR_SCALES, branches=1))
    assert var.length == 680 and len(var.steps) == 10 and var.tokens_per_position == 1


def test_checks_name_what_is_wrong(layout):
    idx = random_indices(layout, B=2)
    layout.check_indices(idx)
    with pytest.raises(ValueError, match=f"expected {len(layout.scales)} scales"):
        layout.check_indices(idx + idx)
    with pytest.raises(ValueError, match="expected dtype torch.long"):
        layout.check_indices([t.int() for t in idx])
    with pytest.raises(ValueError, match=rf"values must be in \[0, {layout.codebook_size}\)"):
        layout.check_indices(idx[:-1] + [idx[-1] - 1 - idx[-1]])
    with pytest.raises(ValueError, match=f"generator layout '{layout.name}' needs the tokenizer's quantizer"):
        layout.check_quantizer(None)


def _attributes(layout, **changed):
    """A stand-in quantizer carrying only the four attributes a layout checks (CONTRACTS.md), as `layout`
    expects them unless `changed`."""
    attrs = dict(scales=list(layout.scales), branches=layout.branches, codebook_size=layout.codebook_size,
                 code_dim=layout.code_dim) | changed
    return types.SimpleNamespace(**attrs)


def test_quantizer_check_compares_all_four_attributes_and_lists_every_mismatch():
    """Each of scales, branches, codebook size and code dim is compared (scales as a sequence: a tuple of the
    same scales passes); the message names every mismatch, in the attributes' order, and nothing else."""
    layout = build_layout("folded", SMOKE)
    layout.check_quantizer(_attributes(layout))
    layout.check_quantizer(_attributes(layout, scales=tuple(layout.scales)))
    for name, value in (("scales", [1, 2]), ("branches", 3), ("codebook_size", 65), ("code_dim", 31)):
        with pytest.raises(ValueError, match=f"^quantizer does not match the generator: {name}: model "):
            layout.check_quantizer(_attributes(layout, **{name: value}))
    with pytest.raises(ValueError) as err:
        layout.check_quantizer(_attributes(layout, branches=3, code_dim=31))
    assert str(err.value) == ("quantizer does not match the generator: branches: model 2 vs quantizer 3; "
                              "code_dim: model 32 vs quantizer 31")


def test_quantizer_check_names_the_quantizers_type_and_its_missing_attributes():
    layout = build_layout("folded", SMOKE)
    partial = _attributes(layout)
    del partial.codebook_size, partial.code_dim
    with pytest.raises(ValueError) as err:
        layout.check_quantizer(partial)
    assert str(err.value) == ("quantizer SimpleNamespace lacks the attributes ['codebook_size', 'code_dim'] that "
                              "CONTRACTS.md promises (scales, branches, codebook_size, code_dim)")


@pytest.mark.parametrize("name", ["folded", "unfolded"])
def test_next_input_names_a_missing_state_and_the_last_step(name):
    """A scale layout's sampling step needs f̂ (from start_state) and has no input after its last scale."""
    layout = build_layout(name, SMOKE)
    quantizer = ProductQuantizer(SMOKE).eval()
    idx = random_indices(layout, B=1)
    tokens_BLG = layout.targets(idx)
    a, b = layout.steps[0]
    with pytest.raises(ValueError) as err:
        layout.next_input(0, tokens_BLG[:, a:b], quantizer, None)
    assert str(err.value) == "next_input: the state must be f̂ from start_state, got None"
    last = len(layout.steps) - 1
    a, b = layout.steps[last]
    with pytest.raises(ValueError) as err:
        layout.next_input(last, tokens_BLG[:, a:b], quantizer, layout.start_state(torch.zeros(1, 1)))
    assert str(err.value) == f"next_input: step {last} is the last of {len(layout.scales)}; no input follows it"
