"""The official release's training choices as config fields: each on a hand-worked or
independently computed expectation, and the paper profile naming every one of them."""
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from imagefolder import config, pipeline, pretrained
from imagefolder.backbones import TeacherViT, build_vit
from imagefolder.discriminator import DinoDiscriminator, LocalBatchNorm, fit_official, official_head
from imagefolder.generator import Generator
from imagefolder.losses import SemanticContrastiveLoss, TokenizerObjective, build_perceptual, clip_loss
from imagefolder.quantize import Codebook, MultiScaleResidualQuantizer, Phi, ProductQuantizer
from imagefolder.tokenizer import ImageFolderTokenizer


def smoke(**overrides) -> config.Config:
    return config.profile("smoke", {"tokenizer.encoder_init": "random", **overrides})


# ----------------------------------------------------------------------------- quantizer

@pytest.mark.parametrize("commitment, expected", [("mean", 0.625), ("sum", 0.75)])
def test_commitment_is_summed_or_averaged_over_scales(commitment, expected):
    """Scales [1, 1], codes (2, 0) and (0, 1), φ the identity (γ = 0), f = (3, 0): both scales pick (2, 0), so
    f̂ is (2, 0) then (4, 0) and each scale's squared error (mean over 2 channels) is 0.5. The codebook term
    averages them (0.5); β = 0.25 times the commitment term averages (0.125) or sums (0.25) them."""
    q = config.QuantizerConfig(scales=[1, 1], branches=1, codebook_size=2, code_dim=2, phi_gamma=0.0,
                               codebook_init="uniform", commitment=commitment)
    msrq = MultiScaleResidualQuantizer(q).eval()
    with torch.no_grad():
        msrq.codebook.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    f = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1).requires_grad_(True)
    out = msrq(f)
    assert [int(i) for i in out.indices] == [0, 0]
    assert out.loss.item() == pytest.approx(expected)
    out.loss.backward()  # only the commitment term reaches f: β · d/df of (f − 2)²/2 + (f − 4)²/2, / S if averaged
    grad = 0.25 * ((3 - 2) + (3 - 4)) * (1 if commitment == "sum" else 0.5)
    assert f.grad[0, 0].item() == pytest.approx(grad, abs=1e-7)
    f2 = torch.tensor([5.0, 0.0]).view(1, 2, 1, 1).requires_grad_(True)  # errors 9/2 and 1/2: gradient β·(3 + 1)
    msrq(f2).loss.backward()
    assert f2.grad[0, 0].item() == pytest.approx(0.25 * 4 * (1 if commitment == "sum" else 0.5))


@pytest.mark.parametrize("batch, p, n_first", [(10, 0.1, 1), (7, 0.3, 2), (9, 0.25, 2), (3, 0.1, 0), (8, 1.0, 8)])
def test_dropout_first_truncates_exactly_the_first_floor_pB(batch, p, n_first):
    q = config.QuantizerConfig(scales=[1, 2, 3, 4], branches=2, codebook_size=8, code_dim=4, dropout_p=p,
                               dropout_n_start=1, dropout_pick="first")
    pq = ProductQuantizer(q).train()
    seen = torch.zeros(batch, dtype=torch.bool)  # samples ever truncated below S
    for seed in range(60):
        torch.manual_seed(seed)
        n = pq.sample_n_scales(batch, "cpu")
        assert (n[n_first:] == 4).all()  # the rest keep every scale
        assert ((n[:n_first] >= 1) & (n[:n_first] <= 4)).all()
        seen |= n < 4
    assert seen.tolist() == [True] * n_first + [False] * (batch - n_first)
    assert (pq.eval().sample_n_scales(batch, "cpu") == 4).all()  # never in evaluation


def test_dropout_bernoulli_truncates_a_p_fraction_anywhere_in_the_batch():
    q = config.QuantizerConfig(scales=[1, 2, 3, 4], branches=1, codebook_size=8, code_dim=4, dropout_p=0.3,
                               dropout_n_start=1, dropout_pick="bernoulli")
    pq = ProductQuantizer(q).train()
    torch.manual_seed(0)
    eligible = torch.rand(4000) < 0.3  # the draw the quantizer makes first
    torch.manual_seed(0)
    n = pq.sample_n_scales(4000, "cpu")
    assert ((n < 4) & ~eligible).sum() == 0 and (n[eligible] < 4).float().mean() > 0.7
    assert (n[2000:] < 4).any()  # not only the head of the batch


