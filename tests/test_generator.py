"""Tests of the AR generator (with the real ProductQuantizer of the smoke profile): masks, KV cache,
sampling filters, CFG, teacher forcing, training, the token cache, errors, the paper-size model."""
from __future__ import annotations

import copy
import math
import time

import pytest
import torch
from safetensors.torch import save_file

from imagefolder import config, sampler
from imagefolder.checkpoint import state_dict_hash
from imagefolder.config import ConfigError, GeneratorConfig, QuantizerConfig
from imagefolder.data import TokenCacheMismatch, TokenDataset
from imagefolder.generator import Generator, GeneratorObjective, SelfAttention, parameter_counts
from imagefolder.layouts import flatten_indices, unflatten_indices
from imagefolder.quantize import ProductQuantizer
from imagefolder.sampler import sample_tokens

N_CLASSES = 3


def tiny(layout="folded", overrides=None, randomize=True, seed=0):
    """A tiny generator (smoke profile: 10 scales up to 4×4, 2 branches, V = 64, C = 32; depth 2,
    width 32) and the real quantizer of the same config (None for raster, which runs on a 4×4
    single-branch tokenizer). `randomize` replaces the adaLN-Zero init by random weights so that
    every path (blocks, gates, head) changes the logits."""
    o = {"generator.layout": layout, "generator.depth": 2, "generator.width": 32, "generator.heads": 2}
    if layout == "raster":
        o |= {"quantizer.scales": [4], "quantizer.branches": 1, "quantizer.dropout_n_start": 1}
    cfg = config.profile("smoke", o | (overrides or {}))
    torch.manual_seed(seed)
    model = Generator(cfg.generator, cfg.quantizer, N_CLASSES)
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.3)
    q = None if layout == "raster" else ProductQuantizer(cfg.quantizer).eval()
    return model.eval(), q


def random_indices(model, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(model.codebook_size, (B, model.branches, s, s), generator=g) for s in model.scales]


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


class RecomputedSteps:
    """The no-cache reference for `sampler.CachedSteps`: each step runs the whole prefix so far through the
    blocks under the block-causal mask, and the head on the step's new positions."""

    def __init__(self, model, cond_BW, caches):
        self.model, self.cond_BW, self.seen_BLW = model, cond_BW, cond_BW[:, None][:, :0]  # (B, 0, W)

    def __call__(self, x_BlW, start, end):
        m = self.model
        self.seen_BLW = x_BLW = torch.cat([self.seen_BLW, x_BlW], dim=1)
        for block in m.blocks:
            x_BLW = block(x_BLW, block.modulation(self.cond_BW), m.mask_LL[:end, :end])
        return m.head_logits(x_BLW[:, start:], m.head_modulation(self.cond_BW))


def sample_without_cache(monkeypatch, model, *args, **kwargs):
    """`model.sample(*args, **kwargs)` with every step recomputed from the whole prefix (`RecomputedSteps`)."""
    built = []
    with monkeypatch.context() as m:
        m.setattr(sampler, "CachedSteps", lambda *a: built.append(RecomputedSteps(*a)) or built[-1])
        out = model.sample(*args, **kwargs)
    assert built, "the sampler did not run the reference steps"
    return out


# ----------------------------------------------------------------------------- layout and masks

def test_flatten_roundtrip_and_layout_lengths():
    for layout, L in (("folded", 39), ("unfolded", 78), ("raster", 16)):
        model, _ = tiny(layout)
        assert model.length == L
        idx = random_indices(model, 3)
        assert all(torch.equal(a, b) for a, b in zip(unflatten_indices(flatten_indices(idx), model.scales,
                                                                        model.branches), idx))
    assert len(tiny("folded")[0].steps) == 10 and len(tiny("raster")[0].steps) == 16
    # the VAR-style single-branch baseline is the folded layout with P = 1 and VAR's scales: 680 positions
    with torch.device("meta"):
        var = Generator(GeneratorConfig(depth=1, width=32, heads=2),
                        QuantizerConfig(scales=config.VAR_SCALES, branches=1), N_CLASSES)
    assert var.length == 680 and len(var.steps) == 10 and var.tokens_per_position == 1


