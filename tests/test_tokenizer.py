"""Tokenizer tests: shapes and token counts, encode/decode round trip, gradients, encoder init and
tuning, input checks, and the paper profile's forward pass on CPU."""
import time

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from imagefolder import config
from imagefolder.tokenizer import ImageFolderTokenizer, LoRALinear, query_window_mask


def smoke_cfg(**overrides) -> config.Config:
    return config.profile("smoke", {"tokenizer.encoder_init": "random", **overrides})


def images(B=4, R=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tanh(F.interpolate(torch.randn(B, 3, 4, 4, generator=g), size=(R, R), mode="bicubic"))


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def tok() -> ImageFolderTokenizer:
    torch.manual_seed(0)
    t = ImageFolderTokenizer(smoke_cfg())
    t.train()
    t(images(8))  # data-dependent codebook init
    return t.eval()


def test_forward_shapes_and_token_counts(tok):
    cfg = smoke_cfg()
    out = tok(images())
    P, C, K = cfg.quantizer.branches, cfg.quantizer.code_dim, cfg.grid
    assert out.recon.shape == (4, 3, 16, 16)
    assert out.f_hat.shape == (4, P, C, K, K)
    assert [tuple(i.shape) for i in out.indices] == [(4, P, s, s) for s in cfg.quantizer.scales]
    assert sum(i[0].numel() for i in out.indices) == P * cfg.tokens_per_branch == 2 * 39
    assert out.undropped.all() and out.vq_loss.ndim == 0


def test_encode_decode_reproduces_quantized_features(tok):
    x = images(seed=1)
    out = tok(x)
    idx = tok.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(idx, out.indices))
    assert torch.allclose(tok.indices_to_fhat(idx), out.f_hat, atol=1e-5)
    assert torch.allclose(tok.decode(idx), out.recon.clamp(-1, 1), atol=1e-5)
    # first-n-scale decoding: reconstruct(x, n) is the decode of the first n scales only
    assert torch.allclose(tok.reconstruct(x, 3), tok.decode(idx[:3]), atol=1e-6)
    assert not torch.allclose(tok.reconstruct(x, 3), tok.reconstruct(x), atol=1e-4)
    with pytest.raises(ValueError, match="n_scales"):
        tok.reconstruct(x, 11)


def test_decode_with_branch_zeroed(tok):
    idx = tok.encode(images(seed=2))
    f_hat = tok.indices_to_fhat(idx)
    for p in (0, 1):
        z = f_hat.clone()
        z[:, p] = 0
        got = tok.decode_with_branches_zeroed(idx, p)
        assert torch.allclose(got, tok.decode_fhat(z).clamp(-1, 1), atol=1e-6)
        assert not torch.allclose(got, tok.decode(idx), atol=1e-4)
    with pytest.raises(ValueError, match="zero_branch"):
        tok.decode_with_branches_zeroed(idx, 2)


def test_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    t = ImageFolderTokenizer(smoke_cfg()).train()
    out = t(images())
    F.mse_loss(out.recon, images()).backward()
    assert t.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert t.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert t.queries.grad.abs().sum() > 0 and t.to_code.weight.grad.abs().sum() > 0
    assert all(b.codebook.weight.grad is None for b in t.quantizer.msrq)  # codes learn from the VQ loss only


