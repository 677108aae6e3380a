"""The fast paths: bf16 autocast on CPU trains, compiled or not, matmul attention equals the fused
kernel, the precision context restores the modules, the benchmark announces its workloads, thread choices
are printed, and evaluation samples through the compiled sampler where the config asks."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from imagefolder import bench, config, pipeline
from imagefolder.generator import SelfAttention, matmul_attention
from imagefolder.train import forward_precision, uses_bf16

BF16 = {"train_tokenizer.amp": "bf16", "train_generator.amp": "bf16", "train_tokenizer.steps": 8,
        "train_generator.steps": 8, "tokenizer.disc_start": 4}


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_matmul_attention_equals_the_fused_kernel(masked, scale):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    mask = (torch.rand(7, 7) > 0.4) | torch.eye(7, dtype=torch.bool) if masked else None
    assert torch.allclose(matmul_attention(q, k, v, mask, 0.0, scale),
                          F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale), atol=1e-5)


def test_forward_precision_switches_attention_only_for_cpu_bf16_training():
    attn = SelfAttention(16, 2, 0.0, "l2_norm")
    cpu = torch.device("cpu")
    assert not uses_bf16(cpu, "auto") and uses_bf16(cpu, "bf16") and uses_bf16(torch.device("cuda"), "auto")
    with forward_precision(attn, cpu, "off"):
        assert attn.fused_attn and not torch.is_autocast_enabled("cpu")
    with forward_precision(attn, cpu, "bf16"):
        assert not attn.fused_attn and torch.is_autocast_enabled("cpu")
        assert attn(torch.randn(1, 4, 16)).dtype == torch.bfloat16
    assert attn.fused_attn and not torch.is_autocast_enabled("cpu")
    with torch.no_grad(), forward_precision(attn, cpu, "bf16"):  # evaluation keeps the fused kernel
        assert attn.fused_attn and torch.is_autocast_enabled("cpu")


@pytest.mark.slow  # ≈ 15 s on 2 cores: a smoke tokenizer and generator, 8 steps each
def test_bf16_smoke_training_lowers_the_loss_without_nan(tmp_path):
    cfg = config.profile("smoke", BF16 | {"run_dir": str(tmp_path)})
    for path in (pipeline.train_tokenizer(cfg), pipeline.train_generator(cfg)):
        rows = [json.loads(line) for line in path.with_name("history.jsonl").read_text().splitlines()]
        losses = [r["loss_model"] for r in rows]
        assert all(math.isfinite(v) for r in rows for v in r.values()), path
        assert losses[-1] < losses[0], (path, losses)


@pytest.mark.slow  # ≈ 40 s on 2 cores, mostly inductor compiling
def test_compiled_bf16_generator_trains_like_eager(tmp_path, monkeypatch):
    """`train_generator.compile` (the cpu profile's path): the loss falls, nothing is NaN, and the first
    step's loss equals the eager one's (the same batch and weights). A compiled run first drops dynamo's
    graphs (else `train-all`, many runs in one process, passes the recompile limit and trains eagerly)."""
    reset, resets = torch._dynamo.reset, []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: (resets.append(1), reset()))
    runs, resets_by = {}, {}
    for compiled in (False, True):
        cfg = config.profile("smoke", BF16 | {"run_dir": str(tmp_path / str(compiled)),
                                              "train_generator.compile": compiled})
        path = pipeline.train_generator(cfg)
        runs[compiled] = [json.loads(line)["loss_model"]
                          for line in path.with_name("history.jsonl").read_text().splitlines()]
        resets_by[compiled] = len(resets)
    assert resets_by == {False: 0, True: 1}
    assert all(math.isfinite(v) for v in runs[True]) and runs[True][-1] < runs[True][0], runs
    assert runs[True][0] == pytest.approx(runs[False][0], rel=0.02), runs


def test_speed_benchmark_rows_are_ratios_to_fp32(capsys):
    cfg = config.profile("smoke")
    df = bench.speed_benchmark(cfg, warmup=0, repeats=1)
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("bench:")] == [  # each announced
        f"bench: {w} …" for w in ("tokenizer train step", "generator train step", "reconstruction",
                                  "study evaluation", "sampling batch 1", f"sampling batch {bench.SAMPLING_BATCH}")]
    assert set(df.workload.str.split(",").str[0]) == {"tokenizer train step", "generator train step",
                                                      "reconstruction (encode + decode)",
                                                      "study evaluation (rFD + gFD)", "sampling batch 1",
                                                      f"sampling batch {bench.SAMPLING_BATCH}"}
    variants = df.groupby("workload", sort=False).variant.agg(list)  # smoke evaluates in fp32: bf16 is a candidate
    candidates = ["bf16 (candidate, not adopted)", "bf16 + compiled sampler (candidate, not adopted)"]
    batch1 = variants[variants.index.str.startswith("sampling batch 1,")]
    assert len(batch1) == 4 and all(v == ["fp32 eager"] + candidates for v in batch1)
    assert variants[f"sampling batch {bench.SAMPLING_BATCH}, folded"] == ["fp32 eager", candidates[0]]
    steps = variants[variants.index.str.endswith("train step")]
    assert all(len(v) == 2 and v[1].startswith("adopted: ") for v in steps)
    assert len(variants["study evaluation (rFD + gFD)"]) == 3
    first = df.groupby("workload", sort=False).head(1)
    assert first.variant.str.startswith("fp32").all() and (first.speedup == 1.0).all() and (df.per_s > 0).all()
    training = df[df.workload.str.endswith("train step")]
    steps = [cfg.train_tokenizer.steps] * 2 + [cfg.train_generator.steps] * 2
    assert (training.first_call_s > 0).all() and training.run_calls.tolist() == steps
    assert (training.run_speedup > 0).all() and df.run_speedup.isna().sum() == len(df) - 4
    assert (df[df.workload.str.startswith("sampling batch 1,")].first_call_s > 0).all()


def test_configure_runtime_prints_and_returns_the_thread_count(capsys):
    before = torch.get_num_threads()
    try:
        assert pipeline.configure_runtime(config.profile("smoke", {"threads": 1})) == 1
        assert "1 torch threads (threads=1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_evaluation_amp_reconstructs_close_to_float32(tmp_path):
    """`evaluation.amp` (off on CPU by default, bf16 in the cpu profile) runs reconstruction under bf16 and
    returns the same kind of uint8 images, close to the float32 ones."""
    cfg = config.profile("smoke", {"run_dir": str(tmp_path), "train_tokenizer.steps": 2})
    tokenizer, _ = pipeline.load_tokenizer(pipeline.train_tokenizer(cfg))
    real = pipeline.val_subset(cfg, 8).uint8_images()
    fp32 = pipeline.reconstruct_all(tokenizer, real, 4)
    bf16 = pipeline.reconstruct_all(tokenizer, real, 4, amp="bf16")
    assert bf16.dtype == fp32.dtype == torch.uint8 and bf16.shape == fp32.shape
    assert (bf16.float() - fp32.float()).abs().mean() < 3  # grey levels out of 255
    assert uses_bf16(torch.device("cpu"), config.profile("cpu").evaluation.amp)  # as the cpu profile evaluates


@pytest.mark.parametrize("compiled", [False, True])
def test_evaluation_samples_through_the_compiled_sampler_where_the_config_says(monkeypatch, compiled):
    """`evaluation.compile_sampler` reaches `Generator.sample` for every evaluation batch."""
    from imagefolder.generator import Generator
    from imagefolder.tokenizer import ImageFolderTokenizer

    cfg = config.profile("smoke", {"evaluation.compile_sampler": compiled, "tokenizer.encoder_init": "random"})
    tokenizer = ImageFolderTokenizer(cfg).eval()
    generator = Generator(cfg.generator, cfg.quantizer, 3).eval()
    seen, sample = [], Generator.sample

    def spy(self, *args, **kwargs):
        seen.append(kwargs["compiled"])
        return sample(self, *args, **dict(kwargs, compiled=False))  # the wiring, not the compilation, is tested
    monkeypatch.setattr(Generator, "sample", spy)
    images = pipeline.sample_images(generator, tokenizer, torch.tensor([0, 1, 2]), cfg, seed=0, batch_size=2)
    assert images.shape == (3, 3, cfg.data.resolution, cfg.data.resolution) and seen == [compiled] * 2
