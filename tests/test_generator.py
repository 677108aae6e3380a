"""Tests of the AR generator: masks, KV cache, sampling filters, CFG, teacher forcing, training, errors."""
from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from imagefolder import config
from imagefolder.config import ConfigError, GeneratorConfig, QuantizerConfig
from imagefolder.generator import (Generator, GeneratorObjective, TokenCacheMismatch, TokenDataset,
                                   flatten_indices, module_fingerprint, parameter_counts, sample_tokens,
                                   unflatten_indices)
from imagefolder.quantize import ProductQuantizer


class StandInQuantizer(nn.Module):
    """The quantizer contract of CONTRACTS.md with random codebooks: scale i's codes are looked up,
    bicubic-upsampled to K×K and summed into f̂; the next input is f̂ area-downsampled."""

    def __init__(self, scales, branches, codebook_size, code_dim, seed=0):
        super().__init__()
        self.scales, self.branches, self.codebook_size, self.code_dim = list(scales), branches, codebook_size, code_dim
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("codebooks", torch.randn(branches, codebook_size, code_dim, generator=g))

    def next_input(self, f_hat, si, idx_BPss):
        B, P, s, _ = idx_BPss.shape
        K = self.scales[-1]
        codes = torch.stack([self.codebooks[p][idx_BPss[:, p]] for p in range(P)], 1)  # (B, P, s, s, C)
        codes = codes.permute(0, 1, 4, 2, 3).flatten(0, 1)  # (B·P, C, s, s)
        up = F.interpolate(codes, size=(K, K), mode="bicubic", align_corners=False)
        f_hat = f_hat + up.view(B, P, self.code_dim, K, K)
        if si == len(self.scales) - 1:
            return f_hat, None
        n = self.scales[si + 1]
        nxt = F.interpolate(f_hat.flatten(0, 1), size=(n, n), mode="area")  # (B·P, C, n, n)
        return f_hat, nxt.view(B, P, self.code_dim, n * n).permute(0, 3, 1, 2).reshape(B, n * n, P * self.code_dim)

    def teacher_forcing_inputs(self, indices):
        B, K = indices[0].shape[0], self.scales[-1]
        f_hat = self.codebooks.new_zeros(B, self.branches, self.code_dim, K, K)
        outs = []
        for si, idx in enumerate(indices[:-1]):
            f_hat, nxt = self.next_input(f_hat, si, idx)
            outs.append(nxt)
        return torch.cat(outs, 1)


def smoke_pair(mode="folded", seed=0):
    """A generator of the smoke profile (random weights, 9 classes) and its real quantizer."""
    cfg = config.profile("smoke", {"generator.mode": mode})
    torch.manual_seed(seed)
    model = Generator(cfg.generator, cfg.quantizer, N_CLASSES)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval(), ProductQuantizer(cfg.quantizer).eval()


SCALES = [1, 2, 3, 4]
N_CLASSES = 3


def tiny(mode="folded", scales=SCALES, branches=2, V=16, C=8, width=32, depth=2, heads=2, seed=0,
         randomize=True, **gkw):
    """A tiny generator and a matching quantizer; `randomize` replaces the adaLN-Zero init by random
    weights so that every path (blocks, gates, head) changes the logits."""
    if mode == "raster":
        scales, branches = [scales[-1]], 1
    qcfg = QuantizerConfig(scales=list(scales), branches=branches, codebook_size=V, code_dim=C)
    gcfg = GeneratorConfig(mode=mode, depth=depth, width=width, heads=heads, **gkw)
    torch.manual_seed(seed)
    model = Generator(gcfg, qcfg, N_CLASSES)
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.3)
    q = None if mode == "raster" else StandInQuantizer(scales, branches, V, C, seed=seed)
    return model.eval(), q


def random_indices(model, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(model.codebook_size, (B, model.branches, s, s), generator=g) for s in model.scales]


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- layout and masks

def test_flatten_roundtrip_and_layout_lengths():
    for mode, L in (("folded", 30), ("unfolded", 60), ("raster", 16)):
        model, _ = tiny(mode)
        assert model.length == L
        idx = random_indices(model, 3)
        assert all(torch.equal(a, b) for a, b in zip(unflatten_indices(flatten_indices(idx), model.scales,
                                                                        model.branches), idx))
    assert len(tiny("folded")[0].steps) == 4 and len(tiny("raster")[0].steps) == 16
    # the VAR-style single-branch baseline is folded mode with P = 1 and VAR's scales: 680 positions
    with torch.device("meta"):
        var = Generator(GeneratorConfig(depth=1, width=32, heads=2),
                        QuantizerConfig(scales=config.VAR_SCALES, branches=1), N_CLASSES)
    assert var.length == 680 and len(var.steps) == 10 and var.tokens_per_position == 1