def test_codebook_starts_uniform_in_one_over_v_then_normalised():
    """The official draw and normalisation. Its bound ±1/V is not observable: torch draws u in [0, 1) and
    scales it, so after normalisation ±1 would give the same rows, bit for bit."""
    V, C = 16, 4
    torch.manual_seed(3)
    expected = F.normalize(torch.empty(V, C).uniform_(-1.0 / V, 1.0 / V), dim=-1)
    torch.manual_seed(3)
    assert torch.equal(Codebook(V, C).weight.data, expected)


def test_phi_init_identity_or_pytorch_default():
    h = torch.randn(2, 3, 4, 4)
    assert torch.allclose(Phi(3, 0.5, "identity")(h), h, atol=1e-6)
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    conv.reset_parameters()  # Phi builds its conv, then re-initialises it the same way
    torch.manual_seed(5)
    phi = Phi(3, 0.5, "default")
    assert torch.equal(phi.conv.weight, conv.weight) and torch.equal(phi.conv.bias, conv.bias)
    assert torch.allclose(phi(h), 0.5 * h + 0.5 * conv(h))


# ----------------------------------------------------------------------------- semantic loss

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gathered_loss(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        f_hat, cls = torch.randn(8, 2, 3, 2, 2), torch.randn(8, 5)
        keep = torch.tensor([True, False, True, True, True, True, False, True])
        proj = nn.Linear(5, 3)
        loss_fn = SemanticContrastiveLoss("one", 2, 3, 5, form="official", teacher_proj=proj)
        half = slice(4 * rank, 4 * rank + 4)  # each rank holds half of the batch
        local = f_hat[half].clone().requires_grad_(True)
        loss = loss_fn(local, cls[half], keep[half])
        loss.backward()
        out[rank] = (loss.item(), local.grad)
    finally:
        torch.distributed.destroy_process_group()


def test_official_semantic_loss_takes_its_negatives_from_every_rank():
    """Two gloo processes, each with half of a batch, compute the loss of the whole batch: the loss one
    process computes on all eight samples, by an independent few lines. Each rank's features get the
    gradient of every rank's (identical) loss, twice the one-process gradient, as all_gather's backward sums."""
    torch.manual_seed(0)
    f_hat, cls = torch.randn(8, 2, 3, 2, 2, requires_grad=True), torch.randn(8, 5)
    keep = torch.tensor([True, False, True, True, True, True, False, True])
    proj = nn.Linear(5, 3)
    z, t = f_hat[keep, 1].mean(dim=(-1, -2)), proj(cls[keep])
    logits = z @ t.T
    target = torch.arange(len(z))
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert clip_loss(z, t).item() == pytest.approx(expected.item())
    expected.backward()
    out = mp.Manager().dict()
    mp.spawn(_gathered_loss, args=(2, _free_port(), out), nprocs=2)
    for rank in (0, 1):
        loss, grad = out[rank]
        assert loss == pytest.approx(expected.item(), rel=1e-5)
        assert torch.allclose(grad, 2 * f_hat.grad[4 * rank:4 * rank + 4], atol=1e-6)


def test_official_semantic_loss_in_the_objective_trains_the_encoders_projection():
    cfg = smoke(**{"tokenizer.semantic_loss": "official", "tokenizer.disc_start": 100})
    torch.manual_seed(1)
    teacher = TeacherViT(build_vit(cfg.tokenizer.encoder, cfg.data.resolution))
    tok = ImageFolderTokenizer(cfg)
    obj = TokenizerObjective(cfg, tok, teacher, build_perceptual("teacher", teacher)).train()
    assert not list(obj.semantic.parameters())
    images = torch.tanh(torch.randn(8, 3, 16, 16))
    loss, logs = obj((images, torch.zeros(8, dtype=torch.long)), "model", 0)
    assert logs["semantic"] > 0
    tok.zero_grad()
    (cfg.tokenizer.semantic_weight * obj.semantic(tok(images).f_hat, teacher(images), torch.ones(8, dtype=torch.bool))
     ).backward()
    assert tok.to_code.weight.grad.abs().sum() > 0  # the teacher side goes through the encoder's own to_code
    wide = smoke(**{"tokenizer.semantic_loss": "official"})
    wide.tokenizer.encoder.width = 64
    with pytest.raises(ValueError, match="encoder.width"):
        TokenizerObjective(wide, ImageFolderTokenizer(wide), teacher, build_perceptual("teacher", teacher))


# ----------------------------------------------------------------------------- DINO discriminator

def test_local_batch_norm_normalises_each_group_of_samples_on_its_own():
    bn = LocalBatchNorm(1, virtual_batch=2, eps=0.0)
    x = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]], [[101.0, 103.0]], [[105.0, 107.0]]])  # two groups of two
    s = math.sqrt(5.0)  # each group: mean 4 (or 104), variance (9 + 1 + 1 + 9) / 4
    expected = torch.tensor([-3 / s, -1 / s, 1 / s, 3 / s])
    y = bn(x)
    assert torch.allclose(y[:2].flatten(), expected) and torch.allclose(y[2:].flatten(), expected)
    with pytest.raises(ValueError, match="batch 3"):
        bn(x[:3])


