"""Import the official ImageFolder release (lxa9867/ImageFolder) as runs of the paper profile.

    python -m imagefolder import-official --tokenizer MSVR10P2-4096/best_ckpt.pt \
        [--generator VAR-d17-MSVR10P2-4096/ar-ckpt-last.pth] [--weights ema|model]

The files are pickles; they are read with `torch.load(weights_only=True)`, which runs no pickled code:
besides tensors and plain containers only the non-tensor objects named in `KNOWN_OBJECTS` are accepted, each
rebuilt as an inert `OfficialObject` (its pickled state kept, nothing called). Any other global, a missing or
unexpected key, or a wrong shape raises `OfficialCheckpointError` naming the file, the key and the shapes.

The official state dicts map onto ours as follows (official name → ours):
- tokenizer (`ckpt["ema"]` or `ckpt["model"]`): `encoder.model.*` / `decoder.model.*` → `encoder.*` /
  `decoder.*` with each block's LayerScale `ls1.gamma` / `ls2.gamma` folded into `attn.proj` / `mlp.fc2`;
  `encoder.latent_tokens` (1, P·K², D) → `queries` (1, P, K², D); the encoder's level embedding (rows: cls +
  patches, then one per branch) → row 0 added to `encoder.pos_embed`, rows 1.. minus row 0 → `branch_embed`; the
  decoder's (rows: cls + mask tokens, then second cls + codes) → row 0 added to `decoder.pos_embed`, row 1 minus
  row 0 → `code_type_embed`; the 1×1 convs `quant_conv` / `post_quant_conv` → the linear maps `to_code` /
  `from_code`; `quantizes.p.embedding` → `quantizer.msrq.p.codebook`, `quantizes.p.quant_resi.qresi_ls.k` →
  `quantizer.msrq.p.phis.k.conv`; `decoder.to_pixel.model` → `to_pixels`. The frozen teachers
  (`semantic_model.*`, `detail_model.*`) and the bookkeeping buffers (`lvl1LC`, `ema_vocab_hit_SV`) are left.
- generator (`ckpt["trainer"]["var_wo_ddp"]`): `pos_1LC` plus the level embedding of each position →
  `pos_emb` (`level_emb` zero); `attn.mat_qkv` → `attn.qkv` (bias (q_bias, 0, v_bias) in both); the per-head
  log-scale `attn.scale_mul_1H11` (1, H, 1, 1) → `attn.scale_mul` (H, 1, 1); `ffn.fc1` / `ffn.fc2` → `mlp.0` /
  `mlp.2`; `ada_lin.1` → `ada.1`; `head_nm.ada_lin.1` → `head_ada.1`. The mask, level-index and zero k-bias
  buffers and the training-only `empty_emb` are left.
Both need the official forward (`tokenizer.decoder_code_cls`, `generator.attention="l2_norm"`, as the paper
profile has them). Branch order is kept: the semantic branch is the last, in the official code and here.
Both folds are exact up to float rounding (tests/test_official.py matches the official outputs).
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import checkpoint, config, pipeline, pretrained, results
from .config import Config
from .generator import Generator
from .tokenizer import ImageFolderTokenizer

WEIGHTS = ("ema", "model")  # the tokenizer file's two state dicts; the official VAR training reads "ema"


class OfficialCheckpointError(ValueError):
    """An official checkpoint does not fit the paper profile; the message names the file and the key."""


class OfficialObject:
    """Inert stand-in for a pickled non-tensor object of the official files (e.g. its argparse.Namespace):
    keeps what the pickle holds for it, calls nothing."""

    official_name = ""  # the global it stands in for
    state: Any = None  # what the pickle sets on it (a Namespace: its attribute dict)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"OfficialObject({self.official_name}, state={self.state!r})"


KNOWN_OBJECTS = ("argparse.Namespace",)  # the tokenizer file's training arguments (VAR's are a plain OrderedDict)
_PLACEHOLDERS: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    (type(name.rsplit(".", 1)[1], (OfficialObject,), {"official_name": name}), name) for name in KNOWN_OBJECTS]


def load_official(path: str | Path) -> dict[str, Any]:
    """The pickled dict of an official checkpoint, read without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_PLACEHOLDERS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch names an unknown global in an UnpicklingError; anything else: not a checkpoint
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise OfficialCheckpointError(
                f"{path}: unknown pickled object {found.group(1)}; only tensors, plain containers and "
                f"{', '.join(KNOWN_OBJECTS)} are read (nothing else is unpickled)") from err
        raise OfficialCheckpointError(f"{path}: not a readable torch checkpoint: {err}") from err
    if not isinstance(obj, dict):
        raise OfficialCheckpointError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _entry(obj: Any, keys: tuple[str, ...], path: str | Path) -> dict[str, torch.Tensor]:
    """obj[k0][k1]…, a state dict, or an error naming the file and the missing entry."""
    for depth, key in enumerate(keys):
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise OfficialCheckpointError(f"{path}: no entry {'/'.join(keys[:depth + 1])!r} (has {have})")
        obj = obj[key]
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise OfficialCheckpointError(f"{path}: {'/'.join(keys)} is not a state dict (key {bad[0]!r})")
    return obj


