"""Training losses of the ImageFolder tokenizer and the objective the trainer optimises (paper §3.1, eq. 4).

    L = λ_recon·L2 + λ_P·perceptual + λ_VQ·(codebook + β·commit) + λ_ad·w_adapt·hinge_G + λ_clip·InfoNCE
    discriminator: hinge_D + λ_LeCam·LeCam

The InfoNCE term regularises the semantic branch, the last one (`semantic_branch`), as the official code does.

Teachers are frozen networks behind the teacher interface (`backbones.TeacherViT`).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn
import torch.nn.functional as F

from .backbones import TeacherViT
from .config import Config
from .discriminator import build_discriminator, default_depths
from .tokenizer import ImageFolderTokenizer, TokenizerOutput
from .train import Objective

# ----------------------------------------------------------------------------- perceptual distances

class TeacherPerceptualLoss(nn.Module):
    """Teacher-feature perceptual distance (the small profiles' stand-in for LPIPS, labelled as such):
    per depth, channel-normalised patch features of recon and target, squared difference summed over
    channels, averaged over positions, depths and the batch. The teacher is held, not registered:
    whoever owns it (the objective) moves it and keeps it out of checkpoints."""

    name = "teacher_feature_perceptual"

    def __init__(self, teacher: TeacherViT, depths: list[int] | None = None):
        super().__init__()
        self._teacher = (teacher,)
        self.depths = depths if depths is not None else default_depths(teacher.num_blocks)

    @property
    def teacher(self) -> TeacherViT:
        return self._teacher[0]

    def forward(self, recon: torch.Tensor, target: torch.Tensor,
                target_features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Distance of recon to target; `target_features` (the teacher's block features of `target`
        at `self.depths`) saves the target's pass when the caller already has them."""
        if target_features is None:
            with torch.no_grad():
                target_features = self.teacher.block_features(target, self.depths)
        ft = target_features
        fr = self.teacher.block_features(recon, self.depths)
        dists = [(F.normalize(a, dim=1) - F.normalize(b, dim=1)).square().sum(1).mean() for a, b in zip(fr, ft)]
        return torch.stack(dists).mean()


class LPIPSLoss(nn.Module):
    """LPIPS with the VGG backbone (the paper's perceptual loss), frozen, in eval mode.

    Needs torchvision's `vgg16-397923af.pth` in `$TORCH_HOME/hub/checkpoints/` (see `pretrained`)."""

    name = "lpips_vgg"

    def __init__(self):
        super().__init__()
        import lpips  # deferred: only the paper profile needs it

        self.net = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        return super().train(False)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(recon, target).mean()


def build_perceptual(network: str, teacher: TeacherViT | None) -> TeacherPerceptualLoss | LPIPSLoss:
    """A perceptual distance: LPIPS-VGG where `network` is "lpips_vgg" (paper), else the teacher-feature
    distance (`tokenizer.perceptual_loss` in training, `evaluation.perceptual_network` in evaluation)."""
    if network == "lpips_vgg":
        return LPIPSLoss()
    if teacher is None:
        raise ValueError("the teacher-feature perceptual loss needs a teacher (backbones.TeacherViT)")
    return TeacherPerceptualLoss(teacher)


# ----------------------------------------------------------------------------- adversarial pieces

def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's balance: ‖∇_last nll‖ / (‖∇_last g_loss‖ + 1e-4), clamped to [0, max_weight], detached."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class LeCam(nn.Module):
    """LeCam regularisation (Tseng et al. 2021): EMAs of the mean real / fake logits anchor the
    discriminator, R = E[relu(D(x) − ema_fake)²] + E[relu(ema_real − D(G(z)))²]."""

    ema_real: torch.Tensor  # buffers: scalars
    ema_fake: torch.Tensor

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.ema_real.lerp_(logits_real.mean().float(), 1 - self.decay)
                self.ema_fake.lerp_(logits_fake.mean().float(), 1 - self.decay)
        return (F.relu(logits_real - self.ema_fake).square().mean()
                + F.relu(self.ema_real - logits_fake).square().mean())


# ----------------------------------------------------------------------------- semantic regularisation

def semantic_branch(branches: int) -> int:
    """The index of the semantic branch, the one `semantic_mode="one"` regularises: the last (as the official
    code's `quant_list[-1]`); with two branches the other one, 0, is the detail branch."""
    return branches - 1


def gather_batch(x_B: torch.Tensor) -> torch.Tensor:
    """(B, ...) on this process → (world·B, ...) from every DDP rank in rank order, differentiable (each rank's
    slice passes its gradient back); `x_B` itself on one process. Every rank passes the same shape."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x_B
    return torch.cat(dist_nn.all_gather(x_B), dim=0)


def clip_loss(a_BC: torch.Tensor, b_BC: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows: logits a·bᵀ / temperature, cross-entropy of rows and of columns
    against the diagonal, averaged."""
    logits = a_BC @ b_BC.T / temperature  # (B, B)
    target = torch.arange(len(a_BC), device=a_BC.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class SemanticContrastiveLoss(nn.Module):
    """Symmetric InfoNCE (CLIP-style) between the spatial mean of quantized features and the teacher's CLS
    feature, over the samples that kept all scales (no quantizer dropout).

    mode "one": the semantic branch (`semantic_branch`, the last); "all": every branch; "none": always zero.
    form "normalised": the token mean (one: (B, C); all: the branches concatenated, (B, P·C)) and the CLS
    each through a new linear head to C, l2-normalised, logits / `temperature`, negatives from this process.
    form "official": the CLS through `teacher_proj` (the encoder's own width → code map), the raw token mean
    of the branch, logit scale 1 in float32, negatives gathered over DDP ranks (`gather_batch`); with "all"
    the loss of each branch, averaged. `teacher_proj` is held, not registered: the tokenizer owns it."""

    def __init__(self, mode: str, branches: int, code_dim: int, teacher_dim: int, temperature: float = 0.07,
                 form: str = "normalised", teacher_proj: nn.Module | None = None):
        super().__init__()
        self.mode, self.form, self.temperature = mode, form, temperature
        self.branch = semantic_branch(branches)
        if mode != "none" and form == "normalised":
            self.proj_tokens = nn.Linear(code_dim * (branches if mode == "all" else 1), code_dim)
            self.proj_teacher = nn.Linear(teacher_dim, code_dim)
        if mode != "none" and form == "official" and teacher_proj is None:
            raise ValueError("tokenizer.semantic_loss='official' needs teacher_proj (the tokenizer's to_code)")
        self._teacher_proj: tuple[nn.Module, ...] = () if teacher_proj is None else (teacher_proj,)

    def forward(self, f_hat_BPCkk: torch.Tensor, teacher_BD: torch.Tensor, keep_B: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return f_hat_BPCkk.new_zeros(())
        if self.form == "official":
            return self._official(f_hat_BPCkk, teacher_BD, keep_B)
        if int(keep_B.sum()) < 2:
            return f_hat_BPCkk.new_zeros(())
        f = f_hat_BPCkk[keep_B]
        z = f[:, self.branch] if self.mode == "one" else f.flatten(1, 2)  # (B', C | P·C, K, K)
        z = z.mean(dim=(-1, -2))  # (B', C | P·C)
        a = F.normalize(self.proj_tokens(z.float()), dim=-1)  # (B', C)
        b = F.normalize(self.proj_teacher(teacher_BD[keep_B].float()), dim=-1)  # (B', C)
        return clip_loss(a, b, self.temperature)

    def _official(self, f_hat_BPCkk: torch.Tensor, teacher_BD: torch.Tensor, keep_B: torch.Tensor) -> torch.Tensor:
        t_BC = self._teacher_proj[0](teacher_BD)  # (B, C), the encoder's own projection
        with torch.autocast(f_hat_BPCkk.device.type, enabled=False):
            z_BPC = gather_batch(f_hat_BPCkk.float().mean(dim=(-1, -2)))  # (world·B, P, C)
            t_BC = gather_batch(t_BC.float())  # (world·B, C)
            keep = gather_batch(keep_B.float()) > 0.5  # (world·B,)
            if int(keep.sum()) < 2:
                return f_hat_BPCkk.new_zeros(())
            z_BPC, t_BC = z_BPC[keep], t_BC[keep]
            branches = [self.branch] if self.mode == "one" else range(z_BPC.shape[1])
            return torch.stack([clip_loss(z_BPC[:, p], t_BC) for p in branches]).mean()


# ----------------------------------------------------------------------------- the trainer's objective

def _num(x: torch.Tensor) -> float:
    return float(x.detach())


class TokenizerObjective(Objective):
    """The tokenizer's training objective in the trainer protocol (CONTRACTS.md).

    phases: ("model", "disc"), or ("model",) with `discriminator="none"`. The model phase returns the
    tokenizer loss and caches the detached reconstruction; the disc phase (same step, same batch)
    trains the discriminator on it. Before `tokenizer.disc_start` the adversarial terms are off and
    the disc phase returns a zero loss. `ema_target` is the tokenizer.

    teacher: frozen teacher (module docstring), needed when semantic_mode != "none", for the
    teacher-feature perceptual loss and as the default "dino" discriminator backbone.
    perceptual: module (recon, target) -> scalar, needed when perceptual_weight > 0 (`build_perceptual`).
    disc_backbone: frozen backbone of the "dino" discriminator (defaults to the teacher).
    Each frozen network is registered once here (shared ones are only held by the losses that use them),
    so `.to(device)` moves it and a checkpoint never stores the same tensor twice.
    """

    def __init__(self, cfg: Config, tokenizer: ImageFolderTokenizer, teacher: TeacherViT | None = None,
                 perceptual: nn.Module | None = None, disc_backbone: TeacherViT | None = None):
        super().__init__()
        t = cfg.tokenizer
        self.t = t
        self.tokenizer = tokenizer
        if t.semantic_mode != "none" and t.semantic_weight > 0 and teacher is None:
            raise ValueError(f"tokenizer.semantic_mode={t.semantic_mode!r} needs a frozen teacher")
        if t.perceptual_weight > 0 and perceptual is None:
            raise ValueError("tokenizer.perceptual_weight > 0 needs a perceptual module (losses.build_perceptual)")
        self.teacher = teacher
        self.perceptual = perceptual
        semantic_mode = t.semantic_mode if t.semantic_weight > 0 else "none"
        if (semantic_mode != "none" and t.semantic_loss == "official" and teacher is not None
                and teacher.width != t.encoder.width):
            raise ValueError(f"tokenizer.semantic_loss='official' maps the teacher's CLS through the encoder's "
                             f"to_code: the teacher's width {teacher.width} must equal tokenizer.encoder.width "
                             f"{t.encoder.width}")
        self.semantic = SemanticContrastiveLoss(
            semantic_mode, cfg.quantizer.branches, cfg.quantizer.code_dim, teacher.width if teacher is not None else 1,
            t.semantic_temperature, t.semantic_loss, tokenizer.to_code)
        self.disc_backbone = disc_backbone if disc_backbone is not teacher else None
        self.discriminator = build_discriminator(cfg, disc_backbone if disc_backbone is not None else teacher)
        self.lecam = LeCam()
        self.phases = ("model",) if self.discriminator is None else ("model", "disc")
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def ema_target(self) -> ImageFolderTokenizer:
        return self.tokenizer

    def train(self, mode: bool = True) -> TokenizerObjective:
        super().train(mode)
        for frozen in (self.teacher, self.perceptual, self.disc_backbone):
            if frozen is not None:
                frozen.eval()
        return self

    def parameters_for(self, phase: str) -> list[nn.Parameter]:
        if phase == "model":
            mods = [self.tokenizer, self.semantic]
        elif phase == "disc" and self.discriminator is not None:
            mods = [self.discriminator]
        else:
            raise ValueError(f"unknown phase {phase!r}; phases are {self.phases}")
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def adversarial_on(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.t.disc_start

    def adv_ramp(self, step: int) -> float:
        """Fraction of `adv_weight` the tokenizer's adversarial term gets at `step` (the discriminator trains
        from `disc_start` on regardless): 0 → 1 linearly over `adv_ramp_steps`."""
        return min(1.0, (step - self.t.disc_start + 1) / self.t.adv_ramp_steps) if self.t.adv_ramp_steps else 1.0

    def forward(self, batch, phase: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch[0]
        if phase == "model":
            return self._model_loss(images, step)
        if phase == "disc":
            return self._disc_loss(step)
        raise ValueError(f"unknown phase {phase!r}; phases are {self.phases}")

    def _model_loss(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        t = self.t
        out = self.tokenizer(images)
        recon = out.recon.float()
        l2 = F.mse_loss(recon, images.float())
        nll = t.recon_weight * l2
        logs = {"recon_l2": _num(l2), "vq": _num(out.vq_loss),
                "dropped_frac": float((~out.undropped).float().mean())}
        teacher, perceptual = self.teacher, self.perceptual if t.perceptual_weight > 0 else None
        target_feats = cls_BD = None
        if (teacher is not None and self.semantic.mode != "none" and isinstance(perceptual, TeacherPerceptualLoss)
                and perceptual.teacher is teacher):
            with torch.no_grad():  # one teacher pass on the real images serves both terms
                target_feats, cls_BD = teacher.block_features_and_cls(images.float(), perceptual.depths)
        if perceptual is not None:
            perc = (perceptual(recon, images.float(), target_feats) if target_feats is not None
                    else perceptual(recon, images.float()))
            nll = nll + t.perceptual_weight * perc
            logs["perceptual"] = _num(perc)
        loss = nll + t.vq_weight * out.vq_loss
        if self.semantic.mode != "none":
            if cls_BD is None:
                assert teacher is not None  # __init__ refuses a semantic loss without one
                with torch.no_grad():
                    cls_BD = teacher(images)
            sem = self.semantic(out.f_hat, cls_BD, self._semantic_rows(out))
            loss = loss + t.semantic_weight * sem
            logs["semantic"] = _num(sem)
        disc = self.discriminator
        if disc is not None and self.adversarial_on(step) and t.adv_weight > 0:
            trainable = [p for p in disc.parameters() if p.requires_grad]
            for p in trainable:  # no discriminator gradients from the model phase
                p.requires_grad_(False)
            try:
                g = hinge_g_loss(disc(recon))
            finally:
                for p in trainable:
                    p.requires_grad_(True)
            w = (adaptive_weight(nll, g, self.tokenizer.last_layer) if self.training and t.adaptive_adv_weight
                 else recon.new_ones(()))
            loss = loss + t.adv_weight * self.adv_ramp(step) * w * g
            logs |= {"adv_g": _num(g), "adaptive_w": _num(w)}
        self._cache = (images.detach(), recon.detach())
        return loss, logs

    def _semantic_rows(self, out: TokenizerOutput) -> torch.Tensor:
        """(B,) bool: the samples the semantic loss reads: those that kept every scale; with
        `quantizer.dropout_pick="first"` in training, every sample after the first ⌊p·B⌋ (as the official code
        leaves those out whatever number of scales they drew)."""
        q = self.tokenizer.quantizer
        if self.training and q.cfg.dropout_pick == "first":
            return ~q.first_rows(len(out.n_scales), out.n_scales.device)
        return out.undropped

    def _disc_loss(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self._cache is None:
            raise RuntimeError("the disc phase needs the reconstruction of the model phase of the same step; "
                               "run phase 'model' first")
        real, fake = self._cache
        self._cache = None
        disc = self.discriminator
        if disc is None or not self.adversarial_on(step):
            return torch.zeros((), device=real.device, requires_grad=True), {}
        logits_real = disc(real)
        logits_fake = disc(fake)
        d = hinge_d_loss(logits_real, logits_fake)
        reg = self.lecam(logits_real, logits_fake)
        logs = {"disc_hinge": _num(d), "lecam": _num(reg), "logits_real": _num(logits_real.mean()),
                "logits_fake": _num(logits_fake.mean())}
        return d + self.t.lecam_weight * reg, logs