@pytest.mark.parametrize("layout", ["folded", "unfolded", "raster"])
def test_block_causal_mask_finer_inputs_never_change_coarser_logits(layout):
    model, q = tiny(layout)
    idx = random_indices(model, 2)
    labels = torch.tensor([0, 2])
    inputs = model.inputs(idx, q)
    base = model(labels, inputs)
    n_first = model.steps[0][1]
    for k in range(1, len(model.steps)):
        start, end = model.steps[k]
        pert = inputs.clone()
        if layout == "raster":
            pert[:, start - n_first:] = (pert[:, start - n_first:] + 1) % model.codebook_size
        else:  # inputs are per site: scale k's sites in the (B, Σ s², P·C) tensor
            site0 = sum(s * s for s in model.scales[1:k])
            pert[:, site0:] += torch.randn_like(pert[:, site0:])
        out = model(labels, pert)
        assert torch.equal(out[:, :start], base[:, :start]), f"block {k} leaked into earlier blocks"
        assert not torch.allclose(out[:, start:end], base[:, start:end]), "the perturbation had no effect"


# ----------------------------------------------------------------------------- attention

def l2_norm_attention_by_hand(attn, x_BLW, mask_LL):
    """VAR's attention written out head by head from `attn`'s parameters: q = x W_q + b_q, k = x W_k (no bias),
    v = x W_v + b_v; logits = exp(min(s_h, ln 100)) · (q/|q|)·(k/|k|), masked, softmax, times v; then proj."""
    B, L, W = x_BLW.shape
    H = attn.heads
    d = W // H
    Wq, Wk, Wv = attn.qkv.weight.split(W)
    q, k, v = x_BLW @ Wq.T + attn.q_bias, x_BLW @ Wk.T, x_BLW @ Wv.T + attn.v_bias
    heads = []
    for h in range(H):
        sl = slice(h * d, (h + 1) * d)
        qh = q[..., sl] / q[..., sl].norm(dim=-1, keepdim=True)
        kh = k[..., sl] / k[..., sl].norm(dim=-1, keepdim=True)
        gain = math.exp(min(float(attn.scale_mul[h]), math.log(100)))
        logits = gain * qh @ kh.transpose(1, 2)  # (B, L, L)
        logits = logits.masked_fill(~mask_LL, float("-inf"))
        heads.append(logits.softmax(-1) @ v[..., sl])
    return attn.proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("fused", [True, False])
def test_l2_norm_attention_equals_a_by_hand_version(fused):
    """Both attention paths (fused kernel, matmul) against the hand version, one head's log-scale past
    ln 100 (clamped there), with a block-causal mask; k has no bias, q and v do."""
    torch.manual_seed(0)
    attn = SelfAttention(12, 3, 0.0, "l2_norm").eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.5)
        attn.scale_mul[1] = math.log(1000.0)
    assert attn.qkv.bias is None
    assert dict(attn.named_parameters()).keys() == {"q_bias", "v_bias", "scale_mul", "qkv.weight", "proj.weight",
                                                    "proj.bias"}
    x = torch.randn(2, 5, 12)
    mask = torch.tensor([0, 0, 1, 1, 2])[:, None] >= torch.tensor([0, 0, 1, 1, 2])[None]  # (L, L) block-causal
    attn.fused_attn = fused
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), l2_norm_attention_by_hand(attn, x, mask), atol=1e-5, rtol=1e-5)


def test_scaled_dot_attention_keeps_the_full_qkv_bias_and_the_sqrt_d_scale():
    torch.manual_seed(0)
    attn = SelfAttention(12, 3, 0.0, "scaled_dot").eval()
    assert dict(attn.named_parameters()).keys() == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    x = torch.randn(2, 5, 12)
    q, k, v = (x @ w.T + b for w, b in zip(attn.qkv.weight.split(12), attn.qkv.bias.split(12)))
    heads = [((q[..., h * 4:(h + 1) * 4] @ k[..., h * 4:(h + 1) * 4].transpose(1, 2)) / 2).softmax(-1)
             @ v[..., h * 4:(h + 1) * 4] for h in range(3)]  # 1/√d = 1/2
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(torch.cat(heads, -1)), atol=1e-5, rtol=1e-5)