@pytest.mark.parametrize("mode", ["folded", "unfolded", "raster"])
def test_block_causal_mask_finer_inputs_never_change_coarser_logits(mode):
    model, q = tiny(mode)
    idx = random_indices(model, 2)
    labels = torch.tensor([0, 2])
    inputs = model.inputs(idx, q)
    base = model(labels, inputs)
    n_first = model.steps[0][1]
    for k in range(1, len(model.steps)):
        start, end = model.steps[k]
        pert = inputs.clone()
        if mode == "raster":
            pert[:, start - n_first:] = (pert[:, start - n_first:] + 1) % model.codebook_size
        else:  # inputs are per site: scale k's sites in the (B, Σ s², P·C) tensor
            site0 = sum(s * s for s in model.scales[1:k])
            pert[:, site0:] += torch.randn_like(pert[:, site0:])
        out = model(labels, pert)
        assert torch.equal(out[:, :start], base[:, :start]), f"block {k} leaked into earlier blocks"
        assert not torch.allclose(out[:, start:end], base[:, start:end]), "the perturbation had no effect"


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("mode", ["folded", "unfolded", "raster"])
def test_kv_cache_matches_recomputation(mode):
    model, q = tiny(mode)
    labels = torch.tensor([0, 1, 2])
    kw = dict(cfg_scale=1.5, top_k=8, top_p=0.9, return_logits=True)
    idx_c, log_c = model.sample(labels, q, generator=rng(3), use_cache=True, **kw)
    idx_n, log_n = model.sample(labels, q, generator=rng(3), use_cache=False, **kw)
    for a, b in zip(log_c, log_n):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(idx_c, idx_n))
    model.check_indices(idx_c)