# ----------------------------------------------------------------------------- the map

class _Official:
    """The official state dict of one file, taken key by key with its shape checked; `left` raises for every
    key neither taken nor ignored."""

    def __init__(self, state: dict[str, torch.Tensor], source: str, ignored: Callable[[str], bool]):
        self.state, self.source, self.ignored = state, source, ignored
        self.taken: set[str] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.state:
            raise OfficialCheckpointError(f"{self.source}: missing key {key!r} (expected shape {tuple(shape)})")
        t = self.state[key]
        if tuple(t.shape) != tuple(shape):
            raise OfficialCheckpointError(f"{self.source}: key {key!r} has shape {tuple(t.shape)}, the paper "
                                          f"profile expects {tuple(shape)}")
        self.taken.add(key)
        return t.detach().float()

    def left(self) -> None:
        extra = [k for k in self.state if k not in self.taken and not self.ignored(k)]
        if extra:
            raise OfficialCheckpointError(f"{self.source}: unexpected key {extra[0]!r} (shape "
                                          f"{tuple(self.state[extra[0]].shape)})" +
                                          (f" and {len(extra) - 1} more" if len(extra) > 1 else ""))


def _vit(src: _Official, off: str, ours: str, own: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
         level0: torch.Tensor) -> None:
    """A timm ViT of the official encoder / decoder (`off` = "encoder.model") onto ours (`ours` = "encoder"),
    LayerScale folded, the level embedding's first row added to the position embedding."""
    folds = {"attn.proj": "ls1", "mlp.fc2": "ls2"}
    for key, t in own.items():
        if not key.startswith(ours + "."):
            continue
        name = key[len(ours) + 1:]
        value = src.take(f"{off}.{name}", t.shape)
        block = re.fullmatch(r"(blocks\.\d+)\.(attn\.proj|mlp\.fc2)\.(weight|bias)", name)
        if block:
            gamma = src.take(f"{off}.{block[1]}.{folds[block[2]]}.gamma", t.shape[:1])
            value = value * (gamma[:, None] if block[3] == "weight" else gamma)
        elif name == "pos_embed":
            value = value + level0
        out[key] = value


