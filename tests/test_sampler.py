"""The sampler's draw and guidance ramp against hand-worked values (sampler.py)."""
from __future__ import annotations

import math

import pytest
import torch

from imagefolder.sampler import Forcing, candidates, guidance_weights, sample_tokens

# one row whose softmax is (0.1, 0.2, 0.3, 0.4) over tokens 0..3
ROW = torch.tensor([[math.log(1.0), math.log(2.0), math.log(3.0), math.log(4.0)]])


@pytest.mark.parametrize("cfg_scale, n, expected", [
    (3.0, 4, [0.0, 1.0, 2.0, 3.0]),  # linear from 0 at the first scale to cfg_scale at the last
    (1.5, 2, [0.0, 1.5]),
    (2.0, 1, [2.0]),  # one scale: the full weight
    (0.0, 3, [0.0, 0.0, 0.0]),  # no guidance
])
def test_guidance_weights_written_out(cfg_scale, n, expected):
    assert guidance_weights(cfg_scale, n) == pytest.approx(expected, abs=1e-12)


def test_candidates_order_cdf_and_top_p_cut():
    order, cdf, kept = candidates(ROW)
    assert order.tolist() == [[3, 2, 1, 0]]
    assert cdf[0].tolist() == pytest.approx([0.4, 0.7, 0.9, 1.0])
    assert kept.tolist() == [[4]]  # p = 1 keeps all
    # top-p keeps the smallest prefix whose mass reaches p: mass before each token is 0, 0.4, 0.7, 0.9
    for p, n in ((0.3, 1), (0.5, 2), (0.75, 3), (0.95, 4)):
        assert candidates(ROW, top_p=p)[2].tolist() == [[n]], p


@pytest.mark.parametrize("k, order, cdf", [
    (1, [3], [1.0]),
    (2, [3, 2], [4 / 7, 1.0]),  # renormalised over the two kept
    (4, [3, 2, 1, 0], [0.4, 0.7, 0.9, 1.0]),  # k = V and k > V keep every token
    (5, [3, 2, 1, 0], [0.4, 0.7, 0.9, 1.0]),
    (None, [3, 2, 1, 0], [0.4, 0.7, 0.9, 1.0]),
])
def test_candidates_top_k(k, order, cdf):
    o, c, kept = candidates(ROW, top_k=k)
    assert o.tolist() == [order] and c[0].tolist() == pytest.approx(cdf) and kept.tolist() == [[len(order)]]


def test_top_k_then_top_p_per_row():
    """Rows are filtered alone: a second row with the reverse preference keeps its own tokens."""
    rows = torch.cat([ROW, ROW.flip(-1)])
    order, cdf, kept = candidates(rows, top_k=3, top_p=0.5)
    assert order.tolist() == [[3, 2, 1], [0, 1, 2]]
    # within the top 3 the mass is (4, 3, 2) / 9: before each token 0, 4/9, 7/9, so p = 0.5 keeps two
    assert kept.tolist() == [[2], [2]] and cdf[1].tolist() == pytest.approx([4 / 9, 7 / 9, 1.0])


def test_sample_tokens_inverts_the_cdf_at_one_uniform_per_row():
    """Re-implemented draw: the first kept candidate whose cumulative probability reaches u times the kept mass."""
    logits = torch.randn(6, 3, 16, generator=torch.Generator().manual_seed(0))
    for top_k, top_p in ((None, 1.0), (5, 1.0), (None, 0.6), (4, 0.5)):
        got = sample_tokens(logits, top_k=top_k, top_p=top_p, generator=torch.Generator().manual_seed(7))
        u = torch.rand(18, 1, generator=torch.Generator().manual_seed(7))
        flat = logits.reshape(18, 16)
        expected = []
        for row, ur in zip(flat, u[:, 0]):
            probs, ids = row.softmax(-1).sort(descending=True)
            if top_k is not None:
                probs, ids = (row[ids[:top_k]]).softmax(-1), ids[:top_k]
            before = probs.cumsum(0) - probs
            n = int((before < top_p).sum())
            cdf = probs[:n].cumsum(0)
            expected.append(int(ids[int((cdf < ur * cdf[-1]).sum())]))
        assert got.shape == (6, 3) and got.dtype == torch.long
        assert got.flatten().tolist() == expected, (top_k, top_p)


def _tiny_generator():
    from imagefolder.config import GeneratorConfig, QuantizerConfig
    from imagefolder.generator import Generator
    from imagefolder.quantize import ProductQuantizer
    torch.manual_seed(0)
    qcfg = QuantizerConfig(scales=[1, 2], branches=2, codebook_size=8, code_dim=4)
    model = Generator(GeneratorConfig(depth=1, width=16, heads=2), qcfg, num_classes=3).eval()
    for p in model.parameters():  # away from adaLN-Zero's identity start, so the class matters
        torch.nn.init.normal_(p, std=0.3)
    return model, ProductQuantizer(qcfg).eval()


@pytest.mark.parametrize("cfg_scale, rows", [(0.0, 2), (0.5, 4)])
def test_guidance_doubles_the_batch_only_when_on(cfg_scale, rows):
    """cfg_scale 0 is no guidance and runs B rows; any positive scale runs 2B (conditional, then null class)."""
    model, q = _tiny_generator()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    model.sample(torch.tensor([0, 1]), q, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(0))
    assert seen and set(seen) == {rows}


def test_a_small_guidance_scale_changes_the_logits_of_the_last_scale():
    """Weights ramp 0 → cfg_scale over the scales: scale 1 is unguided, scale 2 gets cond + 0.5·(cond − uncond)."""
    model, q = _tiny_generator()
    runs = [model.sample(torch.tensor([0, 1]), q, cfg_scale=c, top_k=1, return_logits=True)[1] for c in (0.0, 0.5)]
    torch.testing.assert_close(runs[0][0], runs[1][0])  # first scale: weight 0
    assert not torch.allclose(runs[0][1], runs[1][1])


