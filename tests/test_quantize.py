"""Quantizer tests: token counts, the index conversions, residual behaviour, STE, quantizer dropout."""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imagefolder.config import PAPER_SCALES, VAR_SCALES, QuantizerConfig, profile, token_count
from imagefolder.quantize import Codebook, MultiScaleResidualQuantizer, ProductQuantizer


def make_pq(scales=(1, 2, 3, 4), P=2, V=32, C=8, **kw) -> ProductQuantizer:
    return ProductQuantizer(QuantizerConfig(scales=list(scales), branches=P, codebook_size=V, code_dim=C, **kw))


def smooth_features(B, P, C, K, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(B, P * C, max(1, K // 2), max(1, K // 2), generator=g)
    return F.interpolate(low, size=(K, K), mode="bicubic").view(B, P, C, K, K)


@pytest.mark.parametrize("scales, expected", [(PAPER_SCALES, 286), (VAR_SCALES, 680), ([1, 2, 3], 14), ([5], 25)])
def test_token_counts(scales, expected):
    q = make_pq(scales, P=2, V=16, C=4).eval()
    K = scales[-1]
    out = q(torch.randn(1, 2, 4, K, K))
    assert [tuple(i.shape) for i in out.indices] == [(1, 2, s, s) for s in scales]
    assert sum(i[0, 0].numel() for i in out.indices) == expected == token_count(list(scales))
    assert q.teacher_forcing_inputs(out.indices).shape == (1, expected - scales[0] ** 2, 2 * 4)


@pytest.mark.parametrize("lookup", ["cosine", "l2"])
def test_indices_to_fhat_reproduces_quantized_features(lookup):
    torch.manual_seed(0)
    q = make_pq(lookup=lookup)
    q.train()
    q(smooth_features(8, 2, 8, 4))  # data-dependent codebook init
    q.eval()
    f = smooth_features(5, 2, 8, 4, seed=1)
    out = q(f)
    assert torch.allclose(q.indices_to_fhat(out.indices), out.f_hat, atol=1e-5)
    # a truncated forward equals decoding the first n scales only
    for n in (1, 3):
        trunc = q(f, torch.full((5,), n))
        assert torch.allclose(q.indices_to_fhat(out.indices[:n]), trunc.f_hat, atol=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(trunc.indices, out.indices))


def test_teacher_forcing_matches_next_input_step_by_step():
    torch.manual_seed(0)
    q = make_pq(scales=(1, 2, 3, 5), V=16).eval()
    indices = [torch.randint(0, 16, (3, 2, s, s)) for s in q.scales]
    tf = q.teacher_forcing_inputs(indices)
    f_hat = torch.zeros(3, 2, 8, 5, 5)
    steps = []
    for si, idx in enumerate(indices):
        f_hat, nxt = q.next_input(f_hat, si, idx)
        if si < len(indices) - 1:
            assert nxt.shape == (3, q.scales[si + 1] ** 2, 16)
            steps.append(nxt)
        else:
            assert nxt is None
    assert torch.allclose(torch.cat(steps, dim=1), tf, atol=1e-6)
    assert torch.allclose(f_hat, q.indices_to_fhat(indices), atol=1e-5)
    # branch p's channels are the p-th block of P*C: zeroing branch 1's codes changes only that block
    other = [i.clone() for i in indices]
    for i in other:
        i[:, 1] = (i[:, 1] + 1) % 16
    tf2 = q.teacher_forcing_inputs(other)
    assert torch.allclose(tf[..., :8], tf2[..., :8]) and not torch.allclose(tf[..., 8:], tf2[..., 8:])


@pytest.mark.parametrize("lookup", ["cosine", "l2"])
def test_residual_norm_does_not_grow_with_scales_after_fit(lookup):
    torch.manual_seed(0)
    q = make_pq(scales=(1, 2, 3, 4, 6, 8), V=64, C=8, lookup=lookup, dropout_p=0.0)
    f = smooth_features(8, 2, 8, 8)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    q.train()
    for _ in range(25):
        loss = q(f).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        idx = q(f).indices
        errs = [float((f - q.indices_to_fhat(idx[:n])).norm()) for n in range(1, len(idx) + 1)]
    assert all(b <= a * 1.001 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.5 * float(f.norm()), (errs, float(f.norm()))


@pytest.mark.parametrize("lookup", ["cosine", "l2"])
def test_data_init_starts_closer_than_uniform_init(lookup):
    f = 0.1 * smooth_features(8, 2, 8, 4)  # features far smaller than unit codes, as after a fresh encoder
    errs = {}
    for init in ("data", "uniform"):
        torch.manual_seed(0)
        q = make_pq(codebook_init=init, dropout_p=0.0, lookup=lookup).train()
        assert all(bool(b.initialised) == (init == "uniform") for b in q.msrq)
        with torch.no_grad():
            out = q(f)
            errs[init] = float((q.indices_to_fhat(out.indices) - f).norm())
        assert all(bool(b.initialised) for b in q.msrq)
    assert errs["data"] < errs["uniform"], errs


def test_straight_through_gradient_and_codebook_gradient():
    torch.manual_seed(0)
    q = make_pq().train()
    f = smooth_features(4, 2, 8, 4).requires_grad_(True)
    out = q(f)
    (out.f_hat * 3.0).sum().backward(retain_graph=True)
    assert torch.allclose(f.grad, torch.full_like(f, 3.0))  # STE: identity gradient to the input
    assert all(b.codebook.weight.grad is None for b in q.msrq)  # the decoder path never trains codes
    f.grad = None
    out.loss.backward()
    for b in q.msrq:
        assert b.codebook.weight.grad.abs().sum() > 0  # codebook loss reaches the codes
        assert any(p.conv.weight.grad is not None and p.conv.weight.grad.abs().sum() > 0 for p in b.phis)
    assert f.grad.abs().sum() > 0  # commitment reaches the encoder


def test_quantizer_dropout_keeps_first_n_scales_same_n_all_branches():
    torch.manual_seed(0)
    S, n_start = 4, 2
    q = make_pq(scales=(1, 2, 3, 4), dropout_p=1.0, dropout_n_start=n_start)
    q.train()
    q(smooth_features(8, 2, 8, 4))  # init codebooks
    f = smooth_features(64, 2, 8, 4, seed=3)
    out = q(f)
    n = out.n_scales
    assert n.min() >= n_start and n.max() <= S
    assert set(n.tolist()) == set(range(n_start, S + 1))  # 64 draws cover U{2..4}
    for b in range(64):
        ref = q.indices_to_fhat([i[b:b + 1] for i in out.indices[: int(n[b])]])  # every branch, first n scales
        assert torch.allclose(out.f_hat[b:b + 1], ref, atol=1e-5)
    # the fraction p of the batch is truncated
    q.cfg.dropout_p = 0.5
    frac = float((q.sample_n_scales(4000, "cpu") < S).float().mean())
    expected = 0.5 * (S - n_start) / (S - n_start + 1)  # dropped and drew n < S
    assert abs(frac - expected) < 0.04
    # p = 0 disables it; eval never drops
    q.cfg.dropout_p = 0.0
    assert bool((q(f).n_scales == S).all())
    q.cfg.dropout_p = 1.0
    q.eval()
    assert bool((q(f).n_scales == S).all())


def test_index_checks_raise_clear_errors():
    q = make_pq(scales=(1, 2), V=8)
    good = [torch.zeros(1, 2, 1, 1, dtype=torch.long), torch.zeros(1, 2, 2, 2, dtype=torch.long)]
    q.check_indices(good)
    q.check_indices(good[:1])  # a prefix is fine
    with pytest.raises(ValueError, match=r"values must be in \[0, 8\)"):
        q.check_indices([good[0], torch.full((1, 2, 2, 2), 8)])
    with pytest.raises(ValueError, match=r"shape \(1, 2, 2, 2\)"):
        q.check_indices([good[0], torch.zeros(1, 2, 3, 3, dtype=torch.long)])
    with pytest.raises(ValueError, match="one per scale"):
        q.check_indices(good + good)


def test_single_codebook_lookup():
    cb = Codebook(4, 2, "l2")
    with torch.no_grad():
        cb.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [3, 0]]))
    z = torch.tensor([[2.9, 0.1], [0.9, 0.0], [0.1, 0.8]])
    assert cb.nearest(z).tolist() == [3, 0, 1]
    cb.lookup = "cosine"  # direction only: [2.9, .1] and [.9, 0] both point along codes 0 / 3
    assert cb.nearest(z)[:2].tolist() in ([0, 0], [3, 3])
    cb.lookup = "l2"
    f = torch.tensor([[2.9, 0.1], [0.1, 0.8]]).T.reshape(1, 2, 1, 2).requires_grad_(True)  # (B, C, h, w)
    out = cb(f)  # single-scale VQ: same return signature as the multi-scale quantizers
    assert out.indices[0].tolist() == [[[3, 1]]] and torch.equal(out.f_hat, torch.tensor([[[[3.0, 0]], [[0, 1]]]]))
    out.f_hat.sum().backward()
    assert torch.equal(f.grad, torch.ones_like(f)) and out.loss > 0 and out.n_scales.tolist() == [1]


def official_phi_indices(S: int, n: int) -> list[int]:
    """The rule of VAR's and the official ImageFolder code's PhiPartiallyShared, in numpy: n ticks evenly
    spaced from a to 1 - a (a = 1/(3n) for n = 4, else 1/(2n)); scale si uses the tick nearest to
    si / (S-1), the first one on a tie (argmin)."""
    a = 1 / 3 / n if n == 4 else 1 / 2 / n
    ticks = np.linspace(a, 1 - a, n)
    return [int(np.argmin(np.abs(ticks - si / (S - 1)))) for si in range(S)]


# worked by hand with ticks 1/12, 13/36, 23/36, 11/12; depths at a midpoint (2/9, 1/2, 7/9) are ties that
# float64 resolves upwards: S = 10 scales 3 and 8, S = 13 scale 7
PHI_BY_HAND = {6: [0, 0, 1, 2, 3, 3], 10: [0, 0, 1, 1, 1, 2, 2, 3, 3, 3], 13: [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]}


@pytest.mark.parametrize("S", range(6, 14))
def test_phi_index_is_the_official_nearest_tick(S):
    msrq = MultiScaleResidualQuantizer(QuantizerConfig(scales=list(range(1, S + 1)), phi_convs=4))
    got = [msrq.phi_index(si) for si in range(S)]
    assert got == official_phi_indices(S, 4)
    assert got == PHI_BY_HAND.get(S, got)


def test_phi_index_other_counts_and_the_paper_layout():
    for n in (1, 2, 3, 5, 10):  # n = S is VAR's non-shared φ: one per scale, in order
        msrq = MultiScaleResidualQuantizer(QuantizerConfig(scales=PAPER_SCALES, phi_convs=n))
        assert [msrq.phi_index(si) for si in range(10)] == official_phi_indices(10, n), n
    assert [msrq.phi_index(si) for si in range(10)] == list(range(10))
    assert MultiScaleResidualQuantizer(QuantizerConfig(scales=[4], phi_convs=4)).phi_index(0) == 0  # S = 1
    # the official release's quant_resi.qresi_ls.0..3 map 1:1 onto phis.0..3: four convs, used in tick order
    paper = profile("paper").quantizer
    assert paper.scales == PAPER_SCALES and paper.phi_convs == 4
    msrq = MultiScaleResidualQuantizer(paper)
    assert [k for k in msrq.state_dict() if k.startswith("phis.")] == [
        f"phis.{i}.conv.{w}" for i in range(4) for w in ("weight", "bias")]
    assert [msrq.phi_index(si) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_single_scale_vq_hand_worked():
    """Two codes (1, 0) and (0, 2), L2 lookup; features (0.9, 0.1) and (0.2, 1.5) pick codes 0 and 1. The squared
    errors are 0.01 + 0.01 and 0.04 + 0.25, so both loss terms equal their mean 0.0775: loss = (1 + β) · 0.0775."""
    cb = Codebook(2, 2, "l2", beta=0.25)
    with torch.no_grad():
        cb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    f = torch.tensor([[0.9, 0.2], [0.1, 1.5]]).view(1, 2, 1, 2).requires_grad_()  # (B, C, h, w): sites as columns
    out = cb(f)
    assert out.indices[0].tolist() == [[[0, 1]]]
    assert out.loss.item() == pytest.approx(1.25 * 0.0775)
    assert out.f_hat.detach().view(2, 2).tolist() == [[1.0, 0.0], [0.0, 2.0]]  # (C, w): the codes
    out.f_hat.sum().backward()
    assert f.grad.tolist() == torch.ones(1, 2, 1, 2).tolist()  # straight-through


def test_single_scale_vq_keeps_every_sample_on_its_device():
    cb = Codebook(2, 2, "l2").to("meta")
    out = cb(torch.zeros(3, 2, 1, 1, device="meta"))
    assert out.n_scales.dtype == torch.long and out.n_scales.device.type == "meta" and out.n_scales.shape == (3,)


@pytest.mark.parametrize("batch, p, first", [(5, 0.5, 2), (5, 0.4, 2), (4, 0.5, 2), (3, 0.0, 0), (3, 0.99, 2)])
def test_first_rows_are_the_first_floor_p_b(batch, p, first):
    """`dropout_pick="first"`: ⌊p·B⌋ samples (5 · 0.4 = 2 exactly: two, not three)."""
    q = make_pq(scales=(1, 2), dropout_p=p, dropout_pick="first")
    assert q.first_rows(batch, "cpu").tolist() == [i < first for i in range(batch)]
    assert q.first_rows(batch, "meta").device.type == "meta"


def test_dropout_pick_first_truncates_only_the_first_rows():
    torch.manual_seed(0)
    q = make_pq(scales=(1, 2, 3, 4), dropout_p=0.5, dropout_n_start=1, dropout_pick="first").train()
    draws = torch.stack([q.sample_n_scales(6, "cpu") for _ in range(200)])  # (200, 6)
    assert (draws[:, 3:] == 4).all()  # the last ⌊6/2⌋ rows keep every scale
    assert set(draws[:, :3].unique().tolist()) == {1, 2, 3, 4}  # the first three draw n in [1, 4]
    assert (q.eval().sample_n_scales(6, "cpu") == 4).all()  # never in eval


@pytest.mark.parametrize("indices, got", [(torch.zeros(3, 2, 1, 1, dtype=torch.long), "Tensor of length 3"),
                                          (5, "int of length ?"), ([], "list of length 0")])
def test_index_check_names_what_it_got(indices, got):
    with pytest.raises(ValueError) as err:
        make_pq(scales=(1, 2), V=8).check_indices(indices)
    assert str(err.value) == f"indices: expected a list of 1..2 tensors (one per scale), got {got}"


# ---------------------------------------------------------------- the multi-scale quantizer's own contract


def make_msrq(scales=(1, 2), V=4, C=2, **kw) -> MultiScaleResidualQuantizer:
    """One branch, codebook as set (no data init), φ the identity (one conv, identity init)."""
    return MultiScaleResidualQuantizer(QuantizerConfig(scales=list(scales), codebook_size=V, code_dim=C, phi_convs=1,
                                                       codebook_init="uniform", **kw))


def reference_loss(f, codes, n_scales, beta, commitment) -> float:
    """The VQ loss of scales (1, 2) on a 2×2 map, identity φ, L2 lookup, sample by sample: scale 1 quantizes the
    map's mean and broadcasts the code (a 1×1 map upsampled), scale 2 each site's residual. A scale's term is
    the mean of ‖f̂_≤i − f‖² over the samples that kept it (none: 0); the codebook term averages the S = 2
    scales, the commitment term sums (`"sum"`) or averages (`"mean"`) them, times β."""
    per_scale: list[list[float]] = [[], []]
    for b in range(f.shape[0]):
        fb = f[b].double()  # (C, 2, 2)
        c1 = codes[int(((codes - fb.mean(dim=(1, 2))) ** 2).sum(1).argmin())]  # (C,)
        f_hat = c1.view(-1, 1, 1).expand_as(fb)
        terms = [float(((f_hat - fb) ** 2).mean())]
        rest = fb - f_hat
        for i in range(2):
            for j in range(2):
                f_hat = f_hat.clone()
                f_hat[:, i, j] += codes[int(((codes - rest[:, i, j]) ** 2).sum(1).argmin())]
        terms.append(float(((f_hat - fb) ** 2).mean()))
        for si in range(int(n_scales[b])):
            per_scale[si].append(terms[si])
    means = [sum(t) / len(t) if t else 0.0 for t in per_scale]
    return sum(means) / 2 + beta * (sum(means) if commitment == "sum" else sum(means) / 2)


@pytest.mark.parametrize("commitment", ["sum", "mean"])
@pytest.mark.parametrize("n_scales", [[2, 2, 2], [2, 1, 2], [2, 1, 1], [1, 1, 1]])
def test_msrq_loss_matches_a_sample_by_sample_reference(commitment, n_scales):
    """The loss is codebook/S + β·commitment (summed or averaged over scales), each scale's term a mean over the
    samples that kept it: a dropped sample counts neither in the sum nor in the count (one kept: divided by 1)."""
    torch.manual_seed(0)
    q = make_msrq(lookup="l2", beta=0.3, commitment=commitment).train()
    codes = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        q.codebook.weight.copy_(codes)
    f = torch.randn(3, 2, 2, 2)
    out = q(f, torch.tensor(n_scales))
    assert out.loss.item() == pytest.approx(reference_loss(f, codes, n_scales, 0.3, commitment), rel=1e-5)


def test_msrq_loss_hand_worked():
    """One sample, one channel, codes 0, 1, 0.25; map [[1, 1.2], [0.8, 1.4]] (mean 1.1 → code 1). Scale 1 errors
    0, .04, .04, .16 (mean .06); the residuals 0, .2, -.2, .4 pick 0, .25, 0, .25, leaving errors 0, .0025, .04,
    .0225 (mean .01625). β = 0.25: summed 0.07625/2 + 0.25 · 0.07625, averaged (1.25/2) · 0.07625."""
    for commitment, expected in (("sum", 0.07625 / 2 + 0.25 * 0.07625), ("mean", 1.25 / 2 * 0.07625)):
        q = make_msrq(V=3, C=1, lookup="l2", beta=0.25, commitment=commitment).eval()
        with torch.no_grad():
            q.codebook.weight.copy_(torch.tensor([[0.0], [1.0], [0.25]]))
        out = q(torch.tensor([[1.0, 1.2], [0.8, 1.4]]).view(1, 1, 2, 2))
        assert [i.flatten().tolist() for i in out.indices] == [[1], [0, 2, 0, 2]]
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_msrq_forward_keeps_every_scale_by_default_and_checks_the_map_size():
    """Without n_scales every sample keeps all S scales: (B,) long, f̂ as with n_scales = S given; f̂ comes back
    in the input's dtype; a map that is not K×K is refused with the sizes named."""
    torch.manual_seed(0)
    q = make_msrq(scales=(1, 2, 3)).eval()
    f = torch.randn(2, 2, 3, 3)
    out = q(f)
    assert out.n_scales.dtype == torch.long and out.n_scales.tolist() == [3, 3]
    assert torch.equal(out.f_hat, q(f, torch.full((2,), 3)).f_hat)
    assert q(f.to(torch.bfloat16)).f_hat.dtype == torch.bfloat16
    with pytest.raises(ValueError) as err:
        q(torch.zeros(1, 2, 2, 2))
    assert str(err.value) == "MSRQ expects a 3×3 map (last scale), got 2×2"


def test_quantizers_keep_their_tensors_on_the_input_device(monkeypatch):
    """On the meta device (whose autocast torch lacks: stubbed), the default n_scales, the dropout draws and the
    cached resize matrices all live on the input's device, as they must on a GPU."""
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())
    msrq = make_msrq(scales=(1, 2, 3)).to("meta").eval()
    out = msrq(torch.zeros(2, 2, 3, 3, device="meta"))
    assert out.n_scales.device.type == "meta" and out.f_hat.device.type == "meta"
    assert msrq._resize_cache and all(m.device.type == "meta" for m in msrq._resize_cache.values())
    for pick in ("first", "bernoulli"):
        pq = make_pq(scales=(1, 2), C=2, V=4, dropout_p=0.5, dropout_n_start=1, dropout_pick=pick,
                     codebook_init="uniform").to("meta")
        for training in (False, True):
            n = pq.train(training).sample_n_scales(4, "meta")
            assert n.device.type == "meta" and n.dtype == torch.long and n.shape == (4,)
        assert pq.eval()(torch.zeros(3, 2, 2, 2, 2, device="meta")).n_scales.device.type == "meta"


def test_float64_quantizer_upsamples_code_maps_in_float64():
    """The resize matrix is built in float64: a float64 quantizer's code map, upsampled 3 → 5 (weights that are
    not dyadic), equals F.interpolate's bicubic in float64 to 1e-12, not just to float32 precision."""
    torch.manual_seed(0)
    q = make_msrq(scales=(3, 5)).double()
    idx = torch.randint(0, 4, (2, 3, 3))
    expected = F.interpolate(q.codebook.weight.detach()[idx].permute(0, 3, 1, 2), size=(5, 5), mode="bicubic")
    assert (q.code_to_full(0, idx).detach() - expected).abs().max() < 1e-12


def test_the_last_scale_uses_the_residual_as_it_is():
    """At s = K the residual is not resampled at all (an identity resize would still turn one NaN into a whole
    channel of NaNs): `_downsample` hands back its input."""
    q = make_msrq(scales=(1, 3))
    r = torch.randn(2, 2, 3, 3)
    assert q._downsample(r, 3) is r


def test_a_loaded_uninitialised_codebook_is_initialised_again():
    """`initialised` is read afresh after load_state_dict: a quantizer that has seen its first batch and then
    loads a fresh data-init state re-runs the data-dependent init on its next training batch."""
    torch.manual_seed(0)
    cfg = QuantizerConfig(scales=[1, 2], codebook_size=4, code_dim=2, phi_convs=1, codebook_init="data")
    q = MultiScaleResidualQuantizer(cfg).train()
    f = torch.randn(2, 2, 2, 2)
    q(f)
    q.load_state_dict(MultiScaleResidualQuantizer(cfg).state_dict())
    assert not bool(q.initialised)
    q(f)
    assert bool(q.initialised)


def test_phi_index_last_tick_is_exactly_one_minus_a():
    """The last tick is 1 - a itself, not a + (n-1)·step: with n = 58 they differ in float64, and S = 59 puts a
    scale exactly between the last two ticks, where only 1 - a gives the official (numpy linspace) choice."""
    msrq = MultiScaleResidualQuantizer(QuantizerConfig(scales=list(range(1, 60)), phi_convs=58, code_dim=1,
                                                       codebook_size=2))
    assert [msrq.phi_index(si) for si in range(59)] == official_phi_indices(59, 58)


def test_dropout_off_draws_no_random_numbers():
    """p = 0 in training keeps every scale and leaves the global generator untouched (a run without quantizer
    dropout draws the same random numbers elsewhere whatever dropout_pick says)."""
    for pick in ("first", "bernoulli"):
        q = make_pq(scales=(1, 2, 3), dropout_p=0.0, dropout_pick=pick).train()
        torch.manual_seed(0)
        before = torch.get_rng_state()
        assert q.sample_n_scales(5, "cpu").tolist() == [3] * 5
        assert torch.equal(torch.get_rng_state(), before)


def test_bernoulli_dropout_drops_a_sample_iff_its_draw_is_below_p():
    """`"bernoulli"`: sample b is truncated iff its uniform draw u_b < p (then to its draw n_b ∈ [N_start, S]);
    at the boundary u_b = p it keeps every scale. Reference: the same draws (u, then n) from the same seed."""
    q = make_pq(scales=(1, 2, 3, 4), dropout_p=0.5, dropout_n_start=1, dropout_pick="bernoulli").train()
    torch.manual_seed(0)
    u, n = torch.rand(8), torch.randint(1, 5, (8,))
    k = int(torch.nonzero(n < 4)[0])  # a sample whose draw would truncate it
    for p in (float(u[k]), 0.5):  # p = u_k exactly: kept
        q.cfg.dropout_p = p
        torch.manual_seed(0)
        got = q.sample_n_scales(8, "cpu")
        assert got.tolist() == torch.where(u < p, n, torch.full((8,), 4)).tolist()
    q.cfg.dropout_p = float(u[k])
    torch.manual_seed(0)
    assert int(q.sample_n_scales(8, "cpu")[k]) == 4


def test_product_quantizer_refuses_a_wrong_branch_count_or_width():
    """Either a wrong P or a wrong C (the other right) is refused, the message naming both shapes."""
    q = make_pq(scales=(1, 2), P=2, C=8)
    for shape in ((1, 3, 8, 2, 2), (1, 2, 4, 2, 2)):
        with pytest.raises(ValueError) as err:
            q(torch.zeros(shape))
        assert str(err.value) == f"ProductQuantizer expects (B, 2, 8, K, K), got {shape}"


def test_next_input_is_the_area_downsampled_f_hat_hand_worked():
    """With all-zero codes next_input adds nothing, and the next scale's input is f̂ area-downsampled: a 4×4 map
    0..15 gives the 2×2 block means 2.5, 4.5, 10.5, 12.5, one token per site, branch p in channel p (C = 1)."""
    q = make_pq(scales=(1, 2, 4), P=2, V=4, C=1).eval()
    with torch.no_grad():
        for b in q.msrq:
            b.codebook.weight.zero_()
    f_hat = torch.arange(32.0).view(1, 2, 1, 4, 4)  # branch 1 is branch 0 + 16
    new, nxt = q.next_input(f_hat, 0, torch.zeros(1, 2, 1, 1, dtype=torch.long))
    assert torch.equal(new, f_hat)
    assert nxt.tolist() == [[[2.5, 18.5], [4.5, 20.5], [10.5, 26.5], [12.5, 28.5]]]


def test_teacher_forcing_inputs_are_float32_even_with_one_scale():
    """The generator's inputs are float32 for long or int indices, including the empty (B, 0, P*C) of S = 1."""
    q = make_pq(scales=(2,), P=2, V=4, C=3)
    for dtype in (torch.long, torch.int32):
        tf = q.teacher_forcing_inputs([torch.zeros(2, 2, 2, 2, dtype=dtype)])
        assert tf.shape == (2, 0, 6) and tf.dtype == torch.float32


def test_codebook_defaults_cosine_lookup_and_beta_one_quarter():
    """Codebook(size, dim) looks up by cosine: (1, 1.2) points closer to code (0, 3) than to (1, 0), though (1, 0)
    is L2-nearer; β defaults to 0.25: the hand-worked VQ above (codes (1, 0), (0, 2)) costs 1.25 · 0.0775."""
    cb = Codebook(2, 2)
    with torch.no_grad():
        cb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    assert cb.nearest(torch.tensor([[1.0, 1.2]])).tolist() == [1]
    with torch.no_grad():
        cb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    out = cb(torch.tensor([[0.9, 0.2], [0.1, 1.5]]).view(1, 2, 1, 2))
    assert out.indices[0].tolist() == [[[0, 1]]] and out.loss.item() == pytest.approx(1.25 * 0.0775)


@pytest.mark.parametrize("lookup, picked", [("cosine", 1), ("l2", 0)])
def test_msrq_codebook_takes_the_configs_lookup_and_beta(lookup, picked):
    """The MSRQ's codebook is built from the config: its lookup ((1, 1.2): cosine picks (0, 3), L2 picks (1, 0))
    and its β (0.5: the hand-worked single-scale VQ costs 1.5 · 0.0775)."""
    q = make_msrq(scales=(1,), V=2, lookup=lookup, beta=0.5).eval()
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    assert q(torch.tensor([1.0, 1.2]).view(1, 2, 1, 1)).indices[0].flatten().tolist() == [picked]
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert q.codebook(torch.tensor([[0.9, 0.2], [0.1, 1.5]]).view(1, 2, 1, 2)).loss.item() == pytest.approx(
        1.5 * 0.0775)


def test_msrq_phi_convs_start_as_the_config_says():
    """phi_init="identity": every φ conv is the Dirac kernel (centre tap 1 on its own channel) with zero bias;
    "default": PyTorch's random init, not the identity."""
    dirac = torch.zeros(2, 2, 3, 3)
    dirac[0, 0, 1, 1] = dirac[1, 1, 1, 1] = 1.0
    torch.manual_seed(0)
    for init in ("identity", "default"):
        q = MultiScaleResidualQuantizer(QuantizerConfig(scales=[1, 2], code_dim=2, codebook_size=4, phi_convs=2,
                                                        phi_init=init))
        for phi in q.phis:
            is_identity = torch.equal(phi.conv.weight, dirac) and not phi.conv.bias.any()
            assert is_identity == (init == "identity"), init
