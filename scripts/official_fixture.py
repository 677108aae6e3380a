"""Write tests/fixtures/official/: small official ImageFolder modules with random weights, their state dicts
in the official key layout, inputs, and the official outputs, for tests/test_official.py.

    IMAGEFOLDER_OFFICIAL_SRC=/path/to/lxa9867-ImageFolder python scripts/official_fixture.py [--out DIR]
        [--full-depth]

The official modules are imported from the checkout named by $IMAGEFOLDER_OFFICIAL_SRC (reviewed at commit
76ddfb9); nothing of theirs is copied here. Their optional packages (einops, peft, webdataset through their
`datasets` package) are stubbed, no hub download is made (pretrained=False) and the semantic / detail
teachers are off. The tokenizer is their VQModel (DINOv2 encoder and decoder, 2 branches, abs_pos_embed) on
a small ViT (`SPEC`); the generator their VAR (L2-normalised attention) at depth 2, whose width and heads
follow its depth as in their `build_vae_var`. Every parameter is drawn afresh at a scale that keeps
activations O(1) (LayerScale gammas, norms, adaLN, head and biases included, which their init leaves near
zero or the identity), then rounded to float16, so the stored float16 weights reproduce the outputs exactly.

Outputs (`outputs.safetensors`), for images `x` and labels `labels`:
  enc_features (B, C, P·K², 1)   VQModel.encode
  indices      (B, P, Σ s²)      per branch, scales concatenated (f_to_idxBl_or_fhat)
  decoded      (B, 3, H, W)      VQModel.decode of the full f̂ (unclamped)
  tf_input     (B, L − 1, P·C)   VQModel.idxBl_to_var_input
  logits       (B, L, P·V)       VAR.forward (teacher forcing, no cache)
  logits_cfg   (B, L, P·V)       the KV-cached loop of VAR.autoregressive_infer_cfg with the tokens forced to
                                 `indices`, guided at `cfg` (2B batch, (1 + t)·cond − t·uncond, t ramped)
  kept         (B, l, P·V) bool  top-k / top-p (sample_with_top_k_top_p_) of step `kept_step`'s guided logits
`--full-depth` builds the paper's sizes (ViT-B encoder and decoder of 12 blocks, VAR d17) at random weights
and prints the same comparisons against our modules instead of writing a fixture.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ENV = "IMAGEFOLDER_OFFICIAL_SRC"
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official"
SPEC = {  # the fixture's sizes; tests/test_official.py builds our modules from these
    "resolution": 64, "patch_size": 8, "width": 192, "heads": 3, "enc_depth": 1, "dec_depth": 1,
    "scales": [1, 1, 2, 3, 3, 4, 5, 6, 8, 11], "branches": 2, "codebook_size": 64, "code_dim": 32,
    "var_depth": 2, "num_classes": 10, "batch": 2, "seed": 0,
    "cfg": 3.25, "top_k": 20, "top_p": 0.8, "kept_step": 4,
}
FULL = dict(SPEC, resolution=256, patch_size=16, width=768, heads=12, enc_depth=12, dec_depth=12,
            codebook_size=4096, var_depth=17, num_classes=1000)


def import_official(src: str) -> types.SimpleNamespace:
    """The official modules from the checkout at `src`, with stubs for what they import but never run here."""
    sys.path.insert(0, src)

    def stub(name: str, **attrs) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module

    def unused(*args, **kwargs):
        raise RuntimeError("stubbed by scripts/official_fixture.py: not used by the compared paths")

    missing = {"einops": {"einops": dict(rearrange=unused, reduce=unused, pack=unused, unpack=unused, repeat=unused),
                          "einops.layers": {}, "einops.layers.torch": dict(Rearrange=unused)},
               "peft": {"peft": dict(LoraConfig=unused, get_peft_model=unused)}}
    for package, modules in missing.items():
        if importlib.util.find_spec(package) is None:
            for name, attrs in modules.items():
                stub(name, **attrs)
    spec = importlib.util.spec_from_file_location("_official_normalize", os.path.join(src, "datasets", "normalize.py"))
    normalize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(normalize)
    stub("datasets", Normalize=normalize.Normalize, Denormalize=normalize.Denormalize)  # not their loaders
    warnings.filterwarnings("ignore")  # their timm registry overwrites timm's own names
    from models import helpers, var
    from tokenizer.tokenizer_image import xqgan_model
    return types.SimpleNamespace(xqgan=xqgan_model, var=var, helpers=helpers)


def build_official(off: types.SimpleNamespace, spec: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Their VQModel (MSVR10P2's choices) and VAR at `spec`'s sizes, random weights, eval mode."""
    vit = {"img_size": spec["resolution"], "patch_size": spec["patch_size"], "drop_path_rate": 0.0,
           "embed_dim": spec["width"], "num_heads": spec["heads"]}

    def small(cls, depth):
        def build(**kwargs):  # VQModel hard-codes 256 px / patch 16 / pretrained DINOv2 weights
            return cls(**kwargs | {"model_kwargs": dict(vit, depth=depth), "pretrained": False})
        return build

    enc, dec = off.xqgan.DINOv2Encoder, off.xqgan.DINOv2Decoder
    off.xqgan.DINOv2Encoder, off.xqgan.DINOv2Decoder = small(enc, spec["enc_depth"]), small(dec, spec["dec_depth"])
    try:
        K = spec["scales"][-1]
        vq = off.xqgan.VQModel(off.xqgan.ModelArgs(
            codebook_size=spec["codebook_size"], codebook_embed_dim=spec["code_dim"], v_patch_nums=spec["scales"],
            enc_type="dinov2", dec_type="dinov2", semantic_guide="none", detail_guide="none",
            num_latent_tokens=K * K, encoder_model="vit_base_patch14_dinov2.lvd142m",
            decoder_model="vit_base_patch14_dinov2.lvd142m", abs_pos_embed=True, share_quant_resi=4,
            product_quant=spec["branches"], codebook_drop=0.1, half_sem=True, start_drop=3))
    finally:
        off.xqgan.DINOv2Encoder, off.xqgan.DINOv2Decoder = enc, dec
    depth = spec["var_depth"]
    var = off.var.VAR(vae_local=vq, num_classes=spec["num_classes"], depth=depth, embed_dim=depth * 64,
                      num_heads=depth, drop_path_rate=0.0, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.0,
                      attn_l2_norm=True, patch_nums=tuple(spec["scales"]), flash_if_available=False,
                      fused_if_available=False, p_drop=0.0)
    return vq.eval(), var.eval()


