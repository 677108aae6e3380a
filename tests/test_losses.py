"""Loss, discriminator and objective tests: semantic modes touch exactly their branches, adversarial
pieces on known values, the trainer protocol, and a short training that lowers the reconstruction loss."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from imagefolder import config, pretrained
from imagefolder.backbones import TeacherViT, build_vit
from imagefolder.discriminator import DinoDiscriminator, PatchGAN, build_discriminator, diff_augment
from imagefolder.losses import (
    LeCam,
    LPIPSLoss,
    SemanticContrastiveLoss,
    TeacherPerceptualLoss,
    TokenizerObjective,
    adaptive_weight,
    build_perceptual,
    gather_batch,
    hinge_d_loss,
    hinge_g_loss,
    semantic_branch,
)
from imagefolder.tokenizer import ImageFolderTokenizer


def smoke_cfg(**overrides) -> config.Config:
    return config.profile("smoke", {"tokenizer.encoder_init": "random", **overrides})


def images(B=8, R=16, seed=0, low=4) -> torch.Tensor:
    """Smooth random images in [-1, 1]: low×low noise upsampled bicubically."""
    g = torch.Generator().manual_seed(seed)
    return torch.tanh(F.interpolate(torch.randn(B, 3, low, low, generator=g), size=(R, R), mode="bicubic"))


def random_teacher(cfg: config.Config, seed: int = 1) -> TeacherViT:
    torch.manual_seed(seed)
    return TeacherViT(build_vit(cfg.tokenizer.encoder, cfg.data.resolution))


@pytest.mark.parametrize("form", ["normalised", "official"])
@pytest.mark.parametrize("mode, touched", [("none", []), ("one", [1]), ("all", [0, 1])])
def test_semantic_mode_touches_exactly_its_branches(mode, touched, form):
    """"one" regularises the last branch (the official convention), "all" every branch, in either form."""
    torch.manual_seed(0)
    loss_fn = SemanticContrastiveLoss(mode, branches=2, code_dim=8, teacher_dim=16, form=form,
                                      teacher_proj=torch.nn.Linear(16, 8))
    f_hat = torch.randn(6, 2, 8, 3, 3, requires_grad=True)
    keep = torch.tensor([True, True, True, True, False, True])
    loss = loss_fn(f_hat, torch.randn(6, 16), keep)
    if not touched:
        assert loss.item() == 0 and not loss.requires_grad
        return
    loss.backward()
    per_branch = f_hat.grad.abs().sum(dim=(0, 2, 3, 4))
    assert [p for p in range(2) if per_branch[p] > 0] == touched
    assert f_hat.grad[4].abs().sum() == 0  # the dropped sample takes no part
    assert loss_fn(f_hat, torch.randn(6, 16), torch.tensor([True] + [False] * 5)).item() == 0  # < 2 samples


def test_semantic_loss_is_symmetric_infonce():
    torch.manual_seed(0)
    loss_fn = SemanticContrastiveLoss("one", branches=2, code_dim=4, teacher_dim=4, temperature=0.5)
    f_hat, cls = torch.randn(5, 2, 4, 2, 2), torch.randn(5, 4)
    a = F.normalize(loss_fn.proj_tokens(f_hat[:, 1].mean(dim=(-1, -2))), dim=-1)
    b = F.normalize(loss_fn.proj_teacher(cls), dim=-1)
    logits = a @ b.T / 0.5
    expected = 0.5 * (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5)))
    assert torch.allclose(loss_fn(f_hat, cls, torch.ones(5, dtype=torch.bool)), expected)


def test_official_semantic_loss_is_raw_infonce_through_the_encoders_projection():
    """The official form on a hand-made batch: token means of the last branch against the teacher's CLS
    through the given projection, unnormalised, logit scale 1, over the kept samples only."""
    proj = torch.nn.Linear(3, 2)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        proj.bias.zero_()
    loss_fn = SemanticContrastiveLoss("one", branches=2, code_dim=2, teacher_dim=3, form="official", teacher_proj=proj)
    assert not list(loss_fn.parameters())  # no heads of its own: the projection belongs to the tokenizer
    f_hat = torch.zeros(3, 2, 2, 2, 2)
    f_hat[:, 1, :, 0, 0] = torch.tensor([[4.0, 0.0], [0.0, 8.0], [9.0, 9.0]])  # means: (1, 0), (0, 2), dropped
    f_hat[:, 0] = 100.0  # the detail branch plays no part
    cls = torch.tensor([[2.0, 0.0, 7.0], [0.0, 1.0, 7.0], [5.0, 5.0, 5.0]])  # projected: (2, 0), (0, 1)
    keep = torch.tensor([True, True, False])
    # logits = z·tᵀ = [[2, 0], [0, 2]]: each row and column is CE([2, 0], 0) = log(1 + e⁻²)
    expected = math.log(1 + math.exp(-2))
    assert loss_fn(f_hat, cls, keep).item() == pytest.approx(expected, rel=1e-6)


def test_semantic_branch_is_the_last():
    assert [semantic_branch(p) for p in (1, 2, 4)] == [0, 1, 3]


def test_gather_batch_is_identity_on_one_process():
    x = torch.randn(3, 2)
    assert gather_batch(x) is x


def test_adversarial_pieces_on_known_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)
    w = torch.randn(5, 3, requires_grad=True)
    assert adaptive_weight(4 * w.sum(), 2 * w.sum(), w).item() == pytest.approx(2.0, rel=1e-3)
    assert adaptive_weight(w.sum(), 0 * w.sum(), w, max_weight=50.0).item() == 50.0  # clamped
    lecam = LeCam(decay=0.5)
    pen = lecam(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -3.0]))
    assert lecam.ema_real.item() == pytest.approx(1.0) and lecam.ema_fake.item() == pytest.approx(-1.0)
    # relu(real - ema_fake)² = [4, 16]; relu(ema_real - fake)² = [4, 16]
    assert pen.item() == pytest.approx(20.0)


def test_teacher_interface_and_perceptual_distance():
    cfg = smoke_cfg()
    teacher = random_teacher(cfg)
    x = images(4)
    assert teacher(x).shape == (4, cfg.tokenizer.encoder.width)
    feats = teacher.block_features(x, [0])
    assert feats[0].shape == (4, teacher.width, 4, 4)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training
    perc = build_perceptual(cfg.tokenizer.perceptual_loss, teacher)
    assert isinstance(perc, TeacherPerceptualLoss) and perc.name == "teacher_feature_perceptual"
    assert perc(x, x).item() == pytest.approx(0.0, abs=1e-6)
    y = x.clone().requires_grad_(True)
    d = perc(y, images(4, seed=5))
    d.backward()
    assert d.item() > 0 and y.grad.abs().sum() > 0  # differentiable w.r.t. the reconstruction


@pytest.mark.skipif(not (pretrained.torch_hub_dir() / "vgg16-397923af.pth").exists(),
                    reason="LPIPS needs torchvision's vgg16-397923af.pth in $TORCH_HOME/hub/checkpoints")
def test_lpips_is_frozen_pretrained_vgg():
    lp = LPIPSLoss()
    assert not lp.net.training and not any(p.requires_grad for p in lp.parameters())
    assert lp.net.pnet_rand is False
    x = images(2)
    assert lp(x, x).item() == pytest.approx(0.0, abs=1e-6) and lp(x, -x).item() > 0.1


def test_diff_augment_translation_is_a_shift_and_cutout_zeroes_a_square():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16) + 1  # strictly positive, so zero fill is visible
    shifted = diff_augment(x, color=False, translation=True, cutout=False)
    padded = F.pad(x, (2, 2, 2, 2))
    for b in range(3):
        assert any(torch.equal(shifted[b], padded[b, :, 2 + dy:18 + dy, 2 + dx:18 + dx])
                   for dy, dx in itertools.product(range(-2, 3), repeat=2))
    cut = diff_augment(x, color=False, translation=False, cutout=True)
    zero_frac = (cut == 0).all(dim=1).float().mean(dim=(1, 2))  # per sample
    assert ((zero_frac > 0) & (zero_frac <= 81 / 256)).all()
    colour = diff_augment(x.requires_grad_(True), translation=False, cutout=False)
    colour.sum().backward()
    assert x.grad is not None and colour.shape == x.shape


def test_discriminators():
    cfg = smoke_cfg()
    pg = build_discriminator(cfg)
    assert isinstance(pg, PatchGAN) and pg(images(2)).shape == (2, 1, 4, 4)  # 16 px, 2 layers
    assert any("parametrizations" in n for n, _ in pg.named_parameters())  # spectral norm
    plain = PatchGAN(8, 3, norm="none")
    assert not any("parametrizations" in n for n, _ in plain.named_parameters())
    assert build_discriminator(smoke_cfg(**{"tokenizer.discriminator": "none"})) is None
    with pytest.raises(ValueError, match="backbone"):
        build_discriminator(smoke_cfg(**{"tokenizer.discriminator": "dino"}))
    teacher = random_teacher(cfg)
    dino = build_discriminator(smoke_cfg(**{"tokenizer.discriminator": "dino"}), teacher)
    assert isinstance(dino, DinoDiscriminator)
    x = images(2).requires_grad_(True)
    logits = dino(x)
    assert logits.shape == (2, 16 * len(dino.depths))
    logits.sum().backward()
    assert all(p.grad is None for p in teacher.parameters())  # backbone frozen
    assert all(p.grad is not None for p in dino.heads.parameters()) and x.grad.abs().sum() > 0


def test_objective_phases_and_gradients_go_where_they_belong():
    cfg = smoke_cfg(**{"tokenizer.disc_start": 1})
    teacher = random_teacher(cfg)
    tok = ImageFolderTokenizer(cfg)
    obj = TokenizerObjective(cfg, tok, teacher, build_perceptual(cfg.tokenizer.perceptual_loss, teacher)).train()
    assert obj.phases == ("model", "disc") and obj.ema_target is tok
    assert not teacher.training
    batch = (images(), torch.zeros(8, dtype=torch.long))
    with pytest.raises(RuntimeError, match="model phase"):
        obj(batch, "disc", 0)
    loss, logs = obj(batch, "model", 0)  # before disc_start: no adversarial term
    assert "adv_g" not in logs and {"recon_l2", "vq", "perceptual", "semantic"} <= set(logs)
    d0, _ = obj(batch, "disc", 0)
    assert d0.item() == 0.0
    loss, logs = obj(batch, "model", 1)
    assert "adv_g" in logs and logs["adaptive_w"] > 0
    loss.backward()
    assert all(p.grad is None for p in obj.parameters_for("disc"))  # the model phase leaves D alone
    assert all(p.requires_grad for p in obj.parameters_for("disc"))
    assert obj.semantic.proj_tokens.weight.grad is not None
    tok.zero_grad(set_to_none=True)
    d, dlogs = obj(batch, "disc", 1)
    d.backward()
    assert {"disc_hinge", "lecam"} <= set(dlogs)
    assert all(p.grad is None for p in tok.parameters())  # the disc phase reads a detached reconstruction
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.parameters_for("disc"))
    no_disc = TokenizerObjective(smoke_cfg(**{"tokenizer.discriminator": "none", "tokenizer.semantic_mode": "none",
                                              "tokenizer.perceptual_weight": 0.0}), ImageFolderTokenizer(cfg))
    assert no_disc.phases == ("model",)
    with pytest.raises(ValueError, match="teacher"):
        TokenizerObjective(cfg, tok, None, build_perceptual(cfg.tokenizer.perceptual_loss, teacher))


def test_objective_registers_each_frozen_network_once():
    """The teacher serves the semantic loss, the perceptual distance and the DINO discriminator; a
    checkpoint must still hold each tensor once (safetensors refuses shared storage)."""
    cfg = smoke_cfg(**{"tokenizer.discriminator": "dino"})
    teacher = random_teacher(cfg)
    perceptual = build_perceptual(cfg.tokenizer.perceptual_loss, teacher)
    obj = TokenizerObjective(cfg, ImageFolderTokenizer(cfg), teacher, perceptual)
    ptrs = [v.data_ptr() for v in obj.state_dict().values() if v.numel()]
    assert len(ptrs) == len(set(ptrs))
    assert obj.discriminator.backbone is teacher and obj.perceptual.teacher is teacher
    obj.to(torch.float64)  # moving the objective moves the shared teacher too
    assert teacher.vit.pos_embed.dtype == torch.float64


def test_short_training_lowers_reconstruction_loss():
    """30 AdamW steps of the full objective (PatchGAN from step 10, teacher perceptual, semantic
    branch) on a fixed smoke batch lower the L2 reconstruction error."""
    torch.manual_seed(0)
    cfg = smoke_cfg(**{"tokenizer.disc_start": 10})
    teacher = random_teacher(cfg)
    tok = ImageFolderTokenizer(cfg)
    obj = TokenizerObjective(cfg, tok, teacher, build_perceptual(cfg.tokenizer.perceptual_loss, teacher))
    opts = {ph: torch.optim.AdamW(obj.parameters_for(ph), lr=3e-3, betas=(0.9, 0.95)) for ph in obj.phases}
    x = images(16, low=2)
    batch = (x, torch.zeros(16, dtype=torch.long))

    def recon_error() -> float:
        tok.eval()
        with torch.no_grad():
            return F.mse_loss(tok(x).recon, x).item()

    obj.train()
    obj(batch, "model", 0)  # the first training forward initialises the codebooks from data
    before = recon_error()
    obj.train()
    for step in range(30):
        for ph in obj.phases:
            opts[ph].zero_grad(set_to_none=True)
            loss, _ = obj(batch, ph, step)
            loss.backward()
            opts[ph].step()
    after = recon_error()
    assert after < 0.85 * before, (before, after)


@pytest.mark.parametrize("kind", ["patchgan", "dino"])
def test_discriminator_trained_alone_separates_real_from_blurred(kind):
    """A few hinge steps on real vs blurred images (a stand-in for blurry reconstructions): the real logits
    end above the fake ones, and the hinge loss below its value at chance (1)."""
    torch.manual_seed(0)
    cfg = smoke_cfg(**{"tokenizer.discriminator": kind})
    disc = build_discriminator(cfg, random_teacher(cfg) if kind == "dino" else None)
    opt = torch.optim.AdamW([p for p in disc.parameters() if p.requires_grad], lr=cfg.train_tokenizer.lr,
                            betas=(0.9, 0.95))
    real = images(16, low=8)
    fake = F.interpolate(F.avg_pool2d(real, 4), scale_factor=4, mode="bilinear")
    for _ in range(60):
        logits_real, logits_fake = disc(real), disc(fake)
        loss = hinge_d_loss(logits_real, logits_fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits_real, logits_fake = disc(real), disc(fake)
    assert logits_real.mean() > logits_fake.mean() + 0.3 and hinge_d_loss(logits_real, logits_fake) < 0.9


@pytest.mark.parametrize("adaptive", [True, False])
def test_adaptive_adversarial_weight_is_a_switch(adaptive):
    cfg = smoke_cfg(**{"tokenizer.disc_start": 0, "tokenizer.adaptive_adv_weight": adaptive})
    teacher = random_teacher(cfg)
    perceptual = build_perceptual(cfg.tokenizer.perceptual_loss, teacher)
    obj = TokenizerObjective(cfg, ImageFolderTokenizer(cfg), teacher, perceptual).train()
    _, logs = obj((images(), torch.zeros(8, dtype=torch.long)), "model", 0)
    assert (logs["adaptive_w"] != 1.0) if adaptive else (logs["adaptive_w"] == 1.0)


def test_adversarial_ramp():
    cfg = smoke_cfg(**{"tokenizer.disc_start": 10, "tokenizer.adv_ramp_steps": 4})
    teacher = random_teacher(cfg)
    perceptual = build_perceptual(cfg.tokenizer.perceptual_loss, teacher)
    obj = TokenizerObjective(cfg, ImageFolderTokenizer(cfg), teacher, perceptual)
    assert [obj.adv_ramp(s) for s in (10, 11, 12, 13, 14, 100)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert TokenizerObjective(smoke_cfg(), ImageFolderTokenizer(cfg), teacher, perceptual).adv_ramp(0) == 1.0