def test_l2_norm_attention_is_the_default_and_starts_its_scales_at_ln_4():
    model, _ = tiny("folded", randomize=False)
    assert model.cfg.attention == "l2_norm"
    for block in model.blocks:
        torch.testing.assert_close(block.attn.scale_mul.flatten(), torch.full((2,), math.log(4.0)))
        assert not block.attn.q_bias.any() and not block.attn.v_bias.any()


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("layout, attention", [("folded", "l2_norm"), ("unfolded", "l2_norm"),
                                               ("raster", "l2_norm"), ("folded", "scaled_dot")])
def test_kv_cache_matches_recomputation(layout, attention, monkeypatch):
    model, q = tiny(layout, {"generator.attention": attention})
    labels = torch.tensor([0, 1, 2])
    kw = dict(cfg_scale=1.5, top_k=8, top_p=0.9, return_logits=True)
    idx_c, log_c = model.sample(labels, q, generator=rng(3), **kw)
    idx_n, log_n = sample_without_cache(monkeypatch, model, labels, q, generator=rng(3), **kw)
    for a, b in zip(log_c, log_n):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(idx_c, idx_n))
    model.layout.check_indices(idx_c)


@pytest.mark.parametrize("layout", ["folded", "raster"])  # l2_norm attention (the default)
def test_compiled_sampler_matches_the_eager_cache_and_keeps_its_buffers(layout):
    """The compiled sampler over a StaticKVCache (whole-buffer attention, masked) draws what the eager KV
    cache draws from the same seed, its logits equal to float rounding; a second call of the same batch
    finds the same cache buffers and compiles nothing new (one graph per query length)."""
    from torch._dynamo.utils import counters

    model, q = tiny(layout)
    labels = torch.tensor([0, 1, 2])
    kw = dict(cfg_scale=1.5, top_k=8, top_p=0.9, return_logits=True)
    idx_e, log_e = model.sample(labels, q, generator=rng(3), **kw)
    graphs = counters["stats"]["unique_graphs"]
    idx_c, log_c = model.sample(labels, q, generator=rng(3), compiled=True, **kw)
    lengths = {end - start for start, end in model.steps}  # raster: every step one token
    assert counters["stats"]["unique_graphs"] - graphs == len(lengths), "one graph per query length"
    for a, b in zip(log_e, log_c):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(idx_e, idx_c))
    (_, caches), = model.static_kv.values()  # batch 2·3 (guidance), float32
    assert caches[0].k_BHLd.shape == (6, 2, model.length, 16)
    graphs = counters["stats"]["unique_graphs"]
    again = model.sample(labels, q, generator=rng(3), compiled=True, cfg_scale=1.5, top_k=8, top_p=0.9)
    assert all(torch.equal(a, b) for a, b in zip(idx_c, again))
    assert counters["stats"]["unique_graphs"] == graphs, "the second call recompiled"
    assert model.static_kv[(6, torch.float32, torch.device("cpu"))][1][0] is caches[0]


def test_top_k_1_is_greedy_per_branch():
    model, q = tiny("folded")
    idx, step_logits = model.sample(torch.tensor([0, 1]), q, cfg_scale=1.0, top_k=1, top_p=1.0,
                                    generator=rng(0), return_logits=True)
    for k, logits in enumerate(step_logits):
        s = model.scales[k]
        greedy = logits.argmax(-1).transpose(1, 2).reshape(2, model.branches, s, s)  # (B, P, s, s)
        assert torch.equal(idx[k], greedy)
    # different seeds give the same greedy result
    assert all(torch.equal(a, b) for a, b in zip(idx, model.sample(torch.tensor([0, 1]), q, cfg_scale=1.0,
                                                                   top_k=1, top_p=1.0, generator=rng(9))))


def _two_branch_logits(n):
    """(n, 2, 4) logits: branch 0 has probs [.5, .3, .15, .05], branch 1 the same order reversed."""
    p0 = torch.tensor([0.5, 0.3, 0.15, 0.05])
    return torch.stack([p0.log(), p0.flip(0).log()])[None].expand(n, 2, 4)


def test_top_p_keeps_smallest_set_reaching_p_per_branch():
    n = 4000
    for top_p, keep in ((0.75, 2), (0.85, 3), (0.4, 1), (1.0, 4)):
        tok = sample_tokens(_two_branch_logits(n), top_k=None, top_p=top_p, generator=rng(int(top_p * 100)))
        assert set(tok[:, 0].tolist()) == set(range(keep)), top_p
        assert set(tok[:, 1].tolist()) == set(range(3, 3 - keep, -1)), top_p
    # the kept set is renormalised: with p = .75, token 0 has probability .5 / .8
    tok = sample_tokens(_two_branch_logits(n), top_p=0.75, generator=rng(5))
    assert abs((tok[:, 0] == 0).float().mean().item() - 0.625) < 0.03


