"""Dataclass configs, the named profiles, validation, overrides and the role of every field.

Every variant in the paper's tables is a field value of these configs, never a code branch. A field's
annotation is its type check: choice fields are `Literal[...]`, and one generic walker (`check_types`)
checks every field against its annotation; `validate` adds the ranges and the cross-field rules. A field's
role (`ROLES`: what it is for) decides whether it names a trained run (`run_definition`). The module
imports nothing of ours and does no work at import time beyond defining the presets.
"""
from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard, Union, get_args, get_origin, get_type_hints

import yaml

PAPER_SCALES = [1, 1, 2, 3, 3, 4, 5, 6, 8, 11]
VAR_SCALES = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


# ----------------------------------------------------------------------------- what each field is for

# Every field has one role. A field declares it in its metadata (`_role`); a field that does not has the
# role of the nearest enclosing field that does (`Config.tokenizer` declares TOKENIZER, so every field of
# `TokenizerConfig`, a new one too, defines the tokenizer unless it says otherwise). `role(path)` answers,
# `run_definition` and `without_roles` select by it.
TOKENIZER = "tokenizer"
GENERATOR = "generator"
EXECUTION = "execution"
BOOKKEEPING = "bookkeeping"
SAMPLING = "sampling"
EVALUATION = "evaluation"
ROLES = {
    TOKENIZER: "defines the trained tokenizer (and so every generator trained on its tokens): names its run",
    GENERATOR: "defines the trained generator: names its run",
    EXECUTION: "how a step executes (device, threads, workers, compilation), not what it computes",
    BOOKKEEPING: "where and when runs log and save, never what they train",
    SAMPLING: "how a trained generator samples: read when sampling, never when training",
    EVALUATION: "what is measured and how (metric networks, sample counts, the study's budget): never read "
                "by the training of a tokenizer or generator",
}
RUN_ROLES = {"tokenizer": (TOKENIZER,), "generator": (TOKENIZER, GENERATOR)}  # the roles that define a run


