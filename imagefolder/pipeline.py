"""The compendium's experiments as functions: what the CLI and the notebooks call.

Each function takes a whole `Config`. Trained models live in `<run_dir>/<profile>/<kind>/<name>/`;
asking for a model that is already trained finds it there (the trainer resumes or re-exports), so
a notebook can reuse what an earlier notebook trained, or train it on demand.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import operator
import os
import sys
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import adm_reference, checkpoint, config, metrics, pretrained, reference, results
from .backbones import IMAGENET_MEAN, IMAGENET_STD, TeacherViT
from .config import Config, DataConfig, TrainConfig, apply_overrides, from_dict, to_dict, validate
from .data import ImageFolderDataset, TokenDataset, UInt8View, from_uint8, resolve_root, split_files, to_uint8
from .generator import Generator, GeneratorObjective
from .losses import TeacherPerceptualLoss, TokenizerObjective, build_perceptual
from .sample_classes import reference_data, sample_labels
from .tokenizer import ImageFolderTokenizer
from .train import forward_precision, pick_device, seed_everything, train

# Bumped with every change of code that alters trained weights (tests/test_behaviour.py guards it): it is
# part of every run's name, so such a change never reuses a stale run.
MODEL_CODE_VERSION = 3

def run_path(cfg: Config, kind: str, name: str) -> Path:
    return Path(cfg.run_dir) / cfg.profile / kind / name


def run_definition(cfg: Config, model: Literal["tokenizer", "generator"]) -> dict[str, Any]:
    """What defines a trained `model`: the fields whose role defines it (`config.run_definition`) and the
    model-code version. Its hash names the run; resuming compares it with the checkpoint's."""
    return config.run_definition(cfg, model) | {"model_code_version": MODEL_CODE_VERSION}


def config_hash(cfg: Config, model: Literal["tokenizer", "generator"]) -> str:
    """Short hash of `run_definition(cfg, model)`: configs that train the same model share a run."""
    return hashlib.sha256(json.dumps(run_definition(cfg, model), sort_keys=True).encode()).hexdigest()[:10]


def tokenizer_name(cfg: Config) -> str:
    return f"tok-{config_hash(cfg, 'tokenizer')}"


def generator_name(cfg: Config) -> str:
    return f"gen-{config_hash(cfg, 'generator')}"


def model_file(cfg: Config, model: Literal["tokenizer", "generator"]) -> Path:
    """The final weights file of `cfg`'s `model` run: it exists once that run has finished."""
    name = tokenizer_name(cfg) if model == "tokenizer" else generator_name(cfg)
    return run_path(cfg, model, name) / "model.safetensors"


def run_of_length(tcfg: TrainConfig, steps: int) -> dict[str, Any]:
    """Overrides (relative to a `TrainConfig`) that change its run's length to `steps`: the warm-up capped at
    the run, and the EMA's horizon 1 / (1 − decay) the same fraction of the run (a fixed 0.997 would still hold
    a fifth of the first weights after 500 steps: 0.997⁵⁰⁰ = 0.22). Compilation stays as the profile sets it
    (README, Profiles: with inductor's on-disk cache warm, even a study generator's 250 steps repay it)."""
    out: dict[str, Any] = {"steps": steps, "warmup_steps": min(tcfg.warmup_steps, steps)}
    if tcfg.ema_decay > 0:
        out["ema_decay"] = max(0.0, round(1 - (1 - tcfg.ema_decay) * tcfg.steps / steps, 6))  # 0: no EMA
    return out