def test_sample_tokens_draws_each_token_with_its_probability():
    from scipy.stats import chisquare
    n = 20_000
    tok = sample_tokens(_two_branch_logits(n), top_k=None, generator=rng(3))
    for branch, probs in ((0, [0.5, 0.3, 0.15, 0.05]), (1, [0.05, 0.15, 0.3, 0.5])):
        counts = torch.bincount(tok[:, branch], minlength=4)
        assert chisquare(counts.tolist(), [p * n for p in probs]).pvalue > 1e-3, (branch, counts)


def test_top_k_keeps_k_largest_per_branch_then_top_p():
    n = 4000
    tok = sample_tokens(_two_branch_logits(n), top_k=3, generator=rng(2))
    assert set(tok[:, 0].tolist()) == {0, 1, 2} and set(tok[:, 1].tolist()) == {3, 2, 1}
    # top-p over the renormalised top-2: [.5, .3]/.8 = [.625, .375]; p = .6 keeps only the first
    tok = sample_tokens(_two_branch_logits(n), top_k=2, top_p=0.6, generator=rng(2))
    assert set(tok[:, 0].tolist()) == {0} and set(tok[:, 1].tolist()) == {3}


def test_cfg_no_guidance_setting_equals_unguided_and_guidance_acts():
    model, q = tiny("folded")
    labels = torch.tensor([0, 1, 2, 0])
    plain, plain_logits = model.sample(labels, q, cfg_scale=0.0, generator=rng(4), return_logits=True)
    guided, guided_logits = model.sample(labels, q, cfg_scale=4.0, generator=rng(4), return_logits=True)
    # the ramp starts at t = 0: the first scale is unguided, same logits (2B batch vs B) and tokens
    torch.testing.assert_close(guided_logits[0], plain_logits[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(guided[0], plain[0])
    # guidance changes the later logits
    assert not torch.allclose(guided_logits[-1], plain_logits[-1], atol=1e-3)


def test_cfg_with_identical_null_class_is_unguided():
    """If the null class embeds like the real class, cond = uncond and any cfg_scale gives the unguided
    logits: the doubled batch keeps each sample's rows (inputs, f̂) aligned."""
    model, q = tiny("folded")
    with torch.no_grad():
        model.class_emb.weight[model.null_class] = model.class_emb.weight[1]
    labels = torch.tensor([1, 1])
    _, plain = model.sample(labels, q, cfg_scale=0.0, top_k=1, generator=rng(0), return_logits=True)
    _, guided = model.sample(labels, q, cfg_scale=3.0, top_k=1, generator=rng(0), return_logits=True)
    for a, b in zip(plain, guided):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["folded", "unfolded"])
def test_teacher_forcing_reproduces_forced_branch(layout):
    model, q = tiny(layout)
    labels = torch.tensor([0, 2])
    ref = random_indices(model, 2, seed=7)
    for forced, free in ((0, 1), (1, 0)):
        out = model.sample(labels, q, reference=ref, force_branches=[forced], cfg_scale=1.0, generator=rng(1))
        assert all(torch.equal(o[:, forced], r[:, forced]) for o, r in zip(out, ref))
        assert not all(torch.equal(o[:, free], r[:, free]) for o, r in zip(out, ref))
    # forcing changes what the free branch sees: same seed, different free-branch tokens than unforced
    unforced = model.sample(labels, q, cfg_scale=1.0, generator=rng(1))
    forced = model.sample(labels, q, reference=ref, force_branches=[0], cfg_scale=1.0, generator=rng(1))
    assert not all(torch.equal(a[:, 1], b[:, 1]) for a, b in zip(unforced[1:], forced[1:]))


def test_n_scales_prefix_and_seed_reproducibility():
    model, q = tiny("folded")
    labels = torch.tensor([0, 1])
    full = model.sample(labels, q, generator=rng(11))
    again = model.sample(labels, q, generator=rng(11))
    prefix = model.sample(labels, q, generator=rng(11), n_scales=2)
    assert all(torch.equal(a, b) for a, b in zip(full, again))
    assert len(prefix) == 2 and all(torch.equal(a, b) for a, b in zip(prefix, full[:2]))
    other = model.sample(labels, q, generator=rng(12))
    assert not all(torch.equal(a, b) for a, b in zip(full, other))


# ----------------------------------------------------------------------------- training

def test_class_dropout_rate():
    model, q = tiny("folded", {"generator.class_dropout": 0.25})
    seen = []
    model.class_emb.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    labels = torch.randint(N_CLASSES, (4000,), generator=rng(0))
    inputs = model.inputs(random_indices(model, 1), q).expand(4000, -1, -1)
    model.train()
    with torch.no_grad():
        model(labels, inputs)
    used = seen[-1]
    dropped = used == model.null_class
    assert abs(dropped.float().mean().item() - 0.25) < 0.03  # 4.4 σ
    assert torch.equal(used[~dropped], labels[~dropped])
    model.eval()
    with torch.no_grad():
        model(labels[:50], inputs[:50])
    assert torch.equal(seen[-1], labels[:50])


def _structured_dataset(model, n=32):
    """Tokens that depend on the class and the site, with some noise: learnable in a few steps."""
    g = rng(0)
    labels = torch.randint(N_CLASSES, (n,), generator=g)
    idx = []
    for s in model.scales:
        site = torch.arange(model.branches * s * s).view(1, model.branches, s, s)
        clean = (site * 3 + labels.view(-1, 1, 1, 1) * 5) % model.codebook_size
        noise = torch.randint(model.codebook_size, clean.shape, generator=g)
        idx.append(torch.where(torch.rand(clean.shape, generator=g) < 0.8, clean, noise))
    return TokenDataset(flatten_indices(idx), labels, model.scales, model.branches, model.codebook_size, "fp")


@pytest.mark.parametrize("layout", ["folded", "unfolded", "raster"])
def test_training_lowers_loss(layout):
    model, q = tiny(layout, randomize=False)
    ds = _structured_dataset(model, n=16)
    obj = GeneratorObjective(model, q).train()
    opt = torch.optim.AdamW(obj.parameters_for("model"), lr=3e-3, betas=(0.9, 0.95))
    batch = (ds.tokens_NT, ds.labels_N)
    losses = []
    for step in range(30):
        loss, logs = obj(batch, "model", step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert 0 <= logs["acc"] <= 1
    assert abs(losses[0] - torch.log(torch.tensor(64.0)).item()) < 1e-3  # adaLN-Zero: uniform at init
    assert losses[-1] < 0.75 * losses[0], losses
    assert obj.ema_target is model
    assert {id(p) for p in obj.parameters_for("model")} == {id(p) for p in model.parameters()}
    assert q is None or not q.training  # the frozen quantizer stays in eval mode under obj.train()
    model.eval()
    model.layout.check_indices(model.sample(torch.tensor([0, 1]), q, generator=rng(0)))


def test_token_dataset_cache_roundtrip_and_fingerprint(tmp_path):
    model, q = tiny("folded")
    fp = state_dict_hash(q)
    assert fp == state_dict_hash(copy.deepcopy(q))
    other = tiny("folded", seed=1)[1]  # same layout, other weights
    assert state_dict_hash(other) != fp
    images = torch.zeros(5, 3, 8, 8)
    ds = TokenDataset.encode(lambda x: random_indices(model, x.shape[0]), [(images, torch.arange(5) % 3)] * 2,
                             codebook_size=64, fingerprint=fp)
    assert len(ds) == 10 and ds.scales == model.scales and ds.branches == 2
    tokens, label = ds[3]
    assert tokens.shape == (2 * 39,) and label.item() == 0
    path = tmp_path / "tokens.safetensors"
    ds.save(path)
    back = TokenDataset.load(path, fingerprint=fp)
    assert torch.equal(back.tokens_NT, ds.tokens_NT) and torch.equal(back.labels_N, ds.labels_N)
    back.check_compatible(model, fp)
    with pytest.raises(TokenCacheMismatch, match="delete the cache"):
        TokenDataset.load(path, fingerprint=state_dict_hash(other))
    with pytest.raises(TokenCacheMismatch, match="scales"):
        back.check_compatible(tiny("folded", {"quantizer.scales": [1, 2, 4]})[0])


def test_token_dataset_checks_tokens_and_labels_where_they_enter(tmp_path):
    model, _ = tiny("folded")
    tokens = flatten_indices(random_indices(model, 4))
    labels = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"flat tokens: expected shape \(B, 78\)"):
        TokenDataset(tokens[:, :77], labels, model.scales, 2, 64, "fp")
    with pytest.raises(ValueError, match=r"labels: expected shape \(4,\)"):
        TokenDataset(tokens, labels[:3], model.scales, 2, 64, "fp")
    for bad in (-1, 64):
        with pytest.raises(ValueError, match=r"tokens: values must be in \[0, 64\)"):
            TokenDataset(tokens.index_fill(1, torch.tensor([5]), bad), labels, model.scales, 2, 64, "fp")
    # a cache file is checked like a new data set when it is read back
    path = tmp_path / "tokens.safetensors"
    meta = {"scales": str(model.scales), "branches": "2", "codebook_size": "32", "fingerprint": "fp"}
    save_file({"tokens": tokens, "labels": labels}, str(path), metadata=meta)
    with pytest.raises(ValueError, match=r"tokens: values must be in \[0, 32\)"):
        TokenDataset.load(path)
    # labels are checked against the generator's classes once, where the cache meets the generator
    with pytest.raises(ValueError, match=r"unknown class index 3; the generator has 3 classes"):
        TokenDataset(tokens, torch.tensor([0, 1, 3, 0]), model.scales, 2, 64, "fp").check_compatible(model)


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_raise_clear_errors():
    model, q = tiny("folded")
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="unknown class index 3"):
        model.sample(torch.tensor([0, 3]), q)
    with pytest.raises(ValueError, match="unknown class index -1"):
        model.sample(torch.tensor([-1]), q)
    with pytest.raises(ValueError, match="top_k"):
        model.sample(labels, q, top_k=0)
    for bad_p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p"):
            model.sample(labels, q, top_p=bad_p)
    with pytest.raises(ValueError, match="codebook_size: model 64 vs quantizer 32"):
        model.sample(labels, tiny("folded", {"quantizer.codebook_size": 32})[1])
    with pytest.raises(ValueError, match="scales: model"):
        model.sample(labels, tiny("folded", {"quantizer.scales": [1, 2, 4]})[1])
    with pytest.raises(ValueError, match="needs the tokenizer's quantizer"):
        model.sample(labels, None)
    with pytest.raises(ValueError, match=r"lacks the attributes \['code_dim'\]"):
        broken = tiny("folded")[1]
        del broken.code_dim
        model.sample(labels, broken)
    # indices enter through `sample(reference=...)` and the token cache, not the training step
    idx = random_indices(model, 2)
    with pytest.raises(ValueError, match="expected 10 scales"):
        model.sample(labels, q, reference=idx[:9], force_branches=[0])
    with pytest.raises(ValueError, match=r"indices\[8\]: expected shape \(2, 2, 3, 3\)"):
        model.sample(labels, q, reference=idx[:8] + [idx[8][..., :2, :2]] + idx[9:], force_branches=[0])
    with pytest.raises(ValueError, match=r"values must be in \[0, 64\)"):
        model.sample(labels, q, reference=idx[:9] + [idx[9] + 64], force_branches=[0])
    with pytest.raises(ValueError, match="force_branches"):
        model.sample(labels, q, reference=idx, force_branches=[2])
    with pytest.raises(ValueError, match="reference batch 2 != number of labels 1"):
        model.sample(labels[:1], q, reference=idx, force_branches=[0])
    with pytest.raises(ValueError, match="multi-branch"):
        tiny("raster")[0].sample(labels, None, reference=[torch.zeros(2, 1, 4, 4, dtype=torch.long)],
                                 force_branches=[0])
    with pytest.raises(ValueError, match="flat tokens"):
        unflatten_indices(torch.zeros(2, 77, dtype=torch.long), model.scales, 2)
    with pytest.raises(ConfigError, match="raster"):
        Generator(GeneratorConfig(layout="raster", depth=1, width=32, heads=2), QuantizerConfig(), 3)


