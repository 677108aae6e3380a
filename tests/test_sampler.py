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
