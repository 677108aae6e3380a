"""Tests of the benchmarks: token layouts, FLOPs ratios, the paper-config count and tokenizer throughput."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from imagefolder import bench, claims, config, tables
from imagefolder.config import GeneratorConfig, QuantizerConfig


@pytest.fixture(scope="module")
def sampling():
    return bench.sampling_benchmark(config.profile("smoke"), warmup=0, repeats=1)[0].set_index("layout")


def test_sampling_benchmark_layouts(sampling):
    cfg = config.profile("smoke")
    assert list(sampling.index) == ["folded", "unfolded", "VAR-style", "raster"]
    folded, unfolded, var, raster = (sampling.loc[n] for n in sampling.index)
    for col in ("steps_ratio", "positions_ratio", "latency_ratio", "flops_ratio"):
        assert folded[col] == 1.0
    # folding halves the sequence (P = 2) at the same number of AR steps and tokens per image
    assert folded.positions * cfg.quantizer.branches == unfolded.positions
    assert folded.steps == unfolded.steps == len(cfg.quantizer.scales)
    assert folded.tokens == unfolded.tokens == cfg.quantizer.branches * cfg.tokens_per_branch
    assert var.positions == var.tokens == config.token_count(config.scaled_schedule(cfg.grid, config.VAR_SCALES))
    assert raster.steps == raster.positions == raster.tokens == cfg.grid ** 2
    assert (sampling.params_blocks == folded.params_blocks).all()  # equal width and depth


def test_sampling_benchmark_flops(sampling):
    assert (sampling.flops > 0).all() and (sampling.latency_s > 0).all()
    assert sampling.loc["unfolded", "flops_ratio"] > 1
    assert "scaled_dot_product_attention" in sampling.flops_counted.iloc[0]


# One block's FLOPs in a sampling call, by hand (2 per multiply-add): width W = 16, guidance (2 batch rows),
# scales 1 and 2, P = 2 branches. Once per call, adaLN: 2·(2·W·6W) = 6144. Per position and row: qkv 2·W·3W,
# proj 2·W·W, MLP 2·(2·W·4W): 24·W² = 6144; attention over the n keys cached so far (QKᵀ and AV): 4·W·n = 64·n.
#   folded, steps of l = 1, 4 positions over n = 1, 5 keys: 6144 + 2·(5·6144 + 64·(1·1 + 4·5)) = 70272;
#   unfolded, a position per branch, l = 2, 8 over n = 2, 10: 6144 + 2·(10·6144 + 64·(2·2 + 8·10)) = 139776.
# Depth 2 minus depth 1 leaves one block (embeddings, head and quantizer cancel).
@pytest.mark.parametrize("layout, block_flops", [("folded", 70272), ("unfolded", 139776)])
def test_a_blocks_sampling_flops_by_hand(layout, block_flops):
    qcfg = QuantizerConfig(scales=[1, 2], branches=2, codebook_size=8, code_dim=4)
    f1, f2 = (bench.sample_flops(GeneratorConfig(layout=layout, depth=d, width=16, heads=2, cfg_scale=1.0), qcfg,
                                 num_classes=3) for d in (1, 2))
    assert f2 - f1 == block_flops


def test_depth_extension_is_exact():
    gcfg = GeneratorConfig(depth=3, width=64, heads=2, top_k=8)
    qcfg = QuantizerConfig(scales=[1, 2, 3], branches=2, codebook_size=32)
    assert bench.depth_extended_flops(gcfg, qcfg, num_classes=5) == bench.sample_flops(gcfg, qcfg, num_classes=5)


@pytest.mark.slow  # ≈ 10–25 s on 2 cores: four generators at the paper's width, depth 1 and 2
def test_paper_flops():
    df = bench.paper_flops().set_index("model")
    assert df.loc["ImageFolder", "positions"] == 286 and df.loc["VAR d16", "positions"] == 680
    assert df.loc["ImageFolder", "tokens"] == 572
    assert 0.34e9 < df.loc["ImageFolder", "params_blocks"] < 0.38e9  # the paper's ≈362M
    ratio = df.loc["ImageFolder", "flops_vs_VAR"]
    assert 0.1 < ratio < 1 and df.loc["VAR d16", "flops_vs_VAR"] == 1.0


def test_flops_claim_picks_the_nearer_ratio_in_log():
    (claim,) = tables.TABLE6_PAPER.claims

    def verdict(ratio):
        return claims.judge(claim, pd.DataFrame({"model": ["ImageFolder", "VAR d16"], "flops_vs_VAR": [ratio, 1.0]}))[1]

    assert verdict(0.3) == verdict(0.1) == "holds"
    assert "1/2" in verdict(0.4) and "1/2" in verdict(0.9)


def test_var_and_raster_use_the_patch_grid_of_the_paper_profile():
    paper = bench.generator_setups(config.profile("paper"))
    assert paper["VAR-style"][1].scales == config.VAR_SCALES  # VAR's 680 tokens at 256 px
    assert paper["raster"][1].scales == [16] and paper["raster"][0].layout == "raster"
    assert paper["folded"][1].scales == config.PAPER_SCALES


def test_tokenizer_benchmark():
    cfg = config.profile("smoke")
    df = bench.tokenizer_benchmark(cfg, batch=4, warmup=0, repeats=1).set_index("stage")
    assert list(df.index) == ["encode", "decode", "train step"]
    assert (df.images_per_s > 0).all() and (df.batch == 4).all()
    assert df.images_per_s.tolist() == pytest.approx((4 / df.median_s).tolist())


def test_attention_benchmark_times_both_attentions_on_both_samplers(monkeypatch):
    """One row per (attention, sampler); scaled-dot's slowdown is 1 by construction, L2-norm's is its time over
    scaled-dot's on the same sampler, per round, held against the limit."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the compiled path's bookkeeping, not inductor
    df = bench.attention_benchmark(config.profile("smoke"), warmup=0, repeats=3)
    assert list(zip(df.attention, df.sampler)) == [("scaled_dot", "eager"), ("scaled_dot", "compiled"),
                                                   ("l2_norm", "eager"), ("l2_norm", "compiled")]
    assert (df[df.attention == "scaled_dot"].slowdown == 1).all()
    assert (df.slowdown_p10 <= df.slowdown).all() and (df.slowdown <= df.slowdown_p90).all()
    assert (df.within_limit == (df.slowdown <= bench.ATTENTION_LIMIT)).all() and (df.latency_s > 0).all()