@torch.no_grad()
def randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Draw every parameter afresh (see the module docstring), rounded to float16 values."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        z = torch.randn(p.shape, generator=gen)
        if leaf == "scale_mul_1H11":
            value = torch.log(torch.tensor(4.0)) + 0.5 * z  # their init ln 4, spread over heads
        elif leaf == "gamma":
            value = 1 + 0.3 * z  # LayerScale
        elif p.ndim == 1 and ("norm" in name and leaf == "weight"):
            value = 1 + 0.2 * z
        elif p.ndim == 1:
            value = 0.1 * z  # biases, q / v biases
        elif "embedding" in name or "latent_tokens" in name or "mask_token" in name or "cls_token" in name:
            value = z  # codes and learned tokens
        elif "pos_embed" in name or "pos_1LC" in name or "pos_start" in name or "lvl_embed" in name or \
                "class_emb" in name:
            value = 0.5 * z
        else:  # linear and conv weights: unit-variance outputs
            value = z / p[0].numel() ** 0.5
        p.copy_(value.half().float())


def official_indices(vq, f: torch.Tensor, P: int) -> list[list[torch.Tensor]]:
    """Per branch, per scale (B, s²) indices of encoder features f (B, C, P·K², 1)."""
    B, C, L, _ = f.shape
    K = int(round((L // P) ** 0.5))
    return [q.f_to_idxBl_or_fhat(fp.reshape(B, C, K, K), to_fhat=False)
            for q, fp in zip(vq.quantizes, f.chunk(P, dim=2))]


def official_fhat(vq, idx: list[list[torch.Tensor]], spec: dict) -> torch.Tensor:
    """f̂ (B, P·C, K, K) of all scales: each branch's codes upsampled, through φ, summed."""
    S, out = len(spec["scales"]), []
    for q, idx_b in zip(vq.quantizes, idx):
        B, K = idx_b[0].shape[0], spec["scales"][-1]
        f_hat = torch.zeros(B, spec["code_dim"], K, K)
        for si, (s, i) in enumerate(zip(spec["scales"], idx_b)):
            h = q.embedding(i).transpose(1, 2).reshape(B, -1, s, s)
            h = F.interpolate(h, size=(K, K), mode="bicubic") if si != S - 1 else h
            f_hat = f_hat + q.quant_resi[si / (S - 1)](h)
        out.append(f_hat)
    return torch.cat(out, dim=1)


@torch.no_grad()
def cached_guided_logits(var, vq, labels: torch.Tensor, idx: list[list[torch.Tensor]], spec: dict
                         ) -> torch.Tensor:
    """The loop of their `autoregressive_infer_cfg` (KV cache, 2B guidance batch) with each scale's tokens
    taken from `idx` instead of sampled: the guided logits of every scale, (B, L, P·V)."""
    B, scales, P = labels.shape[0], spec["scales"], spec["branches"]
    sos = cond = var.class_emb(torch.cat([labels, torch.full_like(labels, var.num_classes)]))
    lvl_pos = var.lvl_embed(var.lvl_1L) + var.pos_1LC
    x = sos.unsqueeze(1).expand(2 * B, var.first_l, -1) + var.pos_start.expand(2 * B, var.first_l, -1) + \
        lvl_pos[:, :var.first_l]
    f_hat = sos.new_zeros(B, var.Cvae, scales[-1], scales[-1])
    cur, out = 0, []
    for b in var.blocks:
        b.attn.kv_caching(True)
    for si, pn in enumerate(scales):
        cur += pn * pn
        h = x
        for b in var.blocks:
            h = b(x=h, cond_BD=cond, attn_bias=None)
        logits = var.get_logits(h, cond)
        t = spec["cfg"] * si / (len(scales) - 1)
        out.append((1 + t) * logits[:B] - t * logits[B:])
        h_BChw = torch.cat([vq.quantizes[p].embedding(idx[p][si]).transpose(1, 2).reshape(B, -1, pn, pn)
                            for p in range(P)], dim=1)
        f_hat, nxt = vq.get_next_autoregressive_input(si, len(scales), f_hat, h_BChw)
        if si != len(scales) - 1:
            nxt = nxt.view(B, var.Cvae, -1).transpose(1, 2)
            x = (var.word_embed(nxt) + lvl_pos[:, cur:cur + scales[si + 1] ** 2]).repeat(2, 1, 1)
    for b in var.blocks:
        b.attn.kv_caching(False)
    return torch.cat(out, dim=1)


@torch.no_grad()
def official_outputs(off, vq, var, spec: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    B, P, V = spec["batch"], spec["branches"], spec["codebook_size"]
    x = (torch.rand(B, 3, spec["resolution"], spec["resolution"], generator=gen) * 2 - 1)
    labels = torch.randint(0, spec["num_classes"], (B,), generator=gen)
    f = vq.encode(x)  # (B, C, P·K², 1)
    idx = official_indices(vq, f, P)
    decoded = vq.decode(official_fhat(vq, idx, spec))
    tf_input = vq.idxBl_to_var_input(idx)
    logits = var(labels, tf_input)
    logits_cfg = cached_guided_logits(var, vq, labels, idx, spec)
    steps = [0]
    for s in spec["scales"]:
        steps.append(steps[-1] + s * s)
    lo, hi = steps[spec["kept_step"]], steps[spec["kept_step"] + 1]
    kept = torch.cat([off.helpers.sample_with_top_k_top_p_(part.clone(), top_k=spec["top_k"], top_p=spec["top_p"],
                                                            return_p=True) > 0
                      for part in logits_cfg[:, lo:hi].chunk(P, dim=-1)], dim=-1)
    assert kept.shape[-1] == P * V
    return {"x": x, "labels": labels, "enc_features": f, "decoded": decoded, "tf_input": tf_input,
            "indices": torch.stack([torch.cat(i, dim=1) for i in idx], dim=1), "logits": logits,
            "logits_cfg": logits_cfg, "kept": kept}


def state_dicts(vq, var) -> dict[str, dict[str, torch.Tensor]]:
    return {"tokenizer": {k: v.detach().clone() for k, v in vq.state_dict().items()},
            "generator": {k: v.detach().clone() for k, v in var.state_dict().items()}}


def write(out: Path, spec: dict, states: dict, outputs: dict, commit: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for part, sd in states.items():
        save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
                  str(out / f"{part}.safetensors"))
    save_file({k: (v.to(torch.uint8) if v.dtype == torch.bool else v).contiguous() for k, v in outputs.items()},
              str(out / "outputs.safetensors"))
    (out / "spec.json").write_text(json.dumps(spec | {"official_commit": commit}, indent=1) + "\n")


def source_commit(src: str) -> str:
    """The checkout's commit: git's answer, else $IMAGEFOLDER_OFFICIAL_COMMIT (an exported archive), else unknown."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return os.environ.get("IMAGEFOLDER_OFFICIAL_COMMIT", "unknown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--full-depth", action="store_true", help="compare at the paper's sizes, write nothing")
    args = parser.parse_args()
    src = os.environ.get(ENV)
    if not src or not os.path.isdir(os.path.join(src, "tokenizer", "tokenizer_image")):
        sys.exit(f"{ENV} must name a checkout of lxa9867/ImageFolder (got {src!r})")
    spec = FULL if args.full_depth else SPEC
    torch.manual_seed(spec["seed"])
    off = import_official(src)
    vq, var = build_official(off, spec)
    gen = torch.Generator().manual_seed(spec["seed"])
    randomise(vq, gen)
    randomise(var, gen)
    outputs = official_outputs(off, vq, var, spec, gen)
    if args.full_depth:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.test_official import compare_generator, compare_tokenizer  # the fixture test's, at full size
        states = state_dicts(vq, var)
        errors = compare_tokenizer(spec, states["tokenizer"], outputs) | compare_generator(spec, states, outputs)
        for name, err in errors.items():
            print(f"{name:18s} {err:.3g}")
        return
    write(args.out, spec, state_dicts(vq, var), outputs, source_commit(src))
    print(f"wrote {args.out}: " + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB"
                                              for p in sorted(args.out.iterdir())))


if __name__ == "__main__":
    main()