@pytest.mark.parametrize("mode", ["folded", "unfolded"])
def test_sampling_logits_equal_teacher_forced_guided_logits(mode):
    """The cached sampler and the training forward agree: at each scale, the sampler's logits are
    cond + t_i (cond − uncond) of the teacher-forced forward on the sampled indices."""
    model, q = tiny(mode)
    labels = torch.tensor([1, 2])
    cfg = 2.0
    idx, step_logits = model.sample(labels, q, cfg_scale=cfg, generator=rng(1), return_logits=True)
    with torch.no_grad():
        inputs = model.inputs(idx, q)
        cond = model(labels, inputs)
        uncond = model(torch.full_like(labels, model.null_class), inputs)
    S = len(model.scales)
    for k, (start, end) in enumerate(model.steps):
        t = cfg * k / (S - 1)
        want = cond[:, start:end] + t * (cond[:, start:end] - uncond[:, start:end])
        torch.testing.assert_close(step_logits[k], want, atol=1e-4, rtol=1e-4)


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
    logits: the 2B batch is split in the right order."""
    model, q = tiny("folded")
    with torch.no_grad():
        model.class_emb.weight[model.null_class] = model.class_emb.weight[1]
    labels = torch.tensor([1, 1])
    _, plain = model.sample(labels, q, cfg_scale=0.0, top_k=1, generator=rng(0), return_logits=True)
    _, guided = model.sample(labels, q, cfg_scale=3.0, top_k=1, generator=rng(0), return_logits=True)
    for a, b in zip(plain, guided):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["folded", "unfolded"])
def test_teacher_forcing_reproduces_forced_branch(mode):
    model, q = tiny(mode)
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
    model, q = tiny("folded", class_dropout=0.25)
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


@pytest.mark.parametrize("mode", ["folded", "unfolded", "raster"])
def test_training_lowers_loss(mode):
    model, q = tiny(mode, randomize=False)
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
    assert abs(losses[0] - torch.log(torch.tensor(16.0)).item()) < 1e-3  # adaLN-Zero: uniform at init
    assert losses[-1] < 0.75 * losses[0], losses
    assert obj.ema_target is model
    assert {id(p) for p in obj.parameters_for("model")} == {id(p) for p in model.parameters()}
    assert q is None or not q.training  # the frozen quantizer stays in eval mode under obj.train()
    model.eval()
    model.check_indices(model.sample(torch.tensor([0, 1]), q, generator=rng(0)))


def test_token_dataset_cache_roundtrip_and_fingerprint(tmp_path):
    model, q = tiny("folded")
    fp = module_fingerprint(q)
    assert fp == module_fingerprint(copy.deepcopy(q))
    other = StandInQuantizer(SCALES, 2, 16, 8, seed=1)
    assert module_fingerprint(other) != fp
    images = torch.zeros(5, 3, 8, 8)
    ds = TokenDataset.encode(lambda x: random_indices(model, x.shape[0]), [(images, torch.arange(5) % 3)] * 2,
                             codebook_size=16, fingerprint=fp)
    assert len(ds) == 10 and ds.scales == SCALES and ds.branches == 2
    tokens, label = ds[3]
    assert tokens.shape == (2 * 30,) and label.item() == 0
    path = tmp_path / "tokens.safetensors"
    ds.save(path)
    back = TokenDataset.load(path, fingerprint=fp)
    assert torch.equal(back.tokens_NT, ds.tokens_NT) and torch.equal(back.labels_N, ds.labels_N)
    back.check_compatible(model, fp)
    with pytest.raises(TokenCacheMismatch, match="delete the cache"):
        TokenDataset.load(path, fingerprint=module_fingerprint(other))
    with pytest.raises(TokenCacheMismatch, match="scales"):
        back.check_compatible(tiny("folded", scales=[1, 2, 4])[0])


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
    with pytest.raises(ValueError, match="codebook_size"):
        model.sample(labels, StandInQuantizer(SCALES, 2, 32, 8))
    with pytest.raises(ValueError, match="scales"):
        model.sample(labels, StandInQuantizer([1, 2, 4], 2, 16, 8))
    with pytest.raises(ValueError, match="needs the tokenizer's quantizer"):
        model.sample(labels, None)
    with pytest.raises(ValueError, match=r"lacks the attributes \['code_dim'\]"):
        broken = StandInQuantizer(SCALES, 2, 16, 8)
        del broken.code_dim
        model.sample(labels, broken)
    idx = random_indices(model, 2)
    with pytest.raises(ValueError, match="expected 4 scales"):
        model.inputs(idx[:3], q)
    with pytest.raises(ValueError, match=r"indices\[2\]: expected shape"):
        model.inputs(idx[:2] + [idx[2][..., :2, :2]] + idx[3:], q)
    with pytest.raises(ValueError, match=r"values must be in \[0, 16\)"):
        model.inputs(idx[:3] + [idx[3] + 16], q)
    with pytest.raises(ValueError, match="force_branches"):
        model.sample(labels, q, reference=idx, force_branches=[2])
    with pytest.raises(ValueError, match="flat tokens"):
        unflatten_indices(torch.zeros(2, 59, dtype=torch.long), SCALES, 2)
    with pytest.raises(ConfigError, match="raster"):
        Generator(GeneratorConfig(mode="raster", depth=1, width=32, heads=2), QuantizerConfig(scales=SCALES), 3)


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


# ----------------------------------------------------------------------------- the real quantizer

def test_real_quantizer_satisfies_the_contract_check():
    cfg = config.profile("smoke")
    model = Generator(cfg.generator, cfg.quantizer, N_CLASSES)
    model.check_quantizer(ProductQuantizer(cfg.quantizer))
    other = config.profile("smoke", {"quantizer.codebook_size": 32})
    with pytest.raises(ValueError, match="codebook_size: model 64 vs quantizer 32"):
        model.check_quantizer(ProductQuantizer(other.quantizer))


@pytest.mark.parametrize("mode", ["folded", "unfolded"])
def test_real_quantizer_sampling_matches_teacher_forcing(mode):
    """With the real quantizer: the KV-cached sampler (next_input) and the training path
    (teacher_forcing_inputs) give the same logits, and forced branches are reproduced."""
    model, q = smoke_pair(mode)
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
    idx_n = model.sample(labels, q, cfg_scale=1.5, generator=rng(2), use_cache=False, reference=ref,
                         force_branches=[1])
    assert all(torch.equal(a, b) for a, b in zip(idx, idx_n))
    assert q.indices_to_fhat(idx).shape == (2, 2, 32, 4, 4)  # the sample decodes