@pytest.mark.parametrize("code_cls", [True, False])
def test_decoder_sequence_is_cls_masks_cls_codes(code_cls):
    """The decoder reads [cls, g'² mask tokens, cls, K² codes] (official), or without the second cls: its
    length, the second cls (the same token and position embedding, plus the code-type embedding) and the
    codes, each computed here from the parameters; the output reads the mask tokens' positions only."""
    torch.manual_seed(0)
    t = ImageFolderTokenizer(smoke_cfg(**{"tokenizer.decoder_code_cls": code_cls})).eval()
    dec, K, g = t.decoder, t.K, t.dec_grid
    seen = []
    dec.norm_pre.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    f_hat = torch.randn(2, t.P, t.C, K, K)
    with torch.no_grad():
        t.decode_fhat(f_hat)
    x = seen[0]
    assert x.shape == (2, 1 + g * g + int(code_cls) + K * K, dec.embed_dim)
    cls_D = dec.cls_token[0, 0] + dec.pos_embed[0, 0]
    torch.testing.assert_close(x[:, 0], cls_D.expand(2, -1))
    torch.testing.assert_close(x[:, 1:1 + g * g], (t.mask_token[0, 0] + dec.pos_embed[0, 1:]).expand(2, -1, -1))
    if code_cls:
        torch.testing.assert_close(x[:, 1 + g * g], (cls_D + t.code_type_embed[0, 0]).expand(2, -1))
    codes = torch.stack([f_hat[:, :, :, i, j].flatten(1) for i in range(K) for j in range(K)], dim=1)  # (B, K², P·C)
    pos = F.interpolate(dec.pos_embed[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2), size=(K, K),
                        mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)  # (1, K², D')
    with torch.no_grad():
        want = t.from_code(codes) + pos + t.code_type_embed
    torch.testing.assert_close(x[:, -K * K:], want, atol=1e-5, rtol=1e-5)


def test_feature_map_token_source_is_the_single_branch_baseline():
    cfg = smoke_cfg(**{"quantizer.branches": 1})
    cfg.tokenizer.token_source = "feature_map"
    config.validate(cfg)
    t = ImageFolderTokenizer(cfg).eval()
    out = t(images(2))
    assert out.f_hat.shape == (2, 1, 32, 4, 4) and not hasattr(t, "queries")
    with pytest.raises(config.ConfigError, match="quantizer.branches"):
        smoke_cfg(**{"tokenizer.token_source": "feature_map"})  # two branches are not the baseline
    with pytest.raises(config.ConfigError, match="quantizer.scales"):
        smoke_cfg(**{"tokenizer.token_source": "feature_map", "quantizer.branches": 1, "quantizer.scales": [1, 2, 3]})