def variant(cfg: Config, overrides: dict, study: bool = True) -> Config:
    """`cfg` with `overrides`, at the ablation budget (`cfg.study`) when `study`: both runs shortened
    (`run_of_length`) and the adversarial loss starting at the same fraction of the shorter run."""
    budget = {}
    if study:
        steps = cfg.study.tokenizer_steps
        budget = {f"{part}.{k}": v for part, tcfg, n in (("train_tokenizer", cfg.train_tokenizer, steps),
                                                         ("train_generator", cfg.train_generator,
                                                          cfg.study.generator_steps))
                  for k, v in run_of_length(tcfg, n).items()}
        budget["tokenizer.disc_start"] = round(cfg.tokenizer.disc_start * steps / cfg.train_tokenizer.steps)
    out = apply_overrides(cfg, budget | overrides)
    validate(out)
    return out


def device_of(cfg: Config) -> torch.device:
    return pick_device(cfg.device)


def configure_runtime(cfg: Config) -> int:
    """Apply the config's process settings and print them: torch's CPU thread count `threads` (0 keeps
    torch's default, which follows OMP_NUM_THREADS: the Makefile sets cores ÷ jobs). Returns the count
    (provenance records it: results.machine)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    n = torch.get_num_threads()
    source = f"threads={cfg.threads}" if cfg.threads > 0 else "torch's default"
    print(f"imagefolder: {n} torch threads ({source}; {os.cpu_count()} CPUs)", file=sys.stderr)
    return n


def data_fingerprint(cfg: Config) -> str:
    """The emoji build's fingerprint, or a hash of the val split's file list for other data."""
    marker = resolve_root(cfg.data) / "BUILD_COMPLETE.json"
    if marker.exists():
        return json.loads(marker.read_text())["fingerprint"]
    return ImageFolderDataset(cfg.data, "val").fingerprint()


# ----------------------------------------------------------------------------- frozen networks

def frozen_vit(cfg: Config, network: str, trained: bool = True, patch_size: int | None = None) -> TeacherViT:
    """A frozen ViT behind the teacher interface: the profile's reference teacher or a pretrained file
    (`pretrained.KNOWN`: its file and timm architecture). `patch_size`: the pretrained ViT re-patched to that
    patch at the data resolution (patch kernels and position embeddings resampled, as timm loads them).
    `trained=False`: the same architecture with random weights (benchmarks: shapes only, no files)."""
    if network == "reference":
        net = (reference.load(cfg, "teacher") if trained
               else reference.ReferenceNet(cfg.teacher, cfg.data.resolution, num_classes={}))
        return TeacherViT(net.vit)
    geometry: dict[str, Any] = {} if patch_size is None else {"img_size": cfg.data.resolution, "patch_size": patch_size}
    arch = pretrained.KNOWN[network].timm_arch
    if arch is None:
        raise ValueError(f"{network}: pretrained.KNOWN names no timm architecture for it")
    vit = timm.create_model(arch, pretrained=False, num_classes=0, **geometry)
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"{network}: timm built a {type(vit).__name__}, not the VisionTransformer the teacher wraps")
    if trained:
        state = load_file(str(pretrained.resolve(network)))
        vit.load_state_dict(checkpoint_filter_fn(state, vit) if geometry else state)
    return TeacherViT(vit, IMAGENET_MEAN, IMAGENET_STD)


def metric_network(cfg: Config) -> metrics.MetricNetwork:
    """The profile's generation-metric network: Inception (paper) or its frozen evaluator, registered
    as `evaluator-<profile>` with IS on the data label (the generator's classes)."""
    if cfg.evaluation.fid_network == "inception":
        return metrics.inception_network()
    path = pretrained.resolve(reference.weights_name(cfg, "evaluator"))
    net = reference.load_from(path)
    label = cfg.data.label if cfg.data.label in cfg.evaluator.labels else cfg.evaluator.labels[0]
    return metrics.reference_network(net, "evaluator", label=label, file=path, resolution=cfg.data.resolution,
                                     extractor=f"evaluator-{cfg.profile}")


# ----------------------------------------------------------------------------- tokenizer

def tokenizer_objective(cfg: Config, trained: bool = True) -> TokenizerObjective:
    """Tokenizer, teacher, perceptual loss and discriminator of `cfg`, wired into the trainer's objective
    (`trained=False`: frozen networks with random weights, see `frozen_vit`)."""
    t = cfg.tokenizer
    needs_teacher = (t.semantic_mode != "none" or t.encoder_init == "pretrained"
                     or t.perceptual_loss == "teacher"
                     or (t.discriminator == "dino" and t.disc_backbone == t.teacher_network))
    teacher = frozen_vit(cfg, t.teacher_network, trained, t.teacher_patch_size) if needs_teacher else None
    encoder_state = teacher.vit.state_dict() if teacher is not None and t.encoder_init == "pretrained" else None
    tokenizer = ImageFolderTokenizer(cfg, encoder_state)
    disc_backbone = None
    if t.discriminator == "dino":
        disc_backbone = teacher if t.disc_backbone == t.teacher_network else frozen_vit(cfg, t.disc_backbone, trained)
    perceptual = build_perceptual(t.perceptual_loss, teacher) if t.perceptual_weight > 0 else None
    return TokenizerObjective(cfg, tokenizer, teacher, perceptual, disc_backbone)


def _run_lock(run: Path) -> contextlib.AbstractContextManager:
    """Serialise the training of one run across processes (notebooks run in parallel share runs); under
    torchrun all ranks train the run together, so no lock."""
    return checkpoint.exclusive(run) if int(os.environ.get("WORLD_SIZE", "1")) == 1 else contextlib.nullcontext()


def _write_code(path: Path) -> None:
    """Beside a model just trained: the code that trained it (commit and dirty state at import, model-code version)."""
    checkpoint.atomic_write_text(path.with_name("code.json"), json.dumps(
        {"git": results.CODE_AT_IMPORT, "model_code_version": MODEL_CODE_VERSION}, indent=1))


def _used(path: Path) -> Path:
    """Note a trained model this process uses, with its `code.json` (None for a model trained without one)."""
    code = path.with_name("code.json")
    results.record_model(path, json.loads(code.read_text()) if code.exists() else None)
    return path


_ANNOUNCED: set[str] = set()  # the runs `_announce` has named in this process


def _announce(path: Path, cfg: Config, kind: Literal["tokenizer", "generator"]) -> None:
    """One line on stderr per run a process trains or finds (`make nb-NN` and `make train` show them); a run
    found again in the same process is not announced again."""
    if int(os.environ.get("RANK", "0")) != 0 or (path.exists() and str(path) in _ANNOUNCED):
        return
    _ANNOUNCED.add(str(path))
    if path.exists():
        what = f"found (trained {results.trained_at(path)})"
    else:
        what = f"training {getattr(cfg, f'train_{kind}').steps} steps, seed {cfg.seed}"
    print(f"{kind} {path.parent.name}: {what}", file=sys.stderr, flush=True)


def train_tokenizer(cfg: Config) -> Path:
    """Train (or resume, or find) the tokenizer of `cfg`; returns its EMA weights file."""
    path = model_file(cfg, "tokenizer")
    with _run_lock(path.parent):
        _announce(path, cfg, "tokenizer")
        if not path.exists():
            seed_everything(cfg.seed)
            train_ds = ImageFolderDataset(cfg.data, "train")
            objective = tokenizer_objective(cfg)
            train(objective, train_ds, cfg.train_tokenizer, path.parent, cfg.seed, config=to_dict(cfg),
                  run_key=run_definition(cfg, "tokenizer"), device=device_of(cfg), desc=path.parent.name)
            _write_code(path)
    return _used(path)


def load_tokenizer(path: str | Path, device: torch.device | str = "cpu") -> tuple[ImageFolderTokenizer, Config]:
    """A frozen, eval-mode tokenizer and its config from a file written by `train_tokenizer`."""
    tensors, cfg_dict, _ = checkpoint.load_model(path)
    cfg = from_dict(cfg_dict)
    cfg.tokenizer.encoder_init = "random"  # the weights come from the file
    tokenizer = ImageFolderTokenizer(cfg)
    tokenizer.load_state_dict(tensors)
    return tokenizer.to(device).eval().requires_grad_(False), cfg


def val_subset(cfg: Config, n: int) -> ImageFolderDataset:
    """The val split (n images, spread over classes when the split is larger)."""
    return ImageFolderDataset(_val_data(cfg, n), "val")


def _val_data(cfg: Config, n: int | None = None) -> DataConfig:
    """The data config of `val_subset` (n: default `evaluation.num_recon`)."""
    n = cfg.evaluation.num_recon if n is None else n
    return dataclasses.replace(cfg.data, max_per_split=min(n, cfg.data.max_per_split or n))


@dataclasses.dataclass(frozen=True)
class ValOriginals:
    """The val images tokenizers are scored on (uint8) and, for the teacher-feature perceptual distance, the
    teacher's features of each evaluation batch of them (else None): the same for every tokenizer."""

    images: torch.Tensor
    features: list[list[torch.Tensor]] | None


_VAL_ORIGINALS: dict[str, ValOriginals] = {}  # the latest `val_originals`, by the hash of what it depends on


@torch.no_grad()
def val_originals(cfg: Config, perceptual: torch.nn.Module, cached: bool = True) -> ValOriginals:
    """`ValOriginals` of `evaluation.num_recon` val images under `perceptual` (on its device).

    With `cached`, the latest is kept for the process (a study scores many tokenizers on them) under a hash
    of the val files' names and bytes, how they are decoded, the teacher's weights and the batch size, so a
    changed file or network computes them anew; never for data sets not held in memory (`data.in_memory`:
    ImageNet's val split is decoded each time) or under `data.skip_corrupt` (skips are reported each time)."""
    teacher = perceptual.teacher if isinstance(perceptual, TeacherPerceptualLoss) else None
    device = next(teacher.parameters()).device if teacher is not None else None
    data, bs = _val_data(cfg), cfg.evaluation.batch_size
    key = None
    if cached and data.in_memory and not data.skip_corrupt:
        key = _short_hash({"files": _files_digest(data, "val"), "resolution": data.resolution,
                           "background": data.background, "batch_size": bs, "device": str(device),
                           "teacher": checkpoint.state_dict_hash(teacher) if teacher is not None else None})
        if key in _VAL_ORIGINALS:
            return _VAL_ORIGINALS[key]
    images = val_subset(cfg, cfg.evaluation.num_recon).uint8_images()
    features = None
    if isinstance(perceptual, TeacherPerceptualLoss) and device is not None:  # the teacher's
        features = [perceptual.teacher.block_features(_on(batch, device), perceptual.depths)
                    for batch in images.split(bs)]
    originals = ValOriginals(images, features)
    if key is not None:
        _VAL_ORIGINALS.clear()
        _VAL_ORIGINALS[key] = originals
    return originals


def progress(total: int, desc: str) -> tqdm:
    """A bar over `total` images, drawn only on a terminal (the trainer's rule: tqdm's disable=None)."""
    return tqdm(total=total, desc=desc, unit="img", disable=None, leave=False, mininterval=2.0)


def _on(batch_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images → [-1, 1] floats on `device`."""
    return from_uint8(batch_u8.to(device))


@torch.no_grad()
def reconstruct_all(tokenizer: ImageFolderTokenizer, images_u8: torch.Tensor, batch_size: int,
                    n_scales: int | None = None, amp: str = "off",
                    usage: metrics.CodebookUsage | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) → reconstructions as uint8 (`tokenizer.reconstruct`), keeping the first `n_scales`
    scales; `amp` as the trainer's (`train.forward_precision`); `usage`, when given, counts the codes of
    every scale that the encoding chose."""
    n = tokenizer.scales_kept(n_scales)
    device = next(tokenizer.parameters()).device
    out = []
    with progress(len(images_u8), "reconstructing") as bar, forward_precision(tokenizer, device, amp):
        for batch in images_u8.split(batch_size):
            indices = tokenizer.encode(_on(batch, device))
            if usage is not None:
                usage.update(indices)
            out.append(to_uint8(tokenizer.decode(indices[:n]).float()).cpu())
            bar.update(len(batch))
    return torch.cat(out)


@torch.no_grad()
def evaluate_tokenizer(cfg: Config, tokenizer: ImageFolderTokenizer, network: metrics.MetricNetwork,
                       cached: bool = True) -> dict:
    """Reconstruction metrics on the val split: PSNR, perceptual distance, rFID (named after `network`; the
    val images, their perceptual and their evaluator features from their caches, `val_originals` and
    `split_features`, unless not `cached`), codebook usage per branch
    and the blockiness of the reconstructions and of the originals (`metrics.patch_edge_ratio` at the
    decoder's patch size)."""
    device = next(tokenizer.parameters()).device
    bs = cfg.evaluation.batch_size
    teacher = (frozen_vit(cfg, cfg.tokenizer.teacher_network).to(device)  # held by the loss, so moved here
               if cfg.evaluation.perceptual_network == "teacher" else None)
    perceptual = build_perceptual(cfg.evaluation.perceptual_network, teacher).to(device)
    originals = val_originals(cfg, perceptual, cached)
    real = originals.images
    usage = metrics.CodebookUsage(cfg.quantizer.codebook_size, cfg.quantizer.branches)
    recon = reconstruct_all(tokenizer, real, bs, amp=cfg.evaluation.amp, usage=usage)
    # the perceptual loss averages over its batch: each image of a batch gets that mean, so the mean over
    # every image is the mean of per-image distances, as batches of one would give it
    rec = metrics.reconstruction_metrics(_on(real, device), _on(recon, device),
                                         perceptual=lambda r, o, *known: perceptual(r, o, *known).expand(len(r)),
                                         perceptual_name=perceptual.name, batch_size=bs,
                                         original_features=originals.features)
    against = split_features(cfg, _val_data(cfg), "val", network, ("fid",)) if cached else real
    fid = metrics.generation_metrics(recon, against, network, n=len(real), metrics=("fid",), batch_size=bs,
                                     device=str(device))
    key = metrics.metric_key("FD", network.name)
    patch = cfg.tokenizer.decoder.patch_size
    return rec | {key: fid[key], "N": len(real), "network": network.name, "usage": usage.fractions(),
                  "patch_edges": metrics.patch_edge_ratio(recon, patch),
                  "patch_edges_real": metrics.patch_edge_ratio(real, patch)}


@torch.no_grad()
def psnr_by_scales(cfg: Config, tokenizer: ImageFolderTokenizer, real: torch.Tensor | None = None) -> dict[int, float]:
    """Mean val PSNR of reconstructions from the first n scales, n = 1..S (uint8 `real`, default: val subset)."""
    real = val_subset(cfg, cfg.evaluation.num_recon).uint8_images() if real is None else real
    device = next(tokenizer.parameters()).device
    x = _on(real, device)
    return {n: float(metrics.psnr(x, _on(reconstruct_all(tokenizer, real, cfg.evaluation.batch_size, n,
                                                         amp=cfg.evaluation.amp),
                                                   device)).mean())
            for n in range(1, len(cfg.quantizer.scales) + 1)}


@torch.no_grad()
def probe_features(model: torch.nn.Module, train_ds: ImageFolderDataset, val_ds: ImageFolderDataset,
                   cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features of both splits for linear probing: a tokenizer's pre-quantization features of all
    branches, mean-pooled over positions (B, P·C), or a teacher's CLS feature (B, D)."""
    device = next(model.parameters()).device

    def features(ds: ImageFolderDataset) -> torch.Tensor:
        out = []
        for batch in ds.uint8_images().split(cfg.evaluation.batch_size):
            x = _on(batch, device)
            if isinstance(model, ImageFolderTokenizer):
                f = model.encode_features(x).mean(dim=(-2, -1)).flatten(1)  # (B, P, C, K, K) → (B, P·C)
            else:
                f = model(x)  # (B, D)
            out.append(f.float().cpu())
        return torch.cat(out)

    return features(train_ds), features(val_ds)


# ----------------------------------------------------------------------------- generator

def class_count(cfg: Config) -> int:
    return ImageFolderDataset(dataclasses.replace(cfg.data, max_per_split=1), "val").num_classes


def token_cache(tokenizer: ImageFolderTokenizer, tokenizer_path: Path, cfg: Config,
                split: str = "train") -> TokenDataset:
    """Token indices of a split, encoded once per tokenizer and cached beside its weights."""
    fingerprint = checkpoint.state_dict_hash(tokenizer)
    path = Path(tokenizer_path).with_name(f"tokens-{split}.safetensors")
    if path.exists():
        return TokenDataset.load(path, fingerprint)
    ds = ImageFolderDataset(cfg.data, split, train=False)
    device = next(tokenizer.parameters()).device
    loader = DataLoader(ds, batch_size=cfg.evaluation.batch_size, shuffle=False)
    tokens = TokenDataset.encode(lambda x: tokenizer.encode(x.to(device)), loader, cfg.quantizer.codebook_size,
                                 fingerprint)
    tokens.save(path)
    return tokens


def train_generator(cfg: Config) -> Path:
    """Train (or resume, or find) the generator of `cfg` on the tokens of its tokenizer (trained first if needed)."""
    path = model_file(cfg, "generator")
    tokenizer_path = train_tokenizer(cfg)
    with _run_lock(path.parent):
        _announce(path, cfg, "generator")
        if path.exists():
            return _used(path)
        tokenizer, tok_cfg = load_tokenizer(tokenizer_path, device_of(cfg))
        tokens = token_cache(tokenizer, tokenizer_path, cfg)
        seed_everything(cfg.seed)
        generator = Generator(cfg.generator, tok_cfg.quantizer, class_count(cfg))
        tokens.check_compatible(generator)
        objective = GeneratorObjective(generator, tokenizer.quantizer)
        record = to_dict(cfg) | {"tokenizer_file": str(tokenizer_path),
                                 "tokenizer_hash": pretrained.file_hash(tokenizer_path)}
        run_key = run_definition(cfg, "generator") | {
            "tokenizer_hash": record["tokenizer_hash"]}
        train(objective, tokens, cfg.train_generator, path.parent, cfg.seed, config=record,
              run_key=run_key, device=device_of(cfg), desc=path.parent.name)
        _write_code(path)
    return _used(path)


def load_generator(path: str | Path, device: torch.device | str = "cpu", cfg: Config | None = None
                   ) -> tuple[Generator, ImageFolderTokenizer, Config]:
    """A frozen generator with the tokenizer it was trained on, and its config. With `cfg` (the caller's), it
    samples with that config's sampling fields (role `config.SAMPLING`) rather than those stored with the run."""
    tensors, record, _ = checkpoint.load_model(path)
    stored = from_dict({k: v for k, v in record.items() if k not in ("tokenizer_file", "tokenizer_hash")})
    if cfg is not None:
        sampling = [p for p, r in config.field_roles().items() if r == config.SAMPLING]
        stored = apply_overrides(stored, {p: operator.attrgetter(p)(cfg) for p in sampling})
    tokenizer, tok_cfg = load_tokenizer(record["tokenizer_file"], device)
    generator = Generator(stored.generator, tok_cfg.quantizer, class_count(stored))
    generator.load_state_dict(tensors)
    return generator.to(device).eval().requires_grad_(False), tokenizer, stored


def generator_checkpoints(path: str | Path) -> dict[int, Path]:
    """{step: folder} of the training checkpoints kept beside the generator file `path` (`keep_ckpts`)."""
    return {int(f.name.split("_")[1]): f for f in sorted((Path(path).parent / "checkpoints").glob("step_*"))}


def generator_at(path: str | Path, step: int, device: torch.device | str = "cpu", cfg: Config | None = None
                 ) -> Generator:
    """The generator of the finished run `path` as it was at its kept training checkpoint of `step`
    (raw weights; the cpu generators train without EMA), sampling as `load_generator` says."""
    generator, _, _ = load_generator(path, device, cfg)
    _, tensors, _ = checkpoint.load_training(generator_checkpoints(path)[step])
    prefix = "model.generator."
    generator.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return generator


@torch.no_grad()
def sample_images(generator: Generator, tokenizer: ImageFolderTokenizer, labels: torch.Tensor, cfg: Config,
                  seed: int, batch_size: int | None = None, **sampling) -> torch.Tensor:
    """Class-conditional samples as uint8 (N, 3, H, W); `sampling` overrides cfg_scale / top_k / top_p."""
    device = next(generator.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    out = []
    with (progress(len(labels), "sampling") as bar, forward_precision(generator, device, cfg.evaluation.amp),
          forward_precision(tokenizer, device, cfg.evaluation.amp)):
        for chunk in labels.split(batch_size or cfg.evaluation.batch_size):
            indices = generator.sample(chunk.to(device), tokenizer.quantizer, generator=g,
                                       compiled=cfg.evaluation.compile_sampler, **sampling)
            out.append(to_uint8(tokenizer.decode(indices).float()).cpu())
            bar.update(len(chunk))
    return torch.cat(out)


def evaluate_generator(cfg: Config, generator: Generator, tokenizer: ImageFolderTokenizer,
                       network: metrics.MetricNetwork, n: int, seed: int, train_images=None, **sampling) -> dict:
    """gFID / IS / precision / recall / KID of n samples (classes by `sample_labels`) against the train split
    (`score_against_train`), and their class consistency (`class_consistency_<network>`: the network's top-1
    class agrees with the label the sample was generated for). With `evaluation.fid_reference="adm"` also the
    paper's gFID against the ADM statistics (`adm_reference.adm_fid`: FID_adm), their file checked first."""
    adm = adm_reference.load_reference() if cfg.evaluation.fid_reference == "adm" else None
    labels = sample_labels(cfg, n, generator.num_classes)
    images = sample_images(generator, tokenizer, labels, cfg, seed, **sampling)
    scores = score_against_train(cfg, images, network, labels, train_images)
    if adm is not None:
        scores |= adm_reference.adm_fid(images, network, adm, batch_size=cfg.evaluation.batch_size,
                                        device=device_of(cfg))
    return scores


def score_against_train(cfg: Config, images_u8: torch.Tensor, network: metrics.MetricNetwork,
                        labels: torch.Tensor | None = None, train_images=None) -> dict:
    """FD / IS / precision / recall / KID of uint8 images against the train split: its cached features
    (`reference_features`), or `train_images` when given (e.g. `reference_set(cfg)`, whose features are then
    computed anew). With `labels` (the class of each image), also their class consistency
    (`metrics.generation_metrics`; None where not computed)."""
    against = reference_features(cfg, network) if train_images is None else train_images
    n = len(images_u8)
    return metrics.generation_metrics(images_u8, against, network, n=n, batch_size=cfg.evaluation.batch_size,
                                      kid_subset_size=min(cfg.evaluation.kid_subset_size, n),
                                      device=str(device_of(cfg)), labels=labels, label=cfg.data.label)


REFERENCE_METRICS = ("fid", "kid", "prc")  # the metrics that read the reference set (IS reads the samples alone)


def reference_features(cfg: Config, network: metrics.MetricNetwork) -> metrics.SetFeatures:
    """The train split's features under `network`: the reference every generated set is scored against,
    `evaluation.num_reference` images spread over classes (`split_features`)."""
    return split_features(cfg, reference_data(cfg), "train", network, REFERENCE_METRICS)


def split_features(cfg: Config, data: DataConfig, split: str, network: metrics.MetricNetwork,
                   which: tuple[str, ...]) -> metrics.SetFeatures:
    """The features under `network` that the metrics `which` read, of a split's images as `data` selects
    them, streamed (never held in RAM unless the data set is).

    Kept in `<run_dir>/<profile>/cache/` as safetensors, under a hash of all they depend on (`_features_key`:
    the network, the names and bytes of the files, how they are decoded, the batch, the device and the library
    versions), so a changed file or network makes a new entry, never a stale one. Under `data.skip_corrupt`
    they are recomputed every time, so that the skipped files are counted and reported each time."""
    layers = metrics.feature_layers(network, which)

    def compute() -> metrics.SetFeatures:
        return metrics.set_features(UInt8View(ImageFolderDataset(data, split, train=False)), network, layers,
                                    batch_size=cfg.evaluation.batch_size, device=device_of(cfg),
                                    what=f"{split} split ({resolve_root(data) / split})")

    if cfg.data.skip_corrupt:
        return compute()
    key = _features_key(cfg, data, split, network, layers)
    path = Path(cfg.run_dir) / cfg.profile / "cache" / f"{split}-{_short_hash(key)}.safetensors"
    if path.exists():
        return _load_features(path, key, network)
    features = compute()
    checkpoint.save_model(features.layers, path, key, {"size": list(features.size)})
    return features


def reference_set(cfg: Config) -> UInt8View:
    """The train images generated sets are scored against, as uint8: `evaluation.num_reference` of them
    spread over classes (all when None), decoded on access unless the data set is held in memory."""
    return UInt8View(ImageFolderDataset(reference_data(cfg), "train", train=False))


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _features_key(cfg: Config, data: DataConfig, split: str, network: metrics.MetricNetwork,
                  layers: list[str]) -> dict[str, Any]:
    """What a split's features depend on; its hash names their cache file."""
    versions = {lib: importlib.metadata.version(lib) for lib in ("torch", "torchvision", "torch-fidelity", "pillow")}
    return {"network": network.sha256, "extractor": network.extractor, "layers": layers,
            "files": _files_digest(data, split),
            "resolution": data.resolution, "background": data.background, "batch_size": cfg.evaluation.batch_size,
            "device": device_of(cfg).type, "versions": versions, "model_code_version": MODEL_CODE_VERSION}


def _files_digest(data: DataConfig, split: str) -> str:
    """SHA-256 of a split's file names (relative to the data root), labels and bytes, as `data` selects them."""
    root = resolve_root(data)
    files = hashlib.sha256()
    for f, label in split_files(data, split):
        files.update(f"{f.relative_to(root).as_posix()}:{label}\n".encode())
        stat = f.stat()
        files.update(_file_digest(str(f), stat.st_size, stat.st_mtime_ns))
    return files.hexdigest()


@functools.lru_cache(maxsize=200_000)
def _file_digest(path: str, size: int, mtime_ns: int) -> bytes:
    """sha256 of a file's bytes, read once per process while its size and modification time stay the same
    (a study evaluates many variants against the same splits)."""
    return hashlib.sha256(Path(path).read_bytes()).digest()


def _load_features(path: Path, key: dict[str, Any], network: metrics.MetricNetwork) -> metrics.SetFeatures:
    """Cached reference features, checked against the key they were saved under (`checkpoint.load_model`)."""
    try:
        layers, _, extra = checkpoint.load_model(path, expected_config=key)
    except checkpoint.CheckpointError as err:
        raise checkpoint.CheckpointError(f"feature cache: {err}; delete it to recompute") from err
    return metrics.SetFeatures(layers, tuple(extra["size"]), network.sha256)
