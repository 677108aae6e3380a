"""The sampler's draw and guidance ramp against hand-worked values (sampler.py)."""
from __future__ import annotations

import math

import pytest
import torch

from imagefolder.sampler import candidates, guidance_weights, sample_tokens

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