def tokenizer_state(state: dict[str, torch.Tensor], cfg: Config, source: str) -> dict[str, torch.Tensor]:
    """Our tokenizer's state dict (for `cfg`'s shapes) from an official VQModel state dict."""
    _check_forward(cfg)
    model = _tokenizer(cfg)
    own = model.state_dict()
    P, K, C = cfg.quantizer.branches, cfg.grid, cfg.quantizer.code_dim
    D, Dd = cfg.tokenizer.encoder.width, cfg.tokenizer.decoder.width
    src = _Official(state, source, lambda k: k.startswith(("semantic_model.", "detail_model.")) or
                    k.endswith((".lvl1LC", ".ema_vocab_hit_SV")))
    enc_level = src.take("encoder.lvl_embed.weight", (1 + P, D))
    dec_level = src.take("decoder.lvl_embed.weight", (2, Dd))
    out: dict[str, torch.Tensor] = {}
    _vit(src, "encoder.model", "encoder", own, out, enc_level[0])
    _vit(src, "decoder.model", "decoder", own, out, dec_level[0])
    out["queries"] = src.take("encoder.latent_tokens", (1, P * K * K, D)).view(1, P, K * K, D)
    out["branch_embed"] = (enc_level[1:] - enc_level[0]).view(1, P, 1, D)
    out["code_type_embed"] = (dec_level[1] - dec_level[0]).view(1, 1, Dd)
    out["mask_token"] = src.take("decoder.mask_token", (1, 1, Dd))
    out["to_code.weight"] = src.take("quant_conv.weight", (C, D, 1, 1)).flatten(1)
    out["to_code.bias"] = src.take("quant_conv.bias", (C,))
    out["from_code.weight"] = src.take("post_quant_conv.weight", (Dd, P * C, 1, 1)).flatten(1)
    out["from_code.bias"] = src.take("post_quant_conv.bias", (Dd,))
    for end in ("weight", "bias"):
        out[f"to_pixels.{end}"] = src.take(f"decoder.to_pixel.model.{end}", own[f"to_pixels.{end}"].shape)
    for p in range(P):
        ours, off = f"quantizer.msrq.{p}", f"quantizes.{p}"
        out[f"{ours}.codebook.weight"] = src.take(f"{off}.embedding.weight", own[f"{ours}.codebook.weight"].shape)
        out[f"{ours}.initialised"] = torch.tensor(True)
        for k in range(cfg.quantizer.phi_convs):
            for end in ("weight", "bias"):
                key = f"{ours}.phis.{k}.conv.{end}"
                out[key] = src.take(f"{off}.quant_resi.qresi_ls.{k}.{end}", own[key].shape)
    src.left()
    return _loaded(model, out, source)


def generator_state(state: dict[str, torch.Tensor], cfg: Config, source: str) -> dict[str, torch.Tensor]:
    """Our generator's state dict (for `cfg`'s shapes; the class count from the file) from an official
    VAR state dict."""
    _check_forward(cfg)
    if "class_emb.weight" not in state:
        raise OfficialCheckpointError(f"{source}: missing key 'class_emb.weight'")
    model = Generator(cfg.generator, cfg.quantizer, num_classes=state["class_emb.weight"].shape[0] - 1)
    own = model.state_dict()
    W, L = cfg.generator.width, model.length
    src = _Official(state, source, lambda k: k in ("lvl_1L", "attn_bias_for_masking", "empty_emb.weight")
                    or k.endswith(".attn.zero_k_bias"))
    levels = src.take("lvl_embed.weight", (len(cfg.quantizer.scales), W))
    renames = {"class_emb.weight": "class_emb.weight", "word_embed.weight": "word_embed.weight",
               "word_embed.bias": "word_embed.bias", "head.weight": "head.weight", "head.bias": "head.bias",
               "head_ada.1.weight": "head_nm.ada_lin.1.weight", "head_ada.1.bias": "head_nm.ada_lin.1.bias"}
    block_renames = {"attn.qkv.weight": "attn.mat_qkv.weight", "attn.proj.weight": "attn.proj.weight",
                     "attn.proj.bias": "attn.proj.bias", "mlp.0.weight": "ffn.fc1.weight",
                     "mlp.0.bias": "ffn.fc1.bias", "mlp.2.weight": "ffn.fc2.weight", "mlp.2.bias": "ffn.fc2.bias",
                     "ada.1.weight": "ada_lin.1.weight", "ada.1.bias": "ada_lin.1.bias",
                     "attn.q_bias": "attn.q_bias", "attn.v_bias": "attn.v_bias"}
    out: dict[str, torch.Tensor] = {}
    for key, t in own.items():
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if key in renames:
            out[key] = src.take(renames[key], t.shape)
        elif key == "pos_start":
            out[key] = src.take("pos_start", (1, *t.shape))[0]
        elif key == "pos_emb":
            pos = src.take("pos_1LC", (1, L, W))[0]
            out[key] = pos + levels[torch.tensor(model.layout.level)]  # every position's level folded in
        elif key == "level_emb.weight":
            out[key] = torch.zeros_like(t)
        elif block and block[2] in block_renames:
            out[key] = src.take(f"blocks.{block[1]}.{block_renames[block[2]]}", t.shape)
        elif block and block[2] == "attn.scale_mul":
            out[key] = src.take(f"blocks.{block[1]}.attn.scale_mul_1H11", (1, *t.shape)).view(t.shape)
        else:
            raise OfficialCheckpointError(f"{source}: our generator's {key!r} has no official counterpart "
                                          "(does the paper profile still match the release?)")
    src.left()
    return _loaded(model, out, source)


