"""Dataclass configs, the named profiles, validation, YAML load/save and overrides.

Every variant in the paper's tables is a field value of these configs, never a code branch. The
module imports nothing of ours and does no work at import time beyond defining the presets.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PAPER_SCALES = [1, 1, 2, 3, 3, 4, 5, 6, 8, 11]
VAR_SCALES = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


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
    name: str = "emoji"  # emoji | imagenet | folder (any ImageFolder tree at `root`)
    root: str = "data/emoji"  # ImageFolder tree with train/ and val/; imagenet reads $IMAGEFOLDER_IMAGENET
    resolution: int = 32  # images are resized (bicubic) and centre-cropped to this size
    label: str = "category"  # category | subcategory (emoji secondary label, for probes and references)
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
    lookup: str = "cosine"  # cosine (official ImageFolder) | l2 (VAR)
    beta: float = 0.25  # commitment weight
    phi_gamma: float = 0.5  # φ(h) = (1-γ)h + γ conv3x3(h)
    phi_convs: int = 4  # φ convs shared across scales by relative depth
    dropout_p: float = 0.1  # quantizer dropout: fraction of the batch truncated (Table 5b)
    dropout_n_start: int = 3  # truncation keeps n ∈ [N_start, S] scales (Table 5a)
    codebook_init: str = "data"  # data (residuals of the first training batch, fast on CPU) | uniform (official: random unit vectors)


@dataclass
class ViTConfig:
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16


@dataclass
class TokenizerConfig:
    encoder: ViTConfig = field(default_factory=ViTConfig)
    decoder: ViTConfig = field(default_factory=ViTConfig)
    token_layout: str = "query"  # query (ImageFolder K×K query tokens) | feature_map (VAR-style patch grid)
    query_window: int | None = None  # None: queries attend to all tokens (paper); r: only within r cells (README)
    encoder_init: str = "pretrained"  # pretrained (DINOv2 / teacher) | random
    encoder_tuning: str = "full"  # full | lora | linear (Table 2)
    lora_rank: int = 8
    semantic_mode: str = "one"  # none | one | all: branches regularised by the teacher (Tables 3, 9)
    semantic_weight: float = 0.1  # λ_clip (Table 5d)
    semantic_temperature: float = 0.07
    recon_weight: float = 1.0
    perceptual_weight: float = 1.0
    vq_weight: float = 1.0
    adv_weight: float = 0.5
    lecam_weight: float = 0.001
    disc_start: int = 2000  # generator step at which the adversarial loss starts
    discriminator: str = "patchgan"  # none | patchgan | dino (Table 3 row 7)
    teacher_network: str = "reference"  # frozen semantic teacher and encoder init: reference (small profiles) | dinov2_vitb14
    disc_backbone: str = "reference"  # frozen backbone of the "dino" discriminator: reference | dinov2_vits14
    disc_width: int = 64
    disc_layers: int = 3
    disc_norm: str = "spectral"  # spectral | none: weight normalisation of the PatchGAN convs


@dataclass
class GeneratorConfig:
    mode: str = "folded"  # folded (ImageFolder) | unfolded (branches as separate positions) | raster (next-token)
    depth: int = 17
    width: int = 1088
    heads: int = 17
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    class_dropout: float = 0.1  # class label dropped for classifier-free guidance
    cfg_scale: float = 3.25  # guidance at the last scale, ramped linearly over scales
    top_k: int = 750
    top_p: float = 0.95


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
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    ckpt_every: int = 500
    keep_ckpts: int = 2
    log_every: int = 25


@dataclass
class ReferenceNetConfig:
    """A small classifier trained on the data set: the teacher or the evaluator (DESIGN.md §5)."""

    arch: str = "vit"  # vit (teacher: the encoder's width, depth and patch) | convnet (evaluator)
    width: int = 192
    depth: int = 4
    heads: int = 3
    patch_size: int = 4
    labels: list[str] = field(default_factory=lambda: ["subcategory"])  # one head per label
    seed: int = 1
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=128, lr=1e-3,
                                                                   warmup_steps=100, ema_decay=0.0,
                                                                   ckpt_every=500))


@dataclass
class EvalConfig:
    fid_network: str = "evaluator"  # evaluator (small profiles) | inception (paper: inception-v3-compat)
    perceptual_network: str = "teacher"  # teacher (feature distance) | lpips_vgg (paper)
    num_samples: int = 1000  # generated images for gFID / IS / precision / recall
    num_recon: int = 1000  # val images for rFID / PSNR
    num_reference: int | None = None  # train images that samples are scored against, spread over classes; None = all
    batch_size: int = 100
    kid_subset_size: int = 100


@dataclass
class StudyConfig:
    """The budget of each variant in the ablation tables (every variant of one table gets the same)."""

    tokenizer_steps: int = 20_000  # training steps of each ablation tokenizer
    generator_steps: int = 20_000  # training steps of each ablation generator
    num_samples: int = 10_000  # generated images per variant for gFID / IS
    seeds: list[int] = field(default_factory=lambda: [0])  # seeds of the key ablations (spread reported)


@dataclass
class Config:
    profile: str = "paper"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch's default); 1 is fastest for the smoke profile's tiny ops
    run_dir: str = "runs"  # checkpoints and caches (git-ignored)
    data: DataConfig = field(default_factory=DataConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    train_tokenizer: TrainConfig = field(default_factory=TrainConfig)
    train_generator: TrainConfig = field(default_factory=TrainConfig)
    teacher: ReferenceNetConfig = field(default_factory=ReferenceNetConfig)
    evaluator: ReferenceNetConfig = field(default_factory=lambda: ReferenceNetConfig(
        arch="convnet", width=32, depth=3, labels=["category", "subcategory"], seed=2))
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    @property
    def grid(self) -> int:
        """K, the side of the quantized token grid: the last scale."""
        return self.quantizer.scales[-1]

    @property
    def tokens_per_branch(self) -> int:
        return token_count(self.quantizer.scales)


# ----------------------------------------------------------------------------- profiles

def _paper() -> Config:
    """The paper's configuration (§4.1): ImageNet 256 px, ViT-B, 2×4096 codes of dim 32, 286 tokens."""
    return Config(
        profile="paper",
        data=DataConfig(name="imagenet", root="$IMAGEFOLDER_IMAGENET", resolution=256, in_memory=False,
                        num_workers=8, hflip=True),
        tokenizer=TokenizerConfig(discriminator="dino", teacher_network="dinov2_vitb14", disc_backbone="dinov2_vits14"),
        train_tokenizer=TrainConfig(steps=200_000, batch_size=256, lr=1e-4, warmup_steps=5000,
                                    weight_decay=0.05, ckpt_every=5000, ema_decay=0.9999),
        train_generator=TrainConfig(steps=250_000, batch_size=768, lr=8e-5 * 768 / 256, warmup_steps=5000,
                                    weight_decay=0.05, grad_clip=2.0, ckpt_every=5000, ema_decay=0.0),
        evaluation=EvalConfig(fid_network="inception", perceptual_network="lpips_vgg",
                              num_samples=50_000, num_recon=50_000, num_reference=50_000, batch_size=250,
                              kid_subset_size=1000),
    )


