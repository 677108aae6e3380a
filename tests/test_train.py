import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imagefolder import checkpoint
from imagefolder.config import TrainConfig
from imagefolder.train import (
    DistInfo,
    StepBatchSampler,
    as_floats,
    build_optimisation,
    lr_factor,
    resume,
    save_checkpoint,
    train,
)
from tests.toy import ToyObjective, toy_dataset

TCFG = TrainConfig(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, ckpt_every=4, log_every=2, ema_decay=0.9)


def _fresh(crash_at=None):
    torch.manual_seed(0)
    return ToyObjective(crash_at)


def test_training_lowers_the_loss_and_exports_the_model(tmp_path):
    result = train(_fresh(), toy_dataset(), TrainConfig(steps=60, batch_size=16, lr=3e-2, warmup_steps=5,
                                                        log_every=10, ckpt_every=30), tmp_path, seed=0, device="cpu")
    assert result.steps == 60 and result.history[-1]["loss_model"] < 0.2 * result.history[0]["loss_model"]
    tensors, _, extra = checkpoint.load_model(result.model_path)
    assert extra["steps"] == 60 and set(tensors) == set(_fresh().net.state_dict())


def test_killed_run_resumes_to_the_same_result(tmp_path):
    ref = train(_fresh(), toy_dataset(), TCFG, tmp_path / "ref", seed=3, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(_fresh(crash_at=6), toy_dataset(), TCFG, tmp_path / "run", seed=3, device="cpu")
    assert checkpoint.latest_training(tmp_path / "run" / "checkpoints").name == "step_00000004"
    resumed = train(_fresh(), toy_dataset(), TCFG, tmp_path / "run", seed=3, device="cpu")
    assert resumed.resumed_from == 4 and resumed.steps == 12
    a, _, _ = checkpoint.load_model(ref.model_path)
    b, _, _ = checkpoint.load_model(resumed.model_path)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in ref.history]


def test_resume_with_a_different_config_is_refused(tmp_path):
    train(_fresh(), toy_dataset(), TCFG, tmp_path, seed=0, device="cpu", config={"lr": 1})
    with pytest.raises(checkpoint.CheckpointError, match="lr: 1 → 2"):
        train(_fresh(), toy_dataset(), TCFG, tmp_path, seed=0, device="cpu", config={"lr": 2})


def test_resume_restores_this_ranks_rng_and_cuts_the_history_at_the_checkpoint(tmp_path):
    """A fresh run starts at step 0; a resumed rank r takes the r-th saved RNG state (the last one when more
    ranks resume than saved), and rank 0 alone rewrites history.jsonl to the rows up to the checkpoint."""
    cpu, key = torch.device("cpu"), {"lr": 1}
    opt = build_optimisation(_fresh(), TCFG, cpu)
    assert resume(opt, tmp_path, key, DistInfo(), cpu) == (None, 0, [])
    save_checkpoint(opt, tmp_path / "checkpoints", 4, key, keep=2, info=DistInfo(), device=cpu)
    _, tensors, state = checkpoint.load_training(tmp_path / "checkpoints" / "step_00000004")
    state["rng"] = [{"cpu": torch.Generator().manual_seed(seed).get_state()} for seed in (1, 2)]  # two ranks
    checkpoint.save_training(tmp_path / "checkpoints", 4, tensors, state, key, keep=2)
    rows = [{"step": 2, "loss": 0.5}, {"step": 4, "loss": 0.25}, {"step": 6, "loss": 0.125}]
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for rank, seed in ((1, 2), (2, 2), (0, 1)):
        folder, start, kept = resume(opt, tmp_path, key, DistInfo(rank=rank, world=3), cpu)
        assert (folder, start, kept) == (tmp_path / "checkpoints" / "step_00000004", 4, rows[:2])
        assert torch.equal(torch.rand(5), torch.rand(5, generator=torch.Generator().manual_seed(seed))), rank
        if rank:
            assert len(history.read_text().splitlines()) == 3, "a rank other than 0 wrote the history"
    assert history.read_text() == '{"step": 2, "loss": 0.5}\n{"step": 4, "loss": 0.25}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "history.jsonl"]


def test_resume_names_the_checkpoint_and_the_part_whose_tensors_differ(tmp_path):
    """A checkpoint whose EMA lacks a tensor, or whose model has a stray one, is refused naming the folder,
    the part (`model` or `EMA`, the prefix stripped) and the tensors, in full."""
    cpu, key = torch.device("cpu"), {"lr": 1}
    opt = build_optimisation(_fresh(), TCFG, cpu)
    save_checkpoint(opt, tmp_path / "checkpoints", 4, key, keep=2, info=DistInfo(), device=cpu)
    folder = tmp_path / "checkpoints" / "step_00000004"
    _, tensors, state = checkpoint.load_training(folder)
    for edit, message in (
            (lambda t: t.pop("ema.module.2.bias"), "the EMA being trained: missing tensors ['module.2.bias']"),
            (lambda t: t.update({"model.net.9.weight": torch.zeros(1)}),
             "the model being trained: unexpected tensors ['net.9.weight']")):
        edited = dict(tensors)
        edit(edited)
        checkpoint.save_training(tmp_path / "checkpoints", 4, edited, state, key, keep=2)
        with pytest.raises(checkpoint.CheckpointError) as err:
            resume(opt, tmp_path, key, DistInfo(), cpu)
        assert str(err.value) == f"{folder} does not match {message}"


def test_step_logs_are_read_as_floats_in_their_order():
    logs = {"loss_model": torch.tensor(0.5), "acc": 0.25, "grad_norm_model": torch.tensor(2.0, dtype=torch.float64)}
    assert as_floats(logs) == {"loss_model": 0.5, "acc": 0.25, "grad_norm_model": 2.0}
    assert list(as_floats(logs)) == list(logs) and as_floats({}) == {}


def test_step_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(20, 4, 0, 0, 12, 0, 1))
    tail = list(StepBatchSampler(20, 4, 0, 7, 12, 0, 1))
    assert tail == full[7:] and sorted(sum(full[:5], [])) == list(range(20))
    shards = [list(StepBatchSampler(20, 4, 0, 0, 3, r, 2)) for r in range(2)]
    assert all(sorted(a + b) == sorted(c) for a, b, c in zip(*shards, full[:3]))


def test_lr_schedule_warms_up_then_decays():
    t = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, t) == pytest.approx(0.1) and lr_factor(9, t) == pytest.approx(1.0)
    assert lr_factor(100, t) == pytest.approx(0.1) and lr_factor(50, t) < lr_factor(20, t)


ROOT = Path(__file__).resolve().parents[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_two_process_gloo_torchrun(tmp_path):
    proc = _torchrun("-m", "tests.toy", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("rank done: steps=8") == 2
    assert checkpoint.latest_training(tmp_path / "checkpoints").name == "step_00000008"
    assert (tmp_path / "model.safetensors").exists()


def test_torchrun_trains_the_gan_tokenizer_objective(tmp_path):
    """Both phases (tokenizer, discriminator) under DDP with gloo, through the CLI."""
    proc = _torchrun("-m", "imagefolder", "train-tokenizer", "--profile", "smoke", f"run_dir={tmp_path}",
                     "train_tokenizer.steps=4", "tokenizer.disc_start=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = proc.stdout.split()  # printed once, by rank 0
    tensors, _, extra = checkpoint.load_model(path)
    assert extra["steps"] == 4 and any(k.startswith("encoder.") for k in tensors)