def _check_forward(cfg: Config) -> None:
    """The official forward functions need the decoder's second cls token and VAR's L2-normalised attention."""
    if not cfg.tokenizer.decoder_code_cls or cfg.generator.attention != "l2_norm":
        raise OfficialCheckpointError("the official models compute with tokenizer.decoder_code_cls=true and "
                                      f"generator.attention=l2_norm; this config has {cfg.tokenizer.decoder_code_cls} "
                                      f"and {cfg.generator.attention}")


def _tokenizer(cfg: Config) -> ImageFolderTokenizer:
    """An untrained tokenizer of `cfg`'s shapes, nothing loaded from a teacher."""
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, encoder_init="random"))
    return ImageFolderTokenizer(cfg)


def _loaded(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """`state` loaded strictly into `model` (every key, every shape), returned as the model's state dict."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise OfficialCheckpointError(f"{source}: the mapped state dict does not load: {err}") from err
    return model.state_dict()


# ----------------------------------------------------------------------------- runs

def paper_config(run_dir: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The paper profile that imported runs belong to."""
    return config.profile("paper", ({"run_dir": run_dir} if run_dir else {}) | (overrides or {}))


def _write_source(path: Path, official_file: Path, entry: str) -> None:
    """Beside an imported model, where the pipeline's `code.json` names the code that trained a run of ours: the
    official file and entry it came from, its SHA-256, and the code that imported it."""
    checkpoint.atomic_write_text(path.with_name("code.json"), json.dumps(
        {"imported_from": str(official_file), "entry": entry, "sha256": pretrained.sha256(official_file),
         "git": results.CODE_AT_IMPORT, "model_code_version": pipeline.MODEL_CODE_VERSION}, indent=1))


def import_official(tokenizer_file: str | Path, generator_file: str | Path | None = None, weights: str = "ema",
                    cfg: Config | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Map the official tokenizer (and generator) onto ours and write them as the runs of `cfg` (default:
    the paper profile) that `train_tokenizer` / `train_generator` would find, each with a `code.json` naming its
    source. Both maps finish before anything is written; each file is written atomically. Returns
    {"tokenizer": path[, "generator": path]}."""
    if weights not in WEIGHTS:
        raise OfficialCheckpointError(f"weights: choose one of {WEIGHTS}, got {weights!r}")
    cfg = cfg or paper_config()
    tok_file = Path(tokenizer_file)
    tok_state = tokenizer_state(_entry(load_official(tok_file), (weights,), tok_file), cfg, f"{tok_file} [{weights}]")
    gen_file = Path(generator_file) if generator_file is not None else None
    gen_state = None if gen_file is None else generator_state(
        _entry(load_official(gen_file), ("trainer", "var_wo_ddp"), gen_file), cfg, f"{gen_file} [trainer/var_wo_ddp]")
    paths = {"tokenizer": pipeline.model_file(cfg, "tokenizer")}
    if gen_state is not None:
        paths["generator"] = pipeline.model_file(cfg, "generator")
    taken = [str(p) for p in paths.values() if p.exists()]
    if taken and not overwrite:
        raise OfficialCheckpointError(f"{', '.join(taken)} exists already (pass overwrite=True / --force to replace)")
    record = config.to_dict(cfg)
    checkpoint.save_model(tok_state, paths["tokenizer"], record)
    _write_source(paths["tokenizer"], tok_file, weights)
    if gen_file is not None and gen_state is not None:
        checkpoint.save_model(gen_state, paths["generator"],
                              record | {"tokenizer_file": str(paths["tokenizer"]),
                                        "tokenizer_hash": pretrained.file_hash(paths["tokenizer"])})
        _write_source(paths["generator"], gen_file, "trainer/var_wo_ddp")
    return paths
