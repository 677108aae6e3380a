"""The official release loads through `imagefolder.official` and computes what the official code computes.

tests/fixtures/official/ (written by scripts/official_fixture.py from the official source) holds small
official modules' state dicts in their key layout, inputs and the official outputs. Here the state dicts
are wrapped as the official files are (pickled dicts holding an argparse.Namespace), imported, and our
modules' outputs are matched against the official ones: rel ≤ 1e-5, indices and kept sets exact.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagefolder import checkpoint, official, pipeline
from imagefolder.config import Config, to_dict
from imagefolder.generator import Generator

FIXTURE = Path(__file__).parent / "fixtures" / "official"
REL = 1e-5


def spec_overrides(spec: dict) -> dict:
    """Overrides of the paper profile to the fixture's sizes."""
    vit = {"width": spec["width"], "heads": spec["heads"], "patch_size": spec["patch_size"]}
    over = {"data.resolution": spec["resolution"], "quantizer.scales": spec["scales"],
            "quantizer.branches": spec["branches"], "quantizer.codebook_size": spec["codebook_size"],
            "quantizer.code_dim": spec["code_dim"], "tokenizer.encoder.depth": spec["enc_depth"],
            "tokenizer.decoder.depth": spec["dec_depth"], "generator.depth": spec["var_depth"],
            "generator.width": 64 * spec["var_depth"], "generator.heads": spec["var_depth"]}
    return over | {f"tokenizer.{part}.{k}": v for part in ("encoder", "decoder") for k, v in vit.items()}


def spec_config(spec: dict, run_dir: str = "runs") -> Config:
    """The paper profile at the fixture's sizes."""
    return official.paper_config(run_dir, spec_overrides(spec))


def to_float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixture's float16 tensors as float32 (the values the official outputs were computed with)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def rel_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours − theirs| / max |theirs|."""
    return float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max())


def as_ours(flat_BPT: torch.Tensor, scales: list[int]) -> list[torch.Tensor]:
    """Official per-branch indices, scales concatenated (B, P, Σ s²) → ours: S × (B, P, s, s)."""
    out, start = [], 0
    for s in scales:
        out.append(flat_BPT[:, :, start:start + s * s].unflatten(-1, (s, s)))
        start += s * s
    return out