def test_official_discriminator_heads_read_patch_plus_cls_tokens():
    torch.manual_seed(0)
    cfg = smoke()
    teacher = TeacherViT(build_vit(cfg.tokenizer.encoder, cfg.data.resolution))
    x = torch.tanh(torch.randn(2, 3, 16, 16))
    reads = teacher.readouts(x, [0])
    vit = teacher.vit
    tokens = torch.cat([vit.cls_token.expand(2, -1, -1), vit.patch_embed(teacher._prepare(x))], 1) + vit.pos_embed
    assert torch.allclose(reads[0], (tokens[:, 1:] + tokens[:, :1]).transpose(1, 2), atol=1e-6)
    after = vit.blocks[0](tokens)
    assert torch.allclose(reads[1], (after[:, 1:] + after[:, :1]).transpose(1, 2), atol=1e-5)
    head = official_head(teacher.width)
    assert head(reads[0]).shape == (2, 1, 16)
    assert sum("parametrizations" in n for n, _ in head.named_parameters()) == 3  # 3 spectral-norm convs
    disc = DinoDiscriminator(teacher, heads="official")
    assert len(disc.heads) == len(disc.depths) + 1 and disc.cut_ratio == 0.2
    xg = x.repeat(4, 1, 1, 1).requires_grad_(True)  # batch 8: one local batch-norm group
    logits = disc(xg)
    assert logits.shape == (8, 16 * (len(disc.depths) + 1))
    logits.sum().backward()
    assert all(p.grad is None for p in teacher.parameters()) and xg.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- profiles

def test_paper_profile_takes_the_official_choices_and_small_profiles_keep_ours():
    paper = config.profile("paper")
    q, t, g = paper.quantizer, paper.tokenizer, paper.generator
    assert (q.codebook_init, q.phi_init, q.dropout_pick, q.commitment) == ("uniform", "default", "first", "sum")
    assert (t.semantic_loss, t.teacher_network, t.teacher_patch_size) == ("official", "dinov2_vitb14", 16)
    assert (t.discriminator, t.disc_backbone, t.disc_heads, t.adaptive_adv_weight) == (
        "dino", "dino_vits16", "official", True)
    assert t.encoder.drop_path == t.decoder.drop_path == 0.1
    assert g.drop_path == pytest.approx(0.1 * 17 / 24)
    for name in ("smoke", "cpu", "gpu"):
        small = config.profile(name)
        assert (small.quantizer.phi_init, small.quantizer.dropout_pick, small.quantizer.commitment) == (
            "identity", "bernoulli", "mean")
        assert small.tokenizer.semantic_loss == "normalised"
        assert small.tokenizer.encoder.drop_path == small.generator.drop_path == 0.0


def test_paper_networks_stop_with_an_error_naming_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = config.profile("paper")
    with pytest.raises(pretrained.MissingWeightsError, match="dino_vits16.safetensors"):
        pipeline.frozen_vit(cfg, cfg.tokenizer.disc_backbone)
    with pytest.raises(pretrained.MissingWeightsError, match="dinov2_vitb14.safetensors"):
        pipeline.frozen_vit(cfg, cfg.tokenizer.teacher_network, patch_size=cfg.tokenizer.teacher_patch_size)


def test_teacher_re_patched_to_16_at_256():
    cfg = config.profile("paper")
    teacher = pipeline.frozen_vit(cfg, "dinov2_vitb14", trained=False, patch_size=16)
    assert teacher.image_size == (256, 256) and teacher.vit.patch_embed.proj.kernel_size == (16, 16)
    assert teacher.vit.pos_embed.shape[1] == teacher.vit.num_prefix_tokens + 16 * 16