def _small(profile: str, resolution: int, patch: int, width: int, depth: int, heads: int,
           codebook: int, gen_depth: int, gen_width: int) -> Config:
    """A small profile keeping the paper's ratios: 10 scales shaped like the paper's, 2 branches,
    the same loss weights, dropout p and N_start; the teacher matches the encoder's shape. Each query
    attends to its own cell only (`query_window=0`): without it the queries do not align spatially at
    this scale (tokenizer.py), and at 600 cpu steps it lifts val PSNR from 13.9 to 16.7 dB."""
    grid = resolution // patch
    vit = ViTConfig(width=width, depth=depth, heads=heads, patch_size=patch)
    return Config(
        profile=profile,
        data=DataConfig(name="emoji", root="data/emoji", resolution=resolution),
        quantizer=QuantizerConfig(scales=scaled_schedule(grid), codebook_size=codebook, code_dim=32),
        tokenizer=TokenizerConfig(encoder=vit, decoder=copy.deepcopy(vit), query_window=0, discriminator="patchgan",
                                  disc_width=32, disc_layers=2, disc_start=1000),
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
        evaluation=EvalConfig(num_samples=1000, num_recon=704, batch_size=100, kid_subset_size=100),
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
    cfg.evaluation = EvalConfig(num_samples=32, num_recon=32, batch_size=16, kid_subset_size=8)
    cfg.study = StudyConfig(tokenizer_steps=4, generator_steps=4, num_samples=16, seeds=[0])
    return cfg


def _cpu() -> Config:
    """2 CPU cores, 32 px emoji. The tokenizer schedule is sized to ≈15 min on 2 quiet cores (measured:
    ≈50 img/s at batch 16 with the full loss before disc_start, ≈37 img/s after): batch 16 / lr 2e-3
    gained more PSNR per minute than batch 32 / lr 3e-3; EMA 0.997 (a ≈330-step horizon) suits a
    2600-step run; the adversarial loss starts at 60 % of the run. The generator (depth 4, width 192,
    2.7M parameters in its blocks) takes ≈0.57 s per batch-32 step: 1500 steps ≈ 15 min. Study budgets:
    a 500-step tokenizer variant ≈3 min, a 250-step generator ≈2.5 min, so notebooks with ≈7 tokenizers
    and 6 generators stay within 60 min. One torch thread per process: it keeps ≈84 % of the two-thread
    speed (42 vs 50 img/s) and lets `make -j2 reproduce` run two notebooks on the two cores, where two
    two-thread processes would thrash."""
    cfg = _small("cpu", resolution=32, patch=4, width=128, depth=3, heads=4, codebook=1024,
                 gen_depth=4, gen_width=192)
    cfg.threads = 1
    cfg.train_tokenizer = TrainConfig(steps=2600, batch_size=16, lr=2e-3, warmup_steps=50, grad_clip=1.0,
                                      ema_decay=0.997, ckpt_every=200)
    cfg.tokenizer.disc_start = 1560
    cfg.train_generator = TrainConfig(steps=1500, batch_size=32, lr=1e-3, warmup_steps=50, grad_clip=2.0,
                                      ema_decay=0.0, ckpt_every=250)
    cfg.study = StudyConfig(tokenizer_steps=500, generator_steps=250, num_samples=500, seeds=[0])
    return cfg


PROFILES = {
    "smoke": _smoke,
    "cpu": _cpu,
    "gpu": lambda: _small("gpu", resolution=64, patch=4, width=256, depth=6, heads=4, codebook=4096,
                          gen_depth=12, gen_width=512),
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


# ----------------------------------------------------------------------------- overrides, YAML

def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], cls: type = Config, path: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys raise, naming the field."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{path}{key}"
        if key not in known:
            raise ConfigError(f"{name}: unknown field (known: {sorted(known)})")
        sub = _dataclass_type(cls, key)
        kwargs[key] = from_dict(value, sub, name + ".") if sub and isinstance(value, dict) else value
    return cls(**kwargs)


def _dataclass_type(cls: type, key: str) -> type | None:
    default = cls.__dataclass_fields__[key]
    if default.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = default.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            return type(value)
    return None


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy with `{"quantizer.scales": [...], "seed": 3}`-style overrides applied.

    String values (from the command line) are parsed as YAML, so `"[1,2,3]"` becomes a list.
    """
    cfg = copy.deepcopy(cfg)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for i, part in enumerate(parents):
            if not hasattr(node, part) or not dataclasses.is_dataclass(getattr(node, part)):
                raise ConfigError(f"{'.'.join(parents[:i + 1])}: unknown config section in override {dotted!r}")
            node = getattr(node, part)
        if leaf not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(f"{dotted}: unknown field")
        current = getattr(node, leaf)
        if isinstance(value, str) and not isinstance(current, str):
            value = yaml.safe_load(value)
        if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:  # YAML reads "3e-3" (no dot) as a string and "1" as an int
                value = float(value)
            except ValueError:
                raise ConfigError(f"{dotted}: expected a number, got {value!r}") from None
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = from_dict(value, type(current), dotted + ".")
        setattr(node, leaf, value)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=[1,2]"]` → `{"a.b": "1", "c": "[1,2]"}` (values parsed later by type)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_yaml(path: str | Path) -> Config:
    cfg = from_dict(yaml.safe_load(Path(path).read_text()))
    validate(cfg)
    return cfg


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


# ----------------------------------------------------------------------------- validation

def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def _choice(value: str, name: str, options: tuple[str, ...]) -> None:
    _check(value in options, name, f"{value!r} is not one of {options}")


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first bad field."""
    _check(cfg.profile in PROFILES, "profile", f"unknown profile {cfg.profile!r}; choose one of {sorted(PROFILES)}")
    _choice(cfg.device, "device", ("auto", "cpu", "cuda"))
    _check(cfg.threads >= 0, "threads", "must be ≥ 0 (0 = torch's default)")
    d = cfg.data
    _choice(d.name, "data.name", ("emoji", "imagenet", "folder"))
    _choice(d.label, "data.label", ("category", "subcategory"))
    _check(d.resolution > 0, "data.resolution", "must be positive")
    _check(d.max_per_split is None or d.max_per_split > 0, "data.max_per_split", "must be positive or None")

    q = cfg.quantizer
    s = q.scales
    _check(len(s) >= 1 and all(isinstance(x, int) and x >= 1 for x in s), "quantizer.scales",
           f"must be a non-empty list of positive integers, got {s!r}")
    _check(all(a <= b for a, b in zip(s, s[1:])), "quantizer.scales", f"must not decrease, got {s!r}")
    _check(q.branches >= 1, "quantizer.branches", "P must be at least 1")
    _check(q.codebook_size >= 2, "quantizer.codebook_size", "must be at least 2")
    _check(q.code_dim >= 1, "quantizer.code_dim", "must be positive")
    _choice(q.lookup, "quantizer.lookup", ("cosine", "l2"))
    _check(0.0 <= q.dropout_p <= 1.0, "quantizer.dropout_p", f"must be in [0, 1], got {q.dropout_p}")
    _check(1 <= q.dropout_n_start <= len(s), "quantizer.dropout_n_start",
           f"N_start={q.dropout_n_start} must be in [1, number of scales={len(s)}]")
    _check(0.0 <= q.phi_gamma <= 1.0, "quantizer.phi_gamma", "must be in [0, 1]")
    _check(q.phi_convs >= 1, "quantizer.phi_convs", "must be at least 1")
    _choice(q.codebook_init, "quantizer.codebook_init", ("data", "uniform"))

    t = cfg.tokenizer
    for part in ("encoder", "decoder"):
        v: ViTConfig = getattr(t, part)
        _check(d.resolution % v.patch_size == 0, f"tokenizer.{part}.patch_size",
               f"resolution {d.resolution} is not divisible by patch size {v.patch_size}")
        _check(v.width % v.heads == 0, f"tokenizer.{part}.heads", f"width {v.width} not divisible by {v.heads} heads")
    _choice(t.token_layout, "tokenizer.token_layout", ("query", "feature_map"))
    _check(t.query_window is None or t.query_window >= 0, "tokenizer.query_window",
           f"must be None (global attention) or a radius ≥ 0 in query cells, got {t.query_window}")
    if t.token_layout == "feature_map":
        grid = d.resolution // t.encoder.patch_size
        _check(s[-1] == grid, "quantizer.scales",
               f"feature_map layout needs the last scale to equal the patch grid {grid}, got {s[-1]}")
        _check(q.branches == 1, "quantizer.branches", "feature_map layout is the single-branch (VAR) baseline: P must be 1")
    _choice(t.encoder_init, "tokenizer.encoder_init", ("pretrained", "random"))
    _choice(t.encoder_tuning, "tokenizer.encoder_tuning", ("full", "lora", "linear"))
    _choice(t.semantic_mode, "tokenizer.semantic_mode", ("none", "one", "all"))
    _choice(t.discriminator, "tokenizer.discriminator", ("none", "patchgan", "dino"))
    _choice(t.teacher_network, "tokenizer.teacher_network", ("reference", "dinov2_vitb14"))
    _choice(t.disc_backbone, "tokenizer.disc_backbone", ("reference", "dinov2_vits14"))
    _choice(t.disc_norm, "tokenizer.disc_norm", ("spectral", "none"))
    for name in ("semantic_weight", "recon_weight", "perceptual_weight", "vq_weight", "adv_weight", "lecam_weight"):
        _check(getattr(t, name) >= 0, f"tokenizer.{name}", "must be non-negative")

    g = cfg.generator
    _choice(g.mode, "generator.mode", ("folded", "unfolded", "raster"))
    _check(g.width % g.heads == 0, "generator.heads", f"width {g.width} not divisible by {g.heads} heads")
    _check(0.0 <= g.class_dropout < 1.0, "generator.class_dropout", "must be in [0, 1)")
    _check(g.top_k >= 0, "generator.top_k", "must be ≥ 0 (0 disables)")
    _check(0.0 < g.top_p <= 1.0, "generator.top_p", f"must be in (0, 1], got {g.top_p}")

    for name in ("train_tokenizer", "train_generator"):
        _validate_train(getattr(cfg, name), name)
    for name in ("teacher", "evaluator"):
        ref: ReferenceNetConfig = getattr(cfg, name)
        _choice(ref.arch, f"{name}.arch", ("vit", "convnet"))
        for label in ref.labels:
            _choice(label, f"{name}.labels", ("category", "subcategory"))
        _validate_train(ref.train, f"{name}.train")
    e = cfg.evaluation
    _choice(e.fid_network, "evaluation.fid_network", ("evaluator", "inception"))
    _choice(e.perceptual_network, "evaluation.perceptual_network", ("teacher", "lpips_vgg"))
    _check(e.num_samples > 0 and e.num_recon > 0, "evaluation.num_samples", "must be positive")
    _check(e.num_reference is None or e.num_reference > 1, "evaluation.num_reference", "must be None (all) or > 1")
    st = cfg.study
    _check(st.tokenizer_steps >= 1 and st.generator_steps >= 1, "study.tokenizer_steps", "must be at least 1")
    _check(len(st.seeds) >= 1, "study.seeds", "needs at least one seed")


def _validate_train(t: TrainConfig, name: str) -> None:
    _check(t.steps >= 1, f"{name}.steps", "must be at least 1")
    _check(t.batch_size >= 1, f"{name}.batch_size", "must be at least 1")
    _check(t.lr > 0, f"{name}.lr", "must be positive")
    _check(0 <= t.warmup_steps <= t.steps, f"{name}.warmup_steps", "must be in [0, steps]")
    _check(0.0 <= t.ema_decay < 1.0, f"{name}.ema_decay", "must be in [0, 1)")
    _check(len(t.betas) == 2, f"{name}.betas", "must have two values")
    _choice(t.amp, f"{name}.amp", ("auto", "bf16", "off"))
    _check(t.ckpt_every >= 1, f"{name}.ckpt_every", "must be at least 1")