# ----------------------------------------------------------------------------- the paper model

def test_paper_profile_builds_forwards_and_samples_first_scale():
    cfg = config.profile("paper")
    g, qc = cfg.generator, cfg.quantizer
    assert (g.depth, g.width, qc.branches, qc.codebook_size) == (17, 1088, 2, 4096)
    with torch.device("meta"):
        counts = parameter_counts(Generator(g, qc, num_classes=1000))
    print(f"\npaper generator parameters: blocks {counts['blocks'] / 1e6:.1f}M, total {counts['total'] / 1e6:.1f}M")
    assert abs(counts["blocks"] / 1e6 - 362) < 2  # the paper's #Para
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = Generator(g, qc, num_classes=1000).eval()
    assert parameter_counts(model) == counts
    q = ProductQuantizer(qc).eval()
    idx = random_indices(model, 1)
    with torch.no_grad():
        logits = model(torch.tensor([7]), model.inputs(idx, q))
    assert logits.shape == (1, 286, 2, 4096) and torch.isfinite(logits).all()
    first = model.sample([7], q, generator=rng(0), n_scales=1)  # labels as a list
    assert len(first) == 1 and first[0].shape == (1, 2, 1, 1)
    print(f"paper build + forward + first-scale sample: {time.perf_counter() - t0:.1f}s")