def test_clear_errors_for_bad_images_and_indices(tok):
    # images are checked where they enter (encode, encode_features, reconstruct), not in the training forward
    with pytest.raises(ValueError, match=r"16×16 images"):
        tok.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"shape \(B, 3, 16, 16\)"):
        tok.encode_features(torch.zeros(1, 1, 16, 16))
    for bad_range in (tok.encode, tok.encode_features, tok.reconstruct):
        with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
            bad_range(torch.full((1, 3, 16, 16), 255.0))
    with pytest.raises(ValueError, match="float tensor"):
        tok.reconstruct(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    idx = tok.encode(images(1))
    idx[-1][0, 1, 0, 0] = 64  # codebook_size of the smoke profile
    with pytest.raises(ValueError, match=r"indices\[9\]: values must be in \[0, 64\)"):
        tok.decode(idx)
    with pytest.raises(ValueError, match="encoder_state_dict"):
        ImageFolderTokenizer(config.profile("smoke"))  # pretrained init without weights is an error


def test_load_teacher_state_dict_folds_layerscale_and_resamples():
    torch.manual_seed(0)
    cfg = smoke_cfg()
    v = cfg.tokenizer.encoder
    # a DINOv2-like teacher: same shape plus LayerScale (random gammas) and a classifier head
    teacher = VisionTransformer(img_size=16, patch_size=v.patch_size, embed_dim=v.width, depth=v.depth,
                                num_heads=v.heads, init_values=0.5, num_classes=7).eval()
    with torch.no_grad():
        for n, p in teacher.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(0.1, 2.0)
    t = ImageFolderTokenizer(cfg, encoder_state_dict=teacher.state_dict()).eval()
    x = images(2)
    with torch.no_grad():
        assert torch.allclose(t.encoder.forward_features(x), teacher.forward_features(x), atol=1e-5)
    # other grid and patch size (DINOv2 /14 at 518 → /16 at 256 in the paper): resampled, loads
    other = VisionTransformer(img_size=28, patch_size=7, embed_dim=v.width, depth=v.depth, num_heads=v.heads)
    t.load_encoder_state_dict(other.state_dict())
    assert torch.equal(t.encoder.blocks[0].attn.qkv.weight, other.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="missing"):
        t.load_encoder_state_dict({k: p for k, p in other.state_dict().items() if "blocks.0.norm1" not in k})


def test_encoder_tuning_modes():
    torch.manual_seed(0)
    full = ImageFolderTokenizer(smoke_cfg())
    lora = ImageFolderTokenizer(smoke_cfg(**{"tokenizer.encoder_tuning": "lora", "tokenizer.lora_rank": 4}))
    lora.load_state_dict(full.state_dict(), strict=False)  # same weights; LoRA B starts at zero
    assert isinstance(lora.encoder.blocks[0].attn.qkv, LoRALinear)
    trainable = {n for n, p in lora.encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    x = images(2)
    full.eval(), lora.eval()
    with torch.no_grad():
        assert torch.allclose(full.encode_features(x), lora.encode_features(x), atol=1e-6)
    lin = ImageFolderTokenizer(smoke_cfg(**{"tokenizer.encoder_tuning": "linear"}))
    assert not any(p.requires_grad for p in lin.encoder.parameters())
    assert lin.queries.requires_grad and lin.to_code.weight.requires_grad
    assert all(p.requires_grad for p in lin.decoder.parameters())
    assert n_trainable(full) > n_trainable(lin)


def test_query_window_mask():
    m = query_window_mask(n_prefix=1, grid=8, K=8, P=2, radius=0)
    q = 1 + 64 + 2 * 8 + 3  # branch 0, cell (2, 3)
    assert m[q].nonzero().flatten().tolist() == [0, 1 + 2 * 8 + 3, q, q + 64]  # cls, own patch, both branches
    assert m[:65].all()  # cls and patch rows attend everywhere
    wide = query_window_mask(n_prefix=1, grid=8, K=8, P=2, radius=1)
    assert wide[q, 1:65].sum() == 9 and wide[1 + 64, 1:65].sum() == 4  # 3×3 cells; a corner sees 2×2
    for grid, K in ((8, 6), (8, 7), (8, 9), (8, 10), (16, 11)):  # K ≠ grid: the patches overlapping each cell
        seen = query_window_mask(n_prefix=1, grid=grid, K=K, P=2, radius=0)[1 + grid ** 2:, 1:1 + grid ** 2].sum(1)
        assert seen.min() >= 1 and seen.max() <= 9, (grid, K)


@pytest.mark.parametrize("window", [0, None])
def test_query_window_makes_tokens_spatially_aligned(window):
    """With a one-block encoder and query_window=0, a change inside one patch moves only that cell's
    features (both branches); with global attention (None) it moves every cell."""
    torch.manual_seed(0)
    t = ImageFolderTokenizer(smoke_cfg(**{"tokenizer.query_window": window})).eval()
    assert len(t.encoder.blocks) == 1
    x = images()
    y = x.clone()
    y[:, :, 4:8, 8:12] = -x[:, :, 4:8, 8:12]  # patch (1, 2) of the 4×4 grid
    with torch.no_grad():
        moved = (t.encode_features(x) - t.encode_features(y)).abs().amax(dim=(0, 1, 2)) > 1e-6  # (K, K)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(moved, expected) if window == 0 else moved.all()


def test_paper_profile_forward_on_cpu():
    """The paper's tokenizer (256 px, ViT-B, 2×4096×32, 286 tokens per branch) runs at batch 1 on CPU."""
    t0 = time.time()
    cfg = config.profile("paper", {"tokenizer.encoder_init": "random"})
    torch.manual_seed(0)
    t = ImageFolderTokenizer(cfg).eval()
    n = sum(p.numel() for p in t.parameters())
    with torch.no_grad():
        out = t(torch.zeros(1, 3, 256, 256))
    print(f"paper tokenizer: {n / 1e6:.1f}M parameters; build + forward {time.time() - t0:.1f}s")
    assert [i.shape[-1] for i in out.indices] == config.PAPER_SCALES
    assert [sum(i[0, p].numel() for i in out.indices) for p in range(2)] == [286, 286]
    assert out.f_hat.shape == (1, 2, 32, 11, 11) and out.recon.shape == (1, 3, 256, 256)
    assert t.quantizer.msrq[0].codebook.weight.shape == (4096, 32)
    assert 160e6 < n < 190e6  # two ViT-B (≈86M each) plus the small new parts
