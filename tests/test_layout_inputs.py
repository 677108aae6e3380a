"""What each input position of every layout carries: its scale, its site and its branch.

The inputs are hand-built so that every value names where it came from (scale, site, branch); the
generator's embeddings are set to copy those values and the position terms into separate channels, and
the sequence that reaches the first block is read position by position. The expected order of the
positions is written out here from the layouts' definitions (layouts.py's docstring), not read from the
layout under test.
"""
from __future__ import annotations

import pytest
import torch

from imagefolder.config import ConfigError, GeneratorConfig, QuantizerConfig
from imagefolder.generator import Generator
from imagefolder.layouts import build_layout

SCALES, P, C, V = [1, 2, 3], 2, 3, 16
# channels of the width-10 sequence: 0..P·C-1 the embedded input, then class, site row, level, branch
CLASS, SITE, LEVEL, BRANCH = P * C, P * C + 1, P * C + 2, P * C + 3
W = P * C + 4
LABEL = 2


def _generator(layout: str, scales=SCALES, branches=P) -> Generator:
    """A generator whose embeddings write each term into its own channel, all +1 so that 0 means absent."""
    qcfg = QuantizerConfig(scales=list(scales), branches=branches, codebook_size=V, code_dim=C)
    g = Generator(GeneratorConfig(layout=layout, depth=1, width=W, heads=1), qcfg, num_classes=4).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.zero_()
        if layout == "raster":
            g.word_embed.weight[:, 0] = torch.arange(V) + 1.0  # token v → channel 0 holds v + 1
        else:
            g.word_embed.weight.copy_(torch.eye(W, g.word_embed.in_features))  # input channels copied as is
        g.class_emb.weight[:, CLASS] = torch.arange(g.class_emb.num_embeddings) + 1.0
        g.pos_emb[:, SITE] = torch.arange(g.pos_emb.shape[0]) + 1.0
        g.level_emb.weight[:, LEVEL] = torch.arange(len(scales)) + 1.0
        if g.branch_emb is not None:
            g.branch_emb.weight[:, BRANCH] = torch.arange(branches) + 1.0
    return g


def _first_block_input(g: Generator, inputs: torch.Tensor) -> torch.Tensor:
    """(L, W): the sequence entering the first transformer block for label LABEL."""
    seen = []
    handle = g.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        g(torch.tensor([LABEL]), inputs)
    finally:
        handle.remove()
    return seen[0][0]


def _scale_inputs() -> torch.Tensor:
    """Quantizer-style inputs (1, Σ_{i≥2} s_i², P·C): scale-major, row-major sites, channel p·C + c; branch
    p's C channels at site j of scale i hold (i, j, p) + 1."""
    rows = [[v + 1.0 for p in range(P) for v in (i, j, p)] for i, s in enumerate(SCALES) if i > 0
            for j in range(s * s)]
    return torch.tensor(rows)[None]


def _site_row(i: int, j: int) -> int:
    """Row of the position table of site j of scale i: the sites of all scales numbered in turn."""
    return sum(s * s for s in SCALES[:i]) + j


def test_folded_position_carries_every_branch_of_its_site():
    x = _first_block_input(_generator("folded"), _scale_inputs())
    expected = [(i, j) for i, s in enumerate(SCALES) for j in range(s * s)]  # one position per site
    assert x.shape == (len(expected), W)
    for t, (i, j) in enumerate(expected):
        word = [0.0] * (P * C) if i == 0 else [v + 1.0 for p in range(P) for v in (i, j, p)]
        assert x[t, :P * C].tolist() == word, f"position {t} (scale {i}, site {j})"
        assert x[t, SITE] == _site_row(i, j) + 1 and x[t, LEVEL] == i + 1 and x[t, BRANCH] == 0
        assert x[t, CLASS] == (LABEL + 1 if i == 0 else 0)


def test_unfolded_position_carries_its_own_branch_of_its_site():
    x = _first_block_input(_generator("unfolded"), _scale_inputs())
    # per scale, all sites of branch 0, then all sites of branch 1
    expected = [(i, j, p) for i, s in enumerate(SCALES) for p in range(P) for j in range(s * s)]
    assert expected[2:6] == [(1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 3, 0)] and expected[6] == (1, 0, 1)
    assert x.shape == (len(expected), W)
    for t, (i, j, p) in enumerate(expected):
        word = [0.0] * C if i == 0 else [i + 1.0, j + 1.0, p + 1.0]
        assert x[t, :C].tolist() == word, f"position {t} (scale {i}, site {j}, branch {p})"
        assert x[t, C:P * C].abs().sum() == 0  # the other branch's channels are not read
        assert x[t, SITE] == _site_row(i, j) + 1 and x[t, LEVEL] == i + 1 and x[t, BRANCH] == p + 1
        assert x[t, CLASS] == (LABEL + 1 if i == 0 else 0)


def test_unfolded_sampling_step_embeds_like_teacher_forcing():
    """One sampling step's input (B, s², P·C) is embedded in the same branch-major order."""
    g = _generator("unfolded")
    step = _scale_inputs()[:, :4]  # scale 1 (s = 2)
    x = g.layout.embed(g.word_embed, step)[0]  # (P·s², W)
    expected = [(1, j, p) for p in range(P) for j in range(4)]
    assert [tuple(int(v) - 1 for v in row[:C]) for row in x] == expected