def test_objective_runs_under_the_trainer(tmp_path):
    """The objective and TokenDataset fit the trainer's protocol (default collate, one phase, EMA)."""
    from imagefolder.train import train

    cfg = config.profile("smoke")
    torch.manual_seed(0)
    model = Generator(cfg.generator, cfg.quantizer, N_CLASSES)
    q = ProductQuantizer(cfg.quantizer)
    ds = _structured_dataset(model, n=16)
    cfg.train_generator.ema_decay = 0.9
    result = train(GeneratorObjective(model, q), ds, cfg.train_generator, tmp_path, seed=0, device="cpu")
    assert result.steps == cfg.train_generator.steps and result.model_path.exists()
    assert all("acc" in row and "loss_model" in row for row in result.history)


# ----------------------------------------------------------------------------- quantizer contract

def test_real_quantizer_satisfies_the_contract_check():
    cfg = config.profile("smoke")
    model = Generator(cfg.generator, cfg.quantizer, N_CLASSES)
    model.layout.check_quantizer(ProductQuantizer(cfg.quantizer))
    other = config.profile("smoke", {"quantizer.codebook_size": 32})
    with pytest.raises(ValueError, match="codebook_size: model 64 vs quantizer 32"):
        model.layout.check_quantizer(ProductQuantizer(other.quantizer))