def kept_sets(logits_BlGV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(B, l, G, V) bool: the tokens our sampler can draw under top-k / top-p (`sampler.candidates`)."""
    from imagefolder import sampler
    order_Nk, _, kept_N1 = sampler.candidates(logits_BlGV, top_k, top_p)
    rank_Nk = torch.arange(order_Nk.shape[1]).expand_as(order_Nk)
    mask_NV = torch.zeros(order_Nk.shape[0], logits_BlGV.shape[-1], dtype=torch.bool)
    mask_NV.scatter_(1, order_Nk, rank_Nk < kept_N1)
    return mask_NV.view(logits_BlGV.shape)


@torch.no_grad()
def compare_tokenizer(spec: dict, state: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> dict[str, float]:
    """Import the official tokenizer, run ours on the fixture's images: rel error per float output, the number
    of differing indices."""
    cfg = spec_config(spec)
    tok = official._tokenizer(cfg).eval()
    tok.load_state_dict(official.tokenizer_state(to_float(state), cfg, "fixture tokenizer"))
    B, P, C, K = spec["batch"], spec["branches"], spec["code_dim"], spec["scales"][-1]
    theirs_idx = as_ours(out["indices"], spec["scales"])
    ours_idx = tok.encode(out["x"])
    theirs_f = out["enc_features"].view(B, C, P, K, K).transpose(1, 2)  # (B, C, P·K², 1) → (B, P, C, K, K)
    return {
        "enc_features": rel_error(tok.encode_features(out["x"]), theirs_f),
        "indices (differ)": int((torch.cat([i.flatten(2) for i in ours_idx], 2) != out["indices"]).sum()),
        "decoded": rel_error(tok.decode_fhat(tok.indices_to_fhat(theirs_idx)), out["decoded"]),
        "tf_input": rel_error(tok.quantizer.teacher_forcing_inputs(theirs_idx), out["tf_input"]),
    }


@torch.no_grad()
def compare_generator(spec: dict, states: dict[str, dict[str, torch.Tensor]], out: dict[str, torch.Tensor]
                      ) -> dict[str, float]:
    """Import the official generator (with the tokenizer's quantizer), run ours on the fixture's official
    indices: rel error of the teacher-forced and of the KV-cached guided logits, the number of differing kept
    tokens at one step."""
    cfg = spec_config(spec)
    tok = official._tokenizer(cfg).eval()
    tok.load_state_dict(official.tokenizer_state(to_float(states["tokenizer"]), cfg, "fixture tokenizer"))
    gen = Generator(cfg.generator, cfg.quantizer, spec["num_classes"]).eval()
    gen.load_state_dict(official.generator_state(to_float(states["generator"]), cfg, "fixture generator"))
    theirs_idx = as_ours(out["indices"], spec["scales"])
    logits = gen(out["labels"], tok.quantizer.teacher_forcing_inputs(theirs_idx)).flatten(2)
    _, steps = gen.sample(out["labels"], tok.quantizer, cfg_scale=spec["cfg"], top_k=spec["top_k"],
                          top_p=spec["top_p"], reference=theirs_idx, force_branches=range(spec["branches"]),
                          return_logits=True)
    kept = kept_sets(steps[spec["kept_step"]], spec["top_k"], spec["top_p"]).flatten(2)
    return {
        "logits": rel_error(logits, out["logits"]),
        "logits_cfg": rel_error(torch.cat(steps, dim=1).flatten(2), out["logits_cfg"]),
        "kept (differ)": int((kept != out["kept"].bool()).sum()),
    }


def within_tolerance(errors: dict[str, float]) -> dict[str, float]:
    """The comparisons that fail: a float output off by more than REL, any differing index or kept token."""
    return {k: v for k, v in errors.items() if v > (0 if "differ" in k else REL)}


@pytest.fixture(scope="module")
def fixture() -> tuple[dict, dict, dict]:
    spec = json.loads((FIXTURE / "spec.json").read_text())
    states = {part: load_file(str(FIXTURE / f"{part}.safetensors")) for part in ("tokenizer", "generator")}
    return spec, states, load_file(str(FIXTURE / "outputs.safetensors"))


def test_fixture_is_small():
    assert sum(p.stat().st_size for p in FIXTURE.iterdir()) <= 5_000_000


def test_tokenizer_matches_the_official_outputs(fixture):
    spec, states, out = fixture
    errors = compare_tokenizer(spec, states["tokenizer"], out)
    assert within_tolerance(errors) == {}, errors


def test_generator_matches_the_official_outputs(fixture):
    spec, states, out = fixture
    assert out["kept"].sum() > 0 and (out["kept"] == 0).sum() > 0  # the step keeps some tokens, not all
    errors = compare_generator(spec, states, out)
    assert within_tolerance(errors) == {}, errors


def test_kept_sets_follow_the_official_rule(fixture):
    """On the official guided logits themselves, our top-k / top-p keeps exactly the official tokens."""
    spec, _, out = fixture
    ends = [0]
    for s in spec["scales"]:
        ends.append(ends[-1] + s * s)
    step = out["logits_cfg"][:, ends[spec["kept_step"]]:ends[spec["kept_step"] + 1]]
    kept = kept_sets(step.unflatten(-1, (spec["branches"], spec["codebook_size"])), spec["top_k"], spec["top_p"])
    assert torch.equal(kept.flatten(2), out["kept"].bool())


def test_the_comparison_sees_layer_scale_and_the_attention_scale(fixture):
    """The fixture's weights are not near-identity: the LayerScale gammas and VAR's per-head attention scale
    each move the outputs when left at their init."""
    spec, states, out = fixture
    tokenizer = {k: torch.ones_like(v) if k.endswith("ls1.gamma") else v for k, v in states["tokenizer"].items()}
    assert compare_tokenizer(spec, tokenizer, out)["enc_features"] > 1e-3
    generator = {k: torch.full_like(v, math.log(4)) if k.endswith("scale_mul_1H11") else v
                 for k, v in states["generator"].items()}
    assert compare_generator(spec, dict(states, generator=generator), out)["logits"] > 1e-3


# ----------------------------------------------------------------------------- files and errors

def official_files(tmp_path: Path, states: dict, tokenizer_extra: dict | None = None) -> tuple[Path, Path]:
    """The fixture's state dicts wrapped as the released files are: best_ckpt.pt (with the training script's
    argparse.Namespace) and ar-ckpt-last.pth."""
    tok, gen = to_float(states["tokenizer"]), to_float(states["generator"])
    model = dict(tok, **{"decoder.mask_token": -tok["decoder.mask_token"]})  # tells "model" from "ema"
    tok_file, gen_file = tmp_path / "best_ckpt.pt", tmp_path / "ar-ckpt-last.pth"
    torch.save({"model": model, "ema": tok, "optimizer": {"state": {}, "param_groups": []}, "discriminator": {},
                "steps": 10, "args": argparse.Namespace(vq_model="VQ-16", product_quant=2)} | (tokenizer_extra or {}),
               tok_file)
    torch.save({"epoch": 1, "iter": 5, "trainer": {"config": {"patch_nums": [1, 2]}, "var_wo_ddp": gen,
                                                   "vae_local": tok, "var_opt": {}},
                "args": OrderedDict(depth=2, pn="1_1_2_3_3_4_5_6_8_11")}, gen_file)  # VAR's Args.state_dict()
    return tok_file, gen_file


def test_import_writes_runs_the_pipeline_loads(fixture, tmp_path):
    spec, states, out = fixture
    tok_file, gen_file = official_files(tmp_path, states)
    cfg = spec_config(spec, str(tmp_path / "runs"))
    paths = official.import_official(tok_file, gen_file, cfg=cfg)
    assert paths["tokenizer"] == pipeline.run_path(cfg, "tokenizer", pipeline.tokenizer_name(cfg)) / "model.safetensors"
    assert paths["generator"] == pipeline.run_path(cfg, "generator", pipeline.generator_name(cfg)) / "model.safetensors"
    assert checkpoint.load_model(paths["tokenizer"])[1] == to_dict(cfg)  # the record `train_tokenizer` writes
    tok, _ = pipeline.load_tokenizer(paths["tokenizer"])
    K = spec["scales"][-1]
    theirs = out["enc_features"].view(spec["batch"], spec["code_dim"], spec["branches"], K, K).transpose(1, 2)
    assert rel_error(tok.encode_features(out["x"]), theirs) <= REL
    assert pipeline.train_tokenizer(cfg) == paths["tokenizer"] and pipeline.train_generator(cfg) == paths["generator"]
    tensors, record, _ = checkpoint.load_model(paths["generator"])
    assert record["tokenizer_file"] == str(paths["tokenizer"])
    for kind, source in (("tokenizer", tok_file), ("generator", gen_file)):
        code = json.loads(paths[kind].with_name("code.json").read_text())
        assert code["imported_from"] == str(source) and code["model_code_version"] == pipeline.MODEL_CODE_VERSION
    Generator(cfg.generator, cfg.quantizer, spec["num_classes"]).load_state_dict(tensors)
    with pytest.raises(official.OfficialCheckpointError, match="exists already"):
        official.import_official(tok_file, gen_file, cfg=cfg)


def test_weights_flag_picks_ema_or_model(fixture, tmp_path):
    spec, states, _ = fixture
    tok_file, _ = official_files(tmp_path, states)
    mask = states["tokenizer"]["decoder.mask_token"].float()
    for weights, sign in (("ema", 1), ("model", -1)):
        cfg = spec_config(spec, str(tmp_path / weights))
        path = official.import_official(tok_file, weights=weights, cfg=cfg)["tokenizer"]
        assert torch.equal(checkpoint.load_model(path)[0]["mask_token"], sign * mask)


class NotAllowed:
    """A pickled object the importer must refuse without running it."""

    ran = False

    def __setstate__(self, state):
        NotAllowed.ran = True


@pytest.mark.parametrize("case", ["unknown global", "missing key", "unexpected key", "wrong shape"])
def test_errors_name_file_key_and_shapes_and_write_nothing(fixture, tmp_path, case):
    spec, states, _ = fixture
    tok = dict(states["tokenizer"])
    extra, expect = {}, ""
    if case == "unknown global":
        extra, expect = {"stray": NotAllowed()}, "unknown pickled object tests.test_official.NotAllowed"
    elif case == "missing key":
        del tok["quant_conv.bias"]
        expect = r"missing key 'quant_conv.bias' \(expected shape \(32,\)\)"
    elif case == "unexpected key":
        tok["encoder.model.extra"] = torch.zeros(3, 4)
        expect = r"unexpected key 'encoder.model.extra' \(shape \(3, 4\)\)"
    else:
        tok["post_quant_conv.weight"] = torch.zeros(192, 32, 1, 1)
        expect = (r"key 'post_quant_conv.weight' has shape \(192, 32, 1, 1\), "
                  r"the paper profile expects \(192, 64, 1, 1\)")
    tok_file, gen_file = official_files(tmp_path, dict(states, tokenizer=tok), extra)
    cfg = spec_config(spec, str(tmp_path / "runs"))
    with pytest.raises(official.OfficialCheckpointError, match=str(tok_file).replace(".", r"\.") + ".*" + expect):
        official.import_official(tok_file, gen_file, cfg=cfg)
    assert not NotAllowed.ran
    assert not (tmp_path / "runs").exists()


def test_a_bad_generator_writes_no_tokenizer(fixture, tmp_path):
    spec, states, _ = fixture
    gen = {k: v for k, v in states["generator"].items() if k != "blocks.1.attn.scale_mul_1H11"}
    tok_file, gen_file = official_files(tmp_path, dict(states, generator=gen))
    with pytest.raises(official.OfficialCheckpointError, match="missing key 'blocks.1.attn.scale_mul_1H11'"):
        official.import_official(tok_file, gen_file, cfg=spec_config(spec, str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()


def test_cli_imports_and_reports_errors(fixture, tmp_path, capsys):
    from imagefolder import cli
    spec, states, _ = fixture
    tok_file, gen_file = official_files(tmp_path, states)
    cfg = spec_config(spec, str(tmp_path / "runs"))
    words = [f"{k}={v}" for k, v in spec_overrides(spec).items()] + [f"run_dir={tmp_path / 'runs'}"]
    cli.main(["import-official", "--tokenizer", str(tok_file), "--generator", str(gen_file), *words])
    printed = capsys.readouterr().out
    for kind, name in (("tokenizer", pipeline.tokenizer_name(cfg)), ("generator", pipeline.generator_name(cfg))):
        path = pipeline.run_path(cfg, kind, name) / "model.safetensors"
        assert path.exists() and f"{kind}: {path}" in printed
    gen_file.unlink()
    with pytest.raises(SystemExit, match=f"import-official: {gen_file}: no such file"):
        cli.main(["import-official", "--tokenizer", str(tok_file), "--generator", str(gen_file), "--force", *words])