def _role(role: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field declaring its role (a key of `ROLES`): `ckpt_every: int = _role(BOOKKEEPING, 500)`."""
    return field(default=default, default_factory=factory, metadata={"role": role})


Label = Literal["category", "subcategory"]  # emoji labels: category (9) | subcategory (≈99, secondary)


def scaled_schedule(last: int, reference: list[int] = PAPER_SCALES) -> list[int]:
    """The paper's scale schedule reshaped to end at `last`, keeping its length (10 scales).

    Each scale is `reference[i] * last / reference[-1]` rounded, at least 1, never decreasing.
    """
    out: list[int] = []
    for s in reference:
        v = max(1, round(s * last / reference[-1]))
        out.append(max(v, out[-1]) if out else v)
    out[-1] = last
    return out


def token_count(scales: list[int]) -> int:
    """Tokens per branch for a scale schedule: the sum of squares."""
    return sum(s * s for s in scales)


@dataclass
class DataConfig:
    name: Literal["emoji", "imagenet", "folder"] = "emoji"  # folder: any ImageFolder tree at `root`
    root: str = "data/emoji"  # ImageFolder tree with train/ and val/; imagenet reads $IMAGEFOLDER_IMAGENET
    resolution: int = 32  # images are resized (bicubic) and centre-cropped to this size
    label: Label = "category"  # subcategory: for probes and references
    skip_corrupt: bool = False  # False: a corrupt image raises; True: counted, printed, recorded
    in_memory: bool = True  # decode once and keep uint8 tensors in RAM (emoji-sized sets)
    max_per_split: int | None = None  # cap on images per split (smoke profile); None = all
    num_workers: int = 0  # DataLoader workers for on-disk data sets
    hflip: bool = False  # random horizontal flip in training (off for emoji: glyphs are oriented)
    background: str = "white"  # under transparent pixels (RGBA, LA, P): a PIL colour or #rrggbb; emoji use white


@dataclass
class QuantizerConfig:
    scales: list[int] = field(default_factory=lambda: list(PAPER_SCALES))  # Tables 1, 3, 7
    branches: int = 2  # P, product-quantization branches (Tables 3, 5c, 9)
    codebook_size: int = 4096  # entries per branch codebook (Table 8)
    code_dim: int = 32  # channels of one code
    lookup: Literal["cosine", "l2"] = "cosine"  # cosine: official ImageFolder; l2: VAR
    beta: float = 0.25  # commitment weight
    phi_gamma: float = 0.5  # φ(h) = (1-γ)h + γ conv3x3(h)
    phi_convs: int = 4  # φ convs shared across scales by relative depth
    dropout_p: float = 0.1  # quantizer dropout: fraction of the batch truncated (Table 5b)
    dropout_n_start: int = 3  # truncation keeps n ∈ [N_start, S] scales (Table 5a)
    # which samples dropout truncates: bernoulli: each with probability p; first: the first ⌊p·B⌋ of each
    # per-process batch (official)
    dropout_pick: Literal["bernoulli", "first"] = "bernoulli"
    # the β-weighted commitment term over scales: mean: averaged; sum: summed (official); the codebook term is
    # averaged either way
    commitment: Literal["mean", "sum"] = "mean"
    # data: residuals of the first training batch (fast on CPU); uniform: official, uniform in ±1/V, l2-normalised
    codebook_init: Literal["data", "uniform"] = "data"
    # φ convs start as the identity; default: PyTorch's (official)
    phi_init: Literal["identity", "default"] = "identity"


@dataclass
class ViTConfig:
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    drop_path: float = 0.0  # stochastic depth, linear over the blocks up to this rate (official tokenizer: 0.1)


@dataclass
class TokenizerConfig:
    encoder: ViTConfig = field(default_factory=ViTConfig)
    decoder: ViTConfig = field(default_factory=ViTConfig)
    # what is quantized: query: ImageFolder K×K query tokens; feature_map: VAR-style patch grid
    token_source: Literal["query", "feature_map"] = "query"
    query_window: int | None = None  # None: queries attend to all tokens (paper); r: only within r cells (README)
    # a second cls token (the decoder's own, no new parameter) before the code tokens (official)
    decoder_code_cls: bool = True
    encoder_init: Literal["pretrained", "random"] = "pretrained"  # pretrained: DINOv2 / teacher
    encoder_tuning: Literal["full", "lora", "linear"] = "full"  # Table 2
    lora_rank: int = 8
    semantic_mode: Literal["none", "one", "all"] = "one"  # branches regularised by the teacher (Tables 3, 9)
    semantic_weight: float = 0.1  # λ_clip (Table 5d)
    semantic_temperature: float = 0.07  # τ of the "normalised" semantic loss
    # the semantic InfoNCE: normalised: two new linear heads, l2-normalised, logits / τ, local batch; official: the
    # teacher's CLS through the encoder's own to_code, raw token means, logit scale 1, negatives from every DDP rank
    semantic_loss: Literal["normalised", "official"] = "normalised"
    recon_weight: float = 1.0
    perceptual_weight: float = 1.0
    # teacher: feature distance (small profiles); lpips_vgg: paper
    perceptual_loss: Literal["teacher", "lpips_vgg"] = "teacher"
    vq_weight: float = 1.0
    adv_weight: float = 0.5
    # VQGAN's ‖∇nll‖/‖∇adv‖ at the last decoder layer scales the adversarial term (official MSVR10P2: on)
    adaptive_adv_weight: bool = True
    lecam_weight: float = 0.001
    disc_start: int = 2000  # generator step at which the adversarial loss starts
    # the tokenizer's adversarial weight ramps from 0 to adv_weight over these steps after disc_start
    adv_ramp_steps: int = 0
    discriminator: Literal["none", "patchgan", "dino"] = "patchgan"  # Table 3 row 7
    # frozen semantic teacher and encoder init; reference: small profiles
    teacher_network: Literal["reference", "dinov2_vitb14"] = "reference"
    # None: the teacher as trained (DINOv2: patch 14 at 518 px); p: re-patched to p at the data resolution
    # (official: 16 at 256)
    teacher_patch_size: int | None = None
    # frozen backbone of the "dino" discriminator; dino_vits16: DINO-v1 ViT-S/16 at 224 (official)
    disc_backbone: Literal["reference", "dinov2_vits14", "dino_vits16"] = "reference"
    # heads of the "dino" discriminator: conv2d: per depth, 1×1 conv, LeakyReLU, 3×3 conv on the patch map;
    # official: per depth and on the embedded input, spectral-norm conv1d + local batch norm over the patch tokens
    # plus the cls token, and DiffAugment's cutout at 0.2 of the side (0.5 with conv2d)
    disc_heads: Literal["conv2d", "official"] = "conv2d"
    disc_width: int = 64
    disc_layers: int = 3
    disc_norm: Literal["spectral", "none"] = "spectral"  # weight normalisation of the PatchGAN convs


@dataclass
class GeneratorConfig:
    # the sequence (layouts.py): folded: ImageFolder; unfolded: branches as separate positions; raster: next-token
    layout: Literal["folded", "unfolded", "raster"] = "folded"
    depth: int = 17
    width: int = 1088
    heads: int = 17
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth of the last block, linear from 0 at the first (official: 0.1·depth/24)
    # l2_norm: VAR's (official): q, k l2-normalised per head, q × exp(min(s_h, ln 100)) with a learned per-head
    # log-scale s_h (from ln 4), softmax scale 1, q and v biases only; scaled_dot: 1/√d, full qkv bias
    attention: Literal["l2_norm", "scaled_dot"] = "l2_norm"
    class_dropout: float = 0.1  # class label dropped for classifier-free guidance
    cfg_scale: float = _role(SAMPLING, 3.25)  # guidance at the last scale, ramped linearly over scales
    top_k: int = _role(SAMPLING, 750)
    top_p: float = _role(SAMPLING, 0.95)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64  # global batch, split across DDP ranks
    lr: float = 1e-4
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.999  # 0 disables EMA
    # auto: bf16 on CUDA, off on CPU; bf16 on CPU: AMX bf16 matmuls (train.forward_precision)
    amp: Literal["auto", "bf16", "off"] = "auto"
    # torch.compile (inductor) of the training forward; compile time counts in `make bench`
    compile: bool = _role(EXECUTION, False)
    ckpt_every: int = _role(BOOKKEEPING, 500)
    keep_ckpts: int = _role(BOOKKEEPING, 2)
    log_every: int = _role(BOOKKEEPING, 25)


@dataclass
class ReferenceNetConfig:
    """A small classifier trained on the data set: the teacher or the evaluator."""

    arch: Literal["vit", "convnet"] = "vit"  # vit: teacher (the encoder's width, depth and patch); convnet: evaluator
    width: int = 192
    depth: int = 4
    heads: int = 3
    patch_size: int = 4
    labels: list[Label] = field(default_factory=lambda: ["subcategory"])  # one head per label
    seed: int = 1
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=128, lr=1e-3,
                                                                   warmup_steps=100, ema_decay=0.0,
                                                                   ckpt_every=500))


@dataclass
class EvalConfig:
    # evaluator: small profiles; inception: paper (inception-v3-compat)
    fid_network: Literal["evaluator", "inception"] = "evaluator"
    # train: gFID against the train split; adm: also against the ADM suite's VIRTUAL_imagenet256_labeled.npz (paper)
    fid_reference: Literal["train", "adm"] = "train"
    # the reported perceptual distance's network (the training loss: tokenizer.perceptual_loss)
    perceptual_network: Literal["teacher", "lpips_vgg"] = "teacher"
    num_samples: int = 1000  # generated images for gFID / IS / precision / recall
    num_recon: int = 1000  # val images for rFID / PSNR
    num_reference: int | None = None  # train images that samples are scored against, spread over classes; None = all
    # the classes samples are generated for: "balanced", n / classes each (the paper's 50 per ImageNet class);
    # "reference", in proportion to the classes of the reference (train) images they are scored against
    sample_labels: Literal["balanced", "reference"] = "balanced"
    batch_size: int = 100
    kid_subset_size: int = 100
    # reconstruction and sampling (not the metric network), as the trainer's
    amp: Literal["auto", "bf16", "off"] = "auto"
    # sampling steps through torch.compile over a static KV cache (CUDA graphs on a GPU; `Generator.sample`);
    # off in every profile (`make bench` times it against eager)
    compile_sampler: bool = _role(EXECUTION, False)


@dataclass
class StudyConfig:
    """The budget of each variant in the ablation tables (every variant of one table gets the same)."""

    tokenizer_steps: int = 20_000  # training steps of each ablation tokenizer
    generator_steps: int = 20_000  # training steps of each ablation generator
    num_samples: int = 10_000  # generated images per variant for gFID / IS
    seeds: list[int] = field(default_factory=lambda: [0])  # seeds of the key ablations (spread reported)
    budget_check_seeds: int = 1  # the first seeds whose generators `budget` also trains 4× longer


@dataclass
class Config:
    profile: str = _role(TOKENIZER, "paper")  # also selects the reference networks' files (`teacher-<profile>`)
    seed: int = _role(TOKENIZER, 0)  # of the tokenizer's and the generator's training
    device: Literal["auto", "cpu", "cuda"] = _role(EXECUTION, "auto")
    # torch CPU threads (0 = torch's default); 1 is fastest for the smoke profile's tiny ops
    threads: int = _role(EXECUTION, 0)
    run_dir: str = _role(BOOKKEEPING, "runs")  # checkpoints and caches (git-ignored)
    data: DataConfig = _role(TOKENIZER, factory=DataConfig)
    quantizer: QuantizerConfig = _role(TOKENIZER, factory=QuantizerConfig)
    tokenizer: TokenizerConfig = _role(TOKENIZER, factory=TokenizerConfig)
    generator: GeneratorConfig = _role(GENERATOR, factory=GeneratorConfig)
    train_tokenizer: TrainConfig = _role(TOKENIZER, factory=TrainConfig)
    train_generator: TrainConfig = _role(GENERATOR, factory=TrainConfig)
    teacher: ReferenceNetConfig = _role(TOKENIZER, factory=ReferenceNetConfig)
    evaluator: ReferenceNetConfig = _role(EVALUATION, factory=lambda: ReferenceNetConfig(
        arch="convnet", width=32, depth=3, labels=["category", "subcategory"], seed=2))
    evaluation: EvalConfig = _role(EVALUATION, factory=EvalConfig)
    study: StudyConfig = _role(EVALUATION, factory=StudyConfig)

    @property
    def grid(self) -> int:
        """K, the side of the quantized token grid: the last scale."""
        return self.quantizer.scales[-1]

    @property
    def patch_grid(self) -> int:
        """The side of the encoder's patch grid: resolution // encoder patch size."""
        return self.data.resolution // self.tokenizer.encoder.patch_size

    @property
    def tokens_per_branch(self) -> int:
        return token_count(self.quantizer.scales)


# ----------------------------------------------------------------------------- profiles

def _paper() -> Config:
    """The paper's configuration (§4.1): ImageNet 256 px, ViT-B, 2×4096 codes of dim 32, 286 tokens, with the
    official release's training choices (lxa9867/ImageFolder, MSVR10P2-4096 and VAR-d17) wherever the paper's
    text allows either: uniform codebooks, φ convs with PyTorch's init, the first ⌊0.1·B⌋ samples dropped, the
    commitment summed over scales, the official semantic loss on the last branch with DINOv2 re-patched to 16,
    stochastic depth 0.1 (tokenizer) and 0.1·17/24 (generator), and the DINO-v1 ViT-S/16 discriminator with its
    official heads. Not taken (README, Profiles, says why): the DINOv2-initialised decoder and VAR's weight init."""
    vit = ViTConfig(drop_path=0.1)
    return Config(
        profile="paper",
        data=DataConfig(name="imagenet", root="$IMAGEFOLDER_IMAGENET", resolution=256, in_memory=False,
                        num_workers=8, hflip=True),
        quantizer=QuantizerConfig(codebook_init="uniform", phi_init="default", dropout_pick="first", commitment="sum"),
        tokenizer=TokenizerConfig(encoder=vit, decoder=copy.deepcopy(vit),
                                  semantic_loss="official", teacher_network="dinov2_vitb14", teacher_patch_size=16,
                                  discriminator="dino", disc_backbone="dino_vits16", disc_heads="official",
                                  perceptual_loss="lpips_vgg"),
        generator=GeneratorConfig(drop_path=0.1 * 17 / 24),
        train_tokenizer=TrainConfig(steps=200_000, batch_size=256, lr=1e-4, warmup_steps=5000,
                                    weight_decay=0.05, ckpt_every=5000, ema_decay=0.9999),
        train_generator=TrainConfig(steps=250_000, batch_size=768, lr=8e-5 * 768 / 256, warmup_steps=5000,
                                    weight_decay=0.05, grad_clip=2.0, ckpt_every=5000, ema_decay=0.0),
        evaluation=EvalConfig(fid_network="inception", perceptual_network="lpips_vgg", fid_reference="adm",
                              num_samples=50_000, num_recon=50_000, num_reference=50_000, batch_size=250,
                              kid_subset_size=1000),
    )


def _small(profile: str, resolution: int, patch: int, width: int, depth: int, heads: int,
           codebook: int, gen_depth: int, gen_width: int) -> Config:
    """A small profile keeping the paper's ratios: 10 scales shaped like the paper's, 2 branches,
    the same loss weights, dropout p and N_start; the teacher matches the encoder's shape. Three choices
    differ from the paper's (README, Profiles, says why): each query attends to its own cell only
    (`query_window=0`), the adversarial weight is 0.05 (the paper's 0.5), and samples get their classes in
    the train split's proportions."""
    grid = resolution // patch
    vit = ViTConfig(width=width, depth=depth, heads=heads, patch_size=patch)
    return Config(
        profile=profile,
        data=DataConfig(name="emoji", root="data/emoji", resolution=resolution),
        quantizer=QuantizerConfig(scales=scaled_schedule(grid), codebook_size=codebook, code_dim=32),
        tokenizer=TokenizerConfig(encoder=vit, decoder=copy.deepcopy(vit), query_window=0, discriminator="patchgan",
                                  disc_width=32, disc_layers=2, disc_start=1000, adv_weight=0.05),
        generator=GeneratorConfig(depth=gen_depth, width=gen_width, heads=max(1, gen_width // 64),
                                  top_k=max(1, codebook // 4)),
        train_tokenizer=TrainConfig(steps=3000, batch_size=32, lr=3e-3, warmup_steps=50, grad_clip=1.0,
                                    ema_decay=0.999, ckpt_every=500),
        train_generator=TrainConfig(steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, grad_clip=2.0,
                                    ema_decay=0.0, ckpt_every=500),
        teacher=ReferenceNetConfig(arch="vit", width=width, depth=depth, heads=heads, patch_size=patch,
                                   labels=["subcategory"], seed=1),
        evaluator=ReferenceNetConfig(arch="convnet", width=32, depth=3, labels=["category", "subcategory"],
                                     seed=2),
        evaluation=EvalConfig(num_samples=1000, num_recon=704, batch_size=100, kid_subset_size=100,
                              sample_labels="reference"),
        study=StudyConfig(tokenizer_steps=800, generator_steps=800, num_samples=500, seeds=[0]),
    )


def _smoke() -> Config:
    """Seconds per notebook: 16 px, a tiny ViT, a few training steps, a few dozen images."""
    cfg = _small("smoke", resolution=16, patch=4, width=32, depth=1, heads=2, codebook=64,
                 gen_depth=1, gen_width=32)
    cfg.data.max_per_split = 48
    cfg.threads = 1
    cfg.tokenizer.disc_start = 2
    for t in (cfg.train_tokenizer, cfg.train_generator):
        t.steps, t.batch_size, t.warmup_steps, t.ckpt_every, t.log_every = 6, 8, 2, 3, 2
    for ref in (cfg.teacher, cfg.evaluator):
        ref.train = TrainConfig(steps=6, batch_size=16, lr=1e-3, warmup_steps=2, ema_decay=0.0,
                                ckpt_every=3, log_every=2)
    cfg.evaluator.width = 16
    cfg.evaluation = EvalConfig(num_samples=32, num_recon=32, batch_size=16, kid_subset_size=8,
                                sample_labels="reference")
    cfg.study = StudyConfig(tokenizer_steps=4, generator_steps=4, num_samples=16, seeds=[0, 1], budget_check_seeds=2)
    return cfg


def _cpu() -> Config:
    """2 CPU cores, 32 px emoji, one torch thread per process so that `make -j2 reproduce` runs two
    notebooks side by side; both trainings under CPU bf16 autocast, the generator's compiled as well, and
    evaluation's reconstruction and sampling under bf16 (the metric networks in float32). README, Profiles,
    gives the timings and checks behind these choices and behind the batch, learning rate, EMA, adversarial
    start and study budget below."""
    cfg = _small("cpu", resolution=32, patch=4, width=128, depth=3, heads=4, codebook=1024,
                 gen_depth=4, gen_width=192)
    cfg.threads = 1
    cfg.train_tokenizer = TrainConfig(steps=2600, batch_size=16, lr=2e-3, warmup_steps=50, grad_clip=1.0,
                                      ema_decay=0.997, ckpt_every=200, amp="bf16")
    cfg.tokenizer.disc_start = 1560
    cfg.train_generator = TrainConfig(steps=2000, batch_size=32, lr=1e-3, warmup_steps=50, grad_clip=2.0,
                                      ema_decay=0.0, ckpt_every=500, keep_ckpts=10, amp="bf16", compile=True)
    cfg.evaluation.amp = "bf16"
    cfg.study = StudyConfig(tokenizer_steps=500, generator_steps=250, num_samples=500, seeds=[0, 1, 2],
                            budget_check_seeds=2)
    return cfg


def _gpu() -> Config:
    """One GPU, the strong-evidence profile: 64 px emoji, five seeds per ablation, and study generators trained
    two thirds as long as the main one, so that they draw their labels' classes (README, Profiles: cost and
    rationale)."""
    cfg = _small("gpu", resolution=64, patch=4, width=256, depth=6, heads=4, codebook=4096, gen_depth=12,
                 gen_width=512)
    cfg.study = StudyConfig(tokenizer_steps=1500, generator_steps=2000, num_samples=1000, seeds=[0, 1, 2, 3, 4],
                            budget_check_seeds=2)
    return cfg


PROFILES = {
    "smoke": _smoke,
    "cpu": _cpu,
    "gpu": _gpu,
    "paper": _paper,
}


def profile(name: str, overrides: dict[str, Any] | None = None) -> Config:
    """The named profile with dotted-key overrides applied, validated."""
    if name not in PROFILES:
        raise ConfigError(f"profile: unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    cfg = PROFILES[name]()
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- dicts, overrides

def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], cls: type = Config, path: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys and values of the wrong type raise,
    naming the field."""
    obj = _build(data, cls, path)
    check_types(obj, path)
    return obj


def _build(data: dict[str, Any], cls: type, path: str) -> Any:
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{path}{key}"
        if key not in hints:
            raise _unknown_field(name, value, hints)
        nested = _is_section(hints[key]) and isinstance(value, dict)
        kwargs[key] = _build(value, hints[key], name + ".") if nested else value
    return cls(**kwargs)


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy with `{"quantizer.scales": [...], "seed": 3}`-style overrides applied, each checked
    against its field's type (ConfigError naming the field).

    String values (from the command line) are parsed as YAML unless the field is text, so `"[1,2,3]"`
    becomes a list. Numbers are converted where nothing is lost: an int or `"3e-3"` (a string to YAML)
    for a float field; an integral float such as `1e3` or `1000.0` for an int field becomes 1000, while
    `2.7` is refused. A bool field takes only true / false (not YAML 1.1's yes / no / on / off).
    """
    cfg = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for i, part in enumerate(parents):
            if not hasattr(node, part) or not dataclasses.is_dataclass(getattr(node, part)):
                raise ConfigError(f"{'.'.join(parents[:i + 1])}: unknown config section in override {dotted!r}")
            node = getattr(node, part)
        hints = _hints(type(node))
        if leaf not in hints:
            raise _unknown_field(dotted, value, hints)
        hint = hints[leaf]
        value = _parse(value, hint, dotted)
        if _is_section(hint) and isinstance(value, dict):
            value = from_dict(value, hint, dotted + ".")
        else:
            check_value(value, hint, dotted)
        setattr(node, leaf, value)
    return cfg


def _parse(value: Any, hint: Any, name: str) -> Any:
    """An override value read as its field's type reads it (see `apply_overrides`); not yet checked."""
    base = _not_none(hint)
    text = base is str or get_origin(base) is Literal  # every choice is a string
    yes_no = base is bool and isinstance(value, str) and value.lower() not in ("true", "false")
    if isinstance(value, str) and not text and not yes_no:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{name}: expected {_describe(hint)}, got {value!r} (not valid YAML)") from None
    if isinstance(value, bool):
        return value
    try:
        if base is float and isinstance(value, (int, str)):
            return float(value)
        if base is int and isinstance(value, (float, str)) and float(value).is_integer():
            return int(float(value))
    except ValueError:
        pass  # not a number: the type check names it
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=[1,2]"]` → `{"a.b": "1", "c": "[1,2]"}` (values parsed later by type)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def diff(a: dict[str, Any], b: dict[str, Any], path: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as `key: a → b` lines."""
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            lines += diff(va, vb, f"{path}{key}.")
        elif va != vb:
            lines.append(f"{path}{key}: {va!r} → {vb!r}")
    return lines


# ----------------------------------------------------------------------------- types

_SCALAR_NAMES = {str: "a string", int: "an int", float: "a number", bool: "true or false", type(None): "None"}


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Field name → resolved annotation of a config dataclass (annotations are strings here), cached per class."""
    if cls not in _HINTS:
        hints = get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def _is_section(hint: Any) -> TypeGuard[type]:
    """Whether an annotation is a config dataclass (a nested section)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _not_none(hint: Any) -> Any:
    """`X` for `X | None`, else the hint itself."""
    if get_origin(hint) in (Union, types.UnionType):
        (inner,) = [h for h in get_args(hint) if h is not type(None)]
        return inner
    return hint


def check_types(obj: Any, path: str = "") -> None:
    """Check every field of a config dataclass, nested ones too, against its annotation."""
    for name, hint in _hints(type(obj)).items():
        check_value(getattr(obj, name), hint, f"{path}{name}")


def check_value(value: Any, hint: Any, name: str) -> None:
    """Raise `ConfigError("name: expected <type>, got <value>")` unless `value` has the annotated type.

    Annotations: str, int (not bool), float (ints too), bool, `Literal[...]` choices, `X | None`,
    `list[X]` (each item checked as `name[i]`) and config dataclasses."""
    if _is_section(hint):
        if not isinstance(value, hint):
            raise _type_error(name, hint, value)
        check_types(value, name + ".")
    elif get_origin(hint) is list:
        if not isinstance(value, list):
            raise _type_error(name, hint, value)
        for i, item in enumerate(value):
            check_value(item, get_args(hint)[0], f"{name}[{i}]")
    elif not _is_instance(value, hint):
        raise _type_error(name, hint, value)


def _is_instance(value: Any, hint: Any) -> bool:
    """`value` fits a scalar annotation: a plain type, a Literal or a union of them."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_is_instance(value, h) for h in get_args(hint))
    if origin is Literal:
        return isinstance(value, str) and value in get_args(hint)
    if hint not in _SCALAR_NAMES:
        raise TypeError(f"config annotation {hint!r} is not supported by check_value")
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in get_args(hint))
    if origin is Literal:
        return f"one of {get_args(hint)}"
    if origin is list:
        return "a list"
    if _is_section(hint):
        return f"a {hint.__name__} section"
    return _SCALAR_NAMES[hint]


def _type_error(name: str, hint: Any, value: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {_describe(hint)}, got {value!r}")


def _unknown_field(name: str, value: Any, known: dict[str, Any]) -> ConfigError:
    return ConfigError(f"{name}: unknown field (given {value!r}; known: {', '.join(sorted(known))})")


# ----------------------------------------------------------------------------- roles

def role(path: str, cls: type | None = None) -> str:
    """The role (`ROLES`) of the field at dotted `path` of `cls` (default `Config`), e.g.
    `role("train_tokenizer.compile") == EXECUTION`: its own declaration, else its nearest enclosing field's."""
    node, found = cls or Config, None
    for i, part in enumerate(path.split(".")):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            raise ConfigError(f"{path}: unknown config field ({'.'.join(path.split('.')[:i + 1])})")
        found = fields[part].metadata.get("role", found)
        node = _hints(node)[part]
    if found is None:
        raise ConfigError(f"{path}: no role declared for it or an enclosing field (config.ROLES)")
    return found


def field_roles(cls: type | None = None) -> dict[str, str]:
    """Dotted path → role of every leaf field of `cls` (default `Config`), nested sections walked."""
    root = cls or Config

    def leaves(node: Any, path: str) -> list[str]:
        return [leaf for name, hint in _hints(node).items()
                for leaf in (leaves(hint, f"{path}{name}.") if _is_section(hint) else [f"{path}{name}"])]

    return {path: role(path, root) for path in leaves(root, "")}


def run_definition(cfg: Config, model: Literal["tokenizer", "generator"]) -> dict[str, Any]:
    """The fields of `cfg` whose role defines a trained `model` (`RUN_ROLES`), as nested plain data: what
    names its run (with the model-code version, `pipeline.run_definition`)."""
    keep = RUN_ROLES[model]
    return _select(cfg, lambda r: r in keep, None)


def without_roles(node: Any, roles: tuple[str, ...] = (BOOKKEEPING, EXECUTION)) -> dict[str, Any]:
    """A config section as nested plain data without its fields that declare one of `roles` (themselves or
    through an enclosing field of the section), e.g. a reference network's run definition."""
    return _select(node, lambda r: r not in roles, None)


def _select(node: Any, keep: Callable[[str | None], bool], inherited: str | None) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(node):
        r = f.metadata.get("role", inherited)
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            section = _select(value, keep, r)
            if section:
                out[f.name] = section
        elif keep(r):
            out[f.name] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- validation

def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def _need(ok: bool, name: str, value: Any, rule: str) -> None:
    """A range rule on one field: `name: must be <rule>, got <value>`."""
    _check(ok, name, f"must be {rule}, got {value!r}")


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first bad field: its type (`check_types`), then ranges and the
    rules between fields."""
    check_types(cfg)
    _check(cfg.profile in PROFILES, "profile", f"unknown profile {cfg.profile!r}; choose one of {sorted(PROFILES)}")
    _need(cfg.threads >= 0, "threads", cfg.threads, "≥ 0 (0 = torch's default)")
    d = cfg.data
    _need(d.resolution > 0, "data.resolution", d.resolution, "positive")
    _need(d.max_per_split is None or d.max_per_split > 0, "data.max_per_split", d.max_per_split, "positive or None")

    q = cfg.quantizer
    s = q.scales
    _need(len(s) >= 1 and all(x >= 1 for x in s), "quantizer.scales", s, "a non-empty list of positive integers")
    _need(all(a <= b for a, b in zip(s, s[1:])), "quantizer.scales", s, "non-decreasing")
    _need(q.branches >= 1, "quantizer.branches", q.branches, "at least 1 (P)")
    _need(q.codebook_size >= 2, "quantizer.codebook_size", q.codebook_size, "at least 2")
    _need(q.code_dim >= 1, "quantizer.code_dim", q.code_dim, "positive")
    _need(0.0 <= q.dropout_p <= 1.0, "quantizer.dropout_p", q.dropout_p, "in [0, 1]")
    _need(1 <= q.dropout_n_start <= len(s), "quantizer.dropout_n_start", q.dropout_n_start,
          f"in [1, number of scales={len(s)}]")
    _need(0.0 <= q.phi_gamma <= 1.0, "quantizer.phi_gamma", q.phi_gamma, "in [0, 1]")
    _need(q.phi_convs >= 1, "quantizer.phi_convs", q.phi_convs, "at least 1")

    t = cfg.tokenizer
    for part in ("encoder", "decoder"):
        v: ViTConfig = getattr(t, part)
        _need(v.patch_size >= 1, f"tokenizer.{part}.patch_size", v.patch_size, "positive")
        _check(d.resolution % v.patch_size == 0, f"tokenizer.{part}.patch_size",
               f"resolution {d.resolution} is not divisible by patch size {v.patch_size}")
        _need(v.heads >= 1, f"tokenizer.{part}.heads", v.heads, "at least 1")
        _check(v.width % v.heads == 0, f"tokenizer.{part}.heads", f"width {v.width} not divisible by {v.heads} heads")
        _need(0.0 <= v.drop_path < 1.0, f"tokenizer.{part}.drop_path", v.drop_path, "in [0, 1)")
    _need(t.teacher_patch_size is None or (t.teacher_patch_size >= 1 and d.resolution % t.teacher_patch_size == 0),
          "tokenizer.teacher_patch_size", t.teacher_patch_size, f"None or a divisor of the resolution {d.resolution}")
    _check(t.teacher_patch_size is None or t.teacher_network != "reference", "tokenizer.teacher_patch_size",
           "re-patches a pretrained teacher; the reference teacher keeps the profile's own patch (set None)")
    _need(t.query_window is None or t.query_window >= 0, "tokenizer.query_window", t.query_window,
          "None (global attention) or a radius ≥ 0 in query cells")
    if t.token_source == "feature_map":
        _check(s[-1] == cfg.patch_grid, "quantizer.scales",
               f"token_source feature_map needs the last scale to equal the patch grid {cfg.patch_grid}, got {s[-1]}")
        _check(q.branches == 1, "quantizer.branches",
               "token_source feature_map is the single-branch (VAR) baseline: P must be 1")
    for name in ("semantic_weight", "recon_weight", "perceptual_weight", "vq_weight", "adv_weight", "lecam_weight",
                 "adv_ramp_steps"):
        _need(getattr(t, name) >= 0, f"tokenizer.{name}", getattr(t, name), "non-negative")

    g = cfg.generator
    _need(g.heads >= 1, "generator.heads", g.heads, "at least 1")
    _check(g.width % g.heads == 0, "generator.heads", f"width {g.width} not divisible by {g.heads} heads")
    _need(0.0 <= g.class_dropout < 1.0, "generator.class_dropout", g.class_dropout, "in [0, 1)")
    _need(0.0 <= g.drop_path < 1.0, "generator.drop_path", g.drop_path, "in [0, 1)")
    _need(g.top_k >= 0, "generator.top_k", g.top_k, "≥ 0 (0 disables)")
    _need(0.0 < g.top_p <= 1.0, "generator.top_p", g.top_p, "in (0, 1]")

    for name in ("train_tokenizer", "train_generator"):
        _validate_train(getattr(cfg, name), name)
    for name in ("teacher", "evaluator"):
        _validate_train(getattr(cfg, name).train, f"{name}.train")
    e = cfg.evaluation
    _need(e.num_samples > 0, "evaluation.num_samples", e.num_samples, "positive")
    _need(e.num_recon > 0, "evaluation.num_recon", e.num_recon, "positive")
    _need(e.num_reference is None or e.num_reference > 1, "evaluation.num_reference", e.num_reference,
          "None (all) or > 1")
    st = cfg.study
    _need(st.tokenizer_steps >= 1, "study.tokenizer_steps", st.tokenizer_steps, "at least 1")
    _need(st.generator_steps >= 1, "study.generator_steps", st.generator_steps, "at least 1")
    _need(len(st.seeds) >= 1, "study.seeds", st.seeds, "at least one seed")
    _need(1 <= st.budget_check_seeds <= len(st.seeds), "study.budget_check_seeds", st.budget_check_seeds,
          f"between 1 and the {len(st.seeds)} study seeds")


def _validate_train(t: TrainConfig, name: str) -> None:
    _need(t.steps >= 1, f"{name}.steps", t.steps, "at least 1")
    _need(t.batch_size >= 1, f"{name}.batch_size", t.batch_size, "at least 1")
    _need(t.lr > 0, f"{name}.lr", t.lr, "positive")
    _need(0 <= t.warmup_steps <= t.steps, f"{name}.warmup_steps", t.warmup_steps, f"in [0, steps={t.steps}]")
    _need(0.0 <= t.ema_decay < 1.0, f"{name}.ema_decay", t.ema_decay, "in [0, 1)")
    _need(len(t.betas) == 2, f"{name}.betas", t.betas, "two values")
    _need(t.ckpt_every >= 1, f"{name}.ckpt_every", t.ckpt_every, "at least 1")