def test_the_compiled_path_runs_its_static_caches(monkeypatch):
    """compiled=True steps through `CompiledSteps` over the model's static KV caches (torch.compile replaced by
    the identity here, so it runs eagerly and fast): the same tokens as the eager cache."""
    model, q = _tiny_generator()
    labels = torch.tensor([0, 2])
    eager = model.sample(labels, q, cfg_scale=1.5, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    static = model.sample(labels, q, cfg_scale=1.5, generator=torch.Generator().manual_seed(4), compiled=True)
    assert list(model.static_kv) == [(4, torch.float32, torch.device("cpu"))]  # 2B rows with guidance
    assert all(torch.equal(a, b) for a, b in zip(eager, static))


def test_the_draw_stays_on_the_logits_device():
    """Logits on the meta device give meta tokens: the uniform numbers are drawn where the logits are."""
    tokens = sample_tokens(torch.zeros(2, 3, 4, device="meta"), top_k=2, top_p=0.5)
    assert tokens.device.type == "meta" and tokens.shape == (2, 3) and tokens.dtype == torch.long


def test_eager_sampling_never_compiles(monkeypatch):
    """compiled=False (the default) runs the eager KV cache: no torch.compile, no static caches."""
    model, q = _tiny_generator()
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: pytest.fail("eager sampling called torch.compile"))
    model.sample(torch.tensor([0, 2]), q, cfg_scale=1.5, generator=torch.Generator().manual_seed(4))
    assert model.static_kv == {}


@pytest.mark.parametrize("labels, got", [
    (torch.tensor([0.0, 1.0]), "torch.float32 (2,)"),  # 1-D, but not long
    (torch.tensor([[0, 1]]), "torch.int64 (1, 2)"),  # long, but 2-D
])
def test_labels_of_the_wrong_kind_are_named(labels, got):
    model, q = _tiny_generator()
    with pytest.raises(ValueError) as err:
        model.sample(labels, q)
    assert str(err.value) == f"labels: expected a 1-D long tensor, got {got}"


def test_an_unknown_class_names_the_valid_range():
    model, q = _tiny_generator()  # three classes
    with pytest.raises(ValueError) as err:
        model.sample(torch.tensor([1, 3]), q)
    assert str(err.value) == "labels: unknown class index 3; the model has 3 classes (0..2)"


def test_forcing_without_reference_indices_is_named():
    model, q = _tiny_generator()
    with pytest.raises(ValueError) as err:
        model.sample(torch.tensor([0]), q, force_branches=[1])
    assert str(err.value) == "force_branches needs `reference` indices"


def test_top_p_of_one_keeps_tokens_of_negligible_mass():
    """p = 1 keeps every token, even those whose preceding mass rounds to 1 in float32 (e^-30 ≈ 1e-13)."""
    assert candidates(torch.tensor([[0.0, -30.0, -30.0, -30.0]]))[2].tolist() == [[4]]


def test_top_p_is_reached_at_exactly_its_mass():
    """Four equal logits: the mass before each token is exactly 0, 0.25, 0.5, 0.75; p = 0.5 is reached by two."""
    assert candidates(torch.zeros(1, 4), top_p=0.5)[2].tolist() == [[2]]
    assert candidates(torch.zeros(1, 4), top_p=0.75)[2].tolist() == [[3]]


def _folded(scales):
    from imagefolder.config import QuantizerConfig
    from imagefolder.layouts import build_layout
    return build_layout("folded", QuantizerConfig(scales=scales, branches=2, codebook_size=8, code_dim=4))


def test_forcing_keeps_the_forced_branch_of_every_position_of_one_scale():
    """One 2×2 scale, P = 2, branch 0 forced: each of the 4 folded positions keeps its first token, samples its
    second."""
    ref = [torch.arange(16).remainder(8).view(2, 2, 2, 2)]  # image 1: branch 0 holds 0..3, branch 1 4..7
    forcing = Forcing.resolve(_folded([2]), ref, [0], torch.tensor([0, 1]))
    assert forcing.kept_LG.tolist() == [[True, False]] * 4
    assert forcing.tokens_BLG[1].tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]  # site by site: (branch 0, branch 1)
    with pytest.raises(ValueError) as err:
        Forcing.resolve(_folded([2]), ref, [0], torch.tensor([0, 1, 2]))
    assert str(err.value) == "reference batch 2 != number of labels 3"


def test_a_reference_batch_other_than_the_labels_is_named():
    """Reference batch 3 against 2 labels (2 is also P, the size of the next dimension)."""
    ref = [torch.zeros(3, 2, s, s, dtype=torch.long) for s in (1, 2)]
    with pytest.raises(ValueError) as err:
        Forcing.resolve(_folded([1, 2]), ref, [1], torch.tensor([0, 1]))
    assert str(err.value) == "reference batch 3 != number of labels 2"


def test_forcing_lives_on_the_labels_device(monkeypatch):
    """Labels on the meta device give the forced tokens and mask there, torch.isin's two operands on one device
    (CUDA requires it; meta does not check, so the test does)."""
    isin = torch.isin
    devices = []
    monkeypatch.setattr(torch, "isin", lambda a, b: (devices.append((a.device.type, b.device.type)), isin(a, b))[1])
    ref = [torch.zeros(3, 2, s, s, dtype=torch.long) for s in (1, 2)]
    forcing = Forcing.resolve(_folded([1, 2]), ref, [1], torch.zeros(3, dtype=torch.long, device="meta"))
    assert devices == [("meta", "meta")]
    assert forcing.kept_LG.device.type == forcing.tokens_BLG.device.type == "meta"