def test_vit_stochastic_depth_rises_linearly_to_the_configured_rate():
    vit = build_vit(config.ViTConfig(width=32, depth=5, heads=2, patch_size=4, drop_path=0.1), 16)
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in vit.blocks]  # the first: an Identity
    assert rates == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert all(isinstance(b.drop_path1, nn.Identity) for b in build_vit(config.ViTConfig(depth=2), 32).blocks)


def test_official_fit_crops_half_the_time_and_area_downsamples_otherwise():
    x = torch.randn(2, 3, 12, 12)
    area = F.interpolate(x, size=(8, 8), mode="area")
    crops = downs = 0
    for seed in range(40):
        torch.manual_seed(seed)
        y = fit_official(x, (8, 8))
        if torch.equal(y, area):
            downs += 1
        else:  # a crop: one offset for both samples
            assert any(torch.equal(y, x[..., i:i + 8, j:j + 8]) for i in range(5) for j in range(5))
            crops += 1
    assert crops > 5 and downs > 5
    small = x[..., :4, :4]
    assert torch.allclose(fit_official(small, (8, 8)), F.interpolate(small, size=(8, 8), mode="bicubic"))
    assert fit_official(x, (12, 12)) is x


@pytest.mark.parametrize("pick", ["first", "bernoulli"])
def test_semantic_loss_reads_the_rows_dropout_leaves_whole(pick, monkeypatch):
    """With dropout_pick "first" the semantic loss skips the first ⌊p·B⌋ samples whatever n they drew (official);
    with "bernoulli" it skips the samples that lost scales."""
    cfg = smoke(**{"quantizer.dropout_pick": pick, "quantizer.dropout_p": 0.25, "tokenizer.disc_start": 100})
    torch.manual_seed(0)
    teacher = TeacherViT(build_vit(cfg.tokenizer.encoder, cfg.data.resolution))
    obj = TokenizerObjective(cfg, ImageFolderTokenizer(cfg), teacher, build_perceptual("teacher", teacher)).train()
    seen = {}
    forward = obj.semantic.forward
    monkeypatch.setattr(obj.semantic, "forward", lambda f, t, keep: seen.update(keep=keep) or forward(f, t, keep))
    n_scales = {}
    quantize = obj.tokenizer.quantizer.forward
    monkeypatch.setattr(obj.tokenizer.quantizer, "forward",
                        lambda f, n=None: n_scales.update(n=(o := quantize(f, n)).n_scales) or o)
    obj((torch.tanh(torch.randn(8, 3, 16, 16)), torch.zeros(8, dtype=torch.long)), "model", 0)
    expected = torch.arange(8) >= 2 if pick == "first" else n_scales["n"] == len(cfg.quantizer.scales)
    assert torch.equal(seen["keep"], expected)


def test_teacher_patch_size_needs_a_pretrained_teacher_and_a_divisor():
    with pytest.raises(config.ConfigError, match="tokenizer.teacher_patch_size.*reference teacher"):
        config.profile("smoke", {"tokenizer.teacher_patch_size": 4})
    with pytest.raises(config.ConfigError, match="tokenizer.teacher_patch_size.*divisor of the resolution 256"):
        config.profile("paper", {"tokenizer.teacher_patch_size": 12})
    assert config.profile("paper", {"tokenizer.teacher_patch_size": 8}).tokenizer.teacher_patch_size == 8


def test_generator_stochastic_depth_is_linear_over_blocks_and_off_in_eval():
    qcfg = config.QuantizerConfig(scales=[1, 2], codebook_size=8, code_dim=4)
    model = Generator(config.GeneratorConfig(depth=3, width=32, heads=2, drop_path=0.2), qcfg, num_classes=3)
    assert isinstance(model.blocks[0].drop_path, nn.Identity)
    assert [b.drop_path.drop_prob for b in model.blocks[1:]] == pytest.approx([0.1, 0.2])
    block, x = model.blocks[2], torch.randn(16, 5, 32)
    with torch.no_grad():
        block.ada[1].weight.normal_()  # non-zero gates, so a dropped branch shows
        mod = block.modulation(torch.randn(16, 32))
        block.eval()
        assert torch.equal(block(x, mod), block(x, mod))
        block.train()
        assert not torch.equal(block(x, mod), block(x, mod))  # 32 branches, each dropped with p = 0.2
    plain = Generator(config.GeneratorConfig(depth=3, width=32, heads=2), qcfg, num_classes=3)
    assert all(isinstance(b.drop_path, nn.Identity) for b in plain.blocks)