def test_raster_position_carries_the_previous_token():
    K = 3
    g = _generator("raster", scales=[K], branches=1)
    indices = [torch.tensor([[[[5, 7, 1], [0, 9, 3], [15, 2, 4]]]])]  # (1, 1, K, K), site j = row-major
    flat = [5, 7, 1, 0, 9, 3, 15, 2, 4]
    x = _first_block_input(g, g.inputs(indices))
    assert x.shape == (K * K, W)
    for t in range(K * K):
        assert x[t, 0] == (0 if t == 0 else flat[t - 1] + 1), f"position {t}"
        assert x[t, SITE] == t + 1 and x[t, LEVEL] == 1 and x[t, BRANCH] == 0
        assert x[t, CLASS] == (LABEL + 1 if t == 0 else 0)


@pytest.mark.parametrize("layout, n", [("folded", 14), ("unfolded", 28), ("raster", 9)])
def test_position_ids_written_out(layout, n):
    """The (block, level, site, branch) ids, hand-listed for scales [1, 2, 3] (raster: [3]), P = 2 (raster 1)."""
    qcfg = QuantizerConfig(scales=[3] if layout == "raster" else SCALES, branches=1 if layout == "raster" else P,
                           codebook_size=V, code_dim=C)
    lay = build_layout(layout, qcfg)
    if layout == "folded":
        block = [0] + [1] * 4 + [2] * 9
        level, site, branch = block, list(range(14)), [0] * 14
    elif layout == "unfolded":
        block = [0, 0] + [1] * 8 + [2] * 18
        level = block
        site = [0, 0] + [1, 2, 3, 4] * 2 + list(range(5, 14)) * 2
        branch = [0, 1] + [0] * 4 + [1] * 4 + [0] * 9 + [1] * 9
    else:
        block, level, site, branch = list(range(9)), [0] * 9, list(range(9)), [0] * 9
    assert (lay.block, lay.level, lay.site, lay.branch) == (block, level, site, branch) and lay.length == n


def _layout(name: str):
    if name == "raster":
        return build_layout(name, QuantizerConfig(scales=[3], branches=1, codebook_size=V, code_dim=C))
    return build_layout(name, QuantizerConfig(scales=SCALES, branches=P, codebook_size=V, code_dim=C))


@pytest.mark.parametrize("layout, rows", [
    # (how many positions share a row, how many positions that row sees), hand-counted from the steps
    ("folded", [(1, 1), (4, 5), (9, 14)]),
    ("unfolded", [(2, 2), (8, 10), (18, 28)]),
    ("raster", [(1, t + 1) for t in range(9)]),
])
def test_block_mask_written_out(layout, rows):
    L = sum(n for n, _ in rows)
    expected = torch.tensor([[j < seen for j in range(L)] for n, seen in rows for _ in range(n)])
    assert torch.equal(_layout(layout).block_mask(), expected)


@pytest.mark.parametrize("layout, branch_of_token", [
    ("folded", [[0, 1]] * 14),
    ("unfolded", [[b] for b in [0, 1] + [0] * 4 + [1] * 4 + [0] * 9 + [1] * 9]),
    ("raster", [[0]] * 9),
])
def test_token_branch_written_out(layout, branch_of_token):
    assert _layout(layout).token_branch().tolist() == branch_of_token


def test_targets_written_out_for_two_scales():
    """Scales [1, 2], P = 2, token values 0..9 in the token cache's order (scale, branch, row-major site)."""
    qcfg = QuantizerConfig(scales=[1, 2], branches=P, codebook_size=V, code_dim=C)
    indices = [torch.tensor([0, 1]).view(1, 2, 1, 1), torch.arange(2, 10).view(1, 2, 2, 2)]
    folded, unfolded = build_layout("folded", qcfg), build_layout("unfolded", qcfg)
    # folded: a site's two branches side by side; unfolded: the cache order itself
    assert folded.targets(indices)[0].tolist() == [[0, 1], [2, 6], [3, 7], [4, 8], [5, 9]]
    assert unfolded.targets(indices)[0].flatten().tolist() == list(range(10))
    for lay in (folded, unfolded):
        assert all(torch.equal(a, b) for a, b in zip(lay.indices(lay.targets(indices)), indices))


@pytest.mark.parametrize("scales, branches", [([4], 2), ([2, 4], 1), ([2, 4], 2)])
def test_raster_refuses_all_but_one_scale_and_one_branch(scales, branches):
    with pytest.raises(ConfigError) as err:
        build_layout("raster", QuantizerConfig(scales=scales, branches=branches, codebook_size=V, code_dim=C))
    assert str(err.value) == ("generator.layout: 'raster' needs a single-scale, single-branch tokenizer "
                              f"(quantizer.scales=[K], quantizer.branches=1), got scales={scales}, "
                              f"branches={branches}")


@pytest.mark.parametrize("layout", ["folded", "unfolded"])
def test_sampling_starts_from_an_empty_f_hat_at_the_last_scale(layout):
    """f̂ = 0 (B, P, C, K, K), K the last scale (3 here, not the second, 2)."""
    state = _layout(layout).start_state(torch.ones(5, 7, dtype=torch.float64))
    assert state.shape == (5, P, C, 3, 3) and state.dtype == torch.float64 and not state.any()


def test_index_check_edges():
    lay = _layout("folded")
    top = [torch.full((1, P, s, s), V - 1) for s in SCALES]
    lay.check_indices(top)  # V − 1 is the last code
    for bad, got in ((V, f"[{V - 1}, {V}]"), (-1, f"[-1, {V - 1}]")):
        idx = [t.clone() for t in top]
        idx[1][0, 1, 1, 0] = bad
        with pytest.raises(ValueError) as err:
            lay.check_indices(idx)
        assert str(err.value) == f"indices: values must be in [0, {V}) (the codebook size), got range {got}"