@pytest.mark.parametrize("layout", ["folded", "unfolded"])
def test_sampling_logits_equal_teacher_forced_guided_logits(layout, monkeypatch):
    """The cached sampler (quantizer.next_input) and the training path (teacher_forcing_inputs) agree:
    at each scale the sampler's logits are cond + t_i (cond − uncond) of the teacher-forced forward on
    the sampled indices, with a forced branch too; recomputation without cache gives the same tokens."""
    model, q = tiny(layout)
    labels = torch.tensor([0, 2])
    ref = [torch.randint(model.codebook_size, (2, model.branches, s, s), generator=rng(5)) for s in model.scales]
    idx, step_logits = model.sample(labels, q, cfg_scale=1.5, generator=rng(2), return_logits=True,
                                    reference=ref, force_branches=[1])
    assert all(torch.equal(o[:, 1], r[:, 1]) for o, r in zip(idx, ref))
    with torch.no_grad():
        inputs = model.inputs(idx, q)
        cond = model(labels, inputs)
        uncond = model(torch.full_like(labels, model.null_class), inputs)
    S = len(model.scales)
    for k, (start, end) in enumerate(model.steps):
        want = cond[:, start:end] + 1.5 * k / (S - 1) * (cond[:, start:end] - uncond[:, start:end])
        torch.testing.assert_close(step_logits[k], want, atol=1e-4, rtol=1e-4)
    idx_n = sample_without_cache(monkeypatch, model, labels, q, cfg_scale=1.5, generator=rng(2), reference=ref,
                                 force_branches=[1])
    assert all(torch.equal(a, b) for a, b in zip(idx, idx_n))
    assert q.indices_to_fhat(idx).shape == (2, 2, 32, 4, 4)  # the sample decodes
