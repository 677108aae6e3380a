"""Faults planted in a smoke tokenizer's training checkpoints, one at a time: each is refused with a
CheckpointError naming the checkpoint and the fault, or, when it changes nothing that defines the run, resumed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from imagefolder import checkpoint, config, pipeline
from imagefolder.checkpoint import CheckpointError

BUDGET = {"train_tokenizer.steps": 2, "train_tokenizer.ckpt_every": 1, "tokenizer.disc_start": 1}
CODEBOOK, TO_PIXELS = "model.tokenizer.quantizer.msrq.0.codebook.weight", "model.tokenizer.to_pixels.weight"


def _cfg(run_dir: Path, overrides: dict | None = None) -> config.Config:
    return config.profile("smoke", BUDGET | {"run_dir": str(run_dir)} | (overrides or {}))


def _run(cfg: config.Config) -> Path:
    return pipeline.run_path(cfg, "tokenizer", pipeline.tokenizer_name(cfg))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The runs folder of a finished 2-step smoke tokenizer (checkpoints at steps 1 and 2), trained once."""
    runs = tmp_path_factory.mktemp("finished") / "runs"
    pipeline.train_tokenizer(_cfg(runs))
    return runs


@pytest.fixture
def killed(finished, tmp_path) -> Path:
    """A copy of `finished` as if killed after its last checkpoint (no exported model yet)."""
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs)
    (_run(_cfg(runs)) / "model.safetensors").unlink()
    return runs


def _last_checkpoint(runs: Path) -> Path:
    return checkpoint.latest_training(_run(_cfg(runs)) / "checkpoints")


def _rewrite_tensors(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


# ----------------------------------------------------------------------------- refused

@pytest.mark.parametrize("dropped", [[CODEBOOK, TO_PIXELS], ["ema.module.quantizer.msrq.1.codebook.weight"]])
def test_missing_trainable_tensor_is_named(killed, dropped):
    folder = _last_checkpoint(killed)
    _rewrite_tensors(folder, lambda t: [t.pop(k) for k in dropped])
    with pytest.raises(CheckpointError, match=r"does not match the (model|EMA) being trained: missing tensors") as err:
        pipeline.train_tokenizer(_cfg(killed))
    assert str(folder) in str(err.value)
    assert all(k.split(".", 1)[1] in str(err.value) for k in dropped)


def test_unexpected_tensor_is_named(killed):
    folder = _last_checkpoint(killed)
    _rewrite_tensors(folder, lambda t: t.update({"model.tokenizer.stray.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['tokenizer\.stray\.weight'\]") as err:
        pipeline.train_tokenizer(_cfg(killed))
    assert str(folder) in str(err.value)


def test_changed_learning_rate_is_refused(killed):
    """A checkpoint found under another run's name (moved, or a hash collision) is not resumed."""
    cfg = _cfg(killed, {"train_tokenizer.lr": 1e-4})
    shutil.copytree(_run(_cfg(killed)), _run(cfg))
    with pytest.raises(CheckpointError, match=r"train_tokenizer\.lr: 0\.003 → 0\.0001"):
        pipeline.train_tokenizer(cfg)


def test_truncated_safetensors_is_refused(killed):
    path = _last_checkpoint(killed) / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        pipeline.train_tokenizer(_cfg(killed))


def test_missing_latest_target_is_refused(killed):
    folder = _last_checkpoint(killed)
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match=f"points to .*{folder.name}, which does not exist"):
        pipeline.train_tokenizer(_cfg(killed))


class _Payload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_payload_in_state_never_runs(killed, tmp_path):
    target = tmp_path / "payload-ran"
    torch.save({"payload": _Payload(target)}, _last_checkpoint(killed) / "state.pt")
    with pytest.raises(CheckpointError, match="cannot load training checkpoint"):
        pipeline.train_tokenizer(_cfg(killed))
    assert not target.exists()


# ----------------------------------------------------------------------------- accepted

@pytest.mark.parametrize("change", [{"evaluation.batch_size": 7}, {"train_tokenizer.ckpt_every": 5},
                                    {"train_tokenizer.log_every": 3}, {"train_tokenizer.keep_ckpts": 4}, "run_dir"])
def test_resume_ignores_what_does_not_define_the_run(killed, tmp_path, capsys, change):
    runs = killed
    if change == "run_dir":
        runs = tmp_path / "moved"
        shutil.move(killed, runs)
    cfg = _cfg(runs, None if change == "run_dir" else change)
    assert pipeline.tokenizer_name(cfg) == pipeline.tokenizer_name(_cfg(runs))
    path = pipeline.train_tokenizer(cfg)
    assert "resuming from" in capsys.readouterr().out and path.exists()
    saved = load_file(str(_last_checkpoint(runs) / "model.safetensors"))
    assert not any(k.startswith("model.teacher.") for k in saved)  # the frozen teacher is never saved


def test_bookkeeping_and_execution_fields_leave_every_run_name(tmp_path):
    base = _cfg(tmp_path)
    names = (pipeline.tokenizer_name(base), pipeline.generator_name(base))
    for section in ("train_tokenizer", "train_generator", "teacher.train"):
        for name, value in (("ckpt_every", 7), ("keep_ckpts", 9), ("log_every", 11), ("compile", True)):
            cfg = _cfg(tmp_path, {f"{section}.{name}": value})
            assert (pipeline.tokenizer_name(cfg), pipeline.generator_name(cfg)) == names, f"{section}.{name}"
    assert pipeline.tokenizer_name(_cfg(tmp_path, {"train_tokenizer.lr": 1e-4})) != names[0]
    assert pipeline.generator_name(_cfg(tmp_path, {"train_generator.lr": 1e-4})) != names[1]


def test_sampling_fields_leave_the_generator_name_and_a_loaded_generator_samples_as_asked(tmp_path):
    base = _cfg(tmp_path)
    other = _cfg(tmp_path, {"generator.cfg_scale": 0.5, "generator.top_k": 3, "generator.top_p": 0.8})
    assert pipeline.generator_name(other) == pipeline.generator_name(base)
    assert pipeline.generator_name(_cfg(tmp_path, {"generator.width": 48})) != pipeline.generator_name(base)
    path = pipeline.train_generator(base)
    assert pipeline.train_generator(other) == path  # found, not trained again
    generator, _, stored = pipeline.load_generator(path, "cpu", other)
    settings = (0.5, 3, 0.8)
    assert (generator.cfg.cfg_scale, generator.cfg.top_k, generator.cfg.top_p) == settings
    assert (stored.generator.cfg_scale, stored.generator.top_k, stored.generator.top_p) == settings
    assert pipeline.load_generator(path)[0].cfg.cfg_scale == base.generator.cfg_scale  # without cfg: as stored


# ----------------------------------------------------------------------------- orphans

def test_stale_temporary_folders_are_removed_at_the_next_save(tmp_path):
    root = tmp_path / "checkpoints"
    checkpoint.save_training(root, 1, {"w": torch.ones(1)}, {}, {}, keep=2)
    stale = root / ".tmp-step_00000002-k1ll3d"  # what a kill during the save of step 2 leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    others = [root / ".tmp-notes", root / "notes"]  # not temporaries of a save: kept
    for other in others:
        other.mkdir()
    checkpoint.save_training(root, 2, {"w": torch.ones(1)}, {}, {}, keep=2)
    assert not stale.exists() and all(p.exists() for p in others)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000001", "step_00000002"]


def test_training_checkpoint_round_trip_and_config_mismatch(tmp_path):
    folder = checkpoint.save_training(tmp_path, 7, {"w": torch.arange(3.0)}, {"opt": torch.ones(2), "n": 3},
                                      {"lr": 0.1, "steps": 10}, keep=1)
    assert folder == tmp_path / "step_00000007" and (tmp_path / "latest").read_text() == "step_00000007"
    step, tensors, state = checkpoint.load_training(folder, {"lr": 0.1, "steps": 10})
    assert step == 7 and torch.equal(tensors["w"], torch.arange(3.0)) and state["n"] == 3
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_training(folder, {"lr": 0.2, "steps": 10})
    assert str(err.value) == f"{folder} was made with a different config:\n  lr: 0.1 → 0.2"


def test_load_exactly_names_missing_and_unexpected_tensors_and_misfits(tmp_path):
    from imagefolder.train import _load_exactly
    net = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError) as err:
        _load_exactly(net, {"weight": torch.zeros(2, 2), "x": torch.zeros(1)}, {"weight", "bias"}, "model", tmp_path)
    assert str(err.value) == (f"{tmp_path} does not match the model being trained: missing tensors ['bias']; "
                              f"unexpected tensors ['x']")
    with pytest.raises(CheckpointError) as err:
        _load_exactly(net, {"weight": torch.zeros(3, 2)}, {"weight"}, "EMA", tmp_path)
    assert str(err.value).startswith(f"{tmp_path}: the EMA tensors do not fit: ") and "size mismatch" in str(err.value)
    bias = net.bias.detach().clone()
    _load_exactly(net, {"weight": torch.ones(2, 2)}, {"weight"}, "model", tmp_path)  # bias: frozen, kept
    assert torch.equal(net.weight.detach(), torch.ones(2, 2)) and torch.equal(net.bias.detach(), bias)


def test_state_dict_hash_by_hand():
    """16 hex digits of SHA-256 over each tensor's `name|dtype|shape|` and its bytes, in name order."""
    import hashlib
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0]]))
        net.bias.fill_(0.5)
    h = hashlib.sha256()
    for name, values in (("bias", [0.5]), ("weight", [1.0, 2.0])):
        shape = "(1,)" if name == "bias" else "(1, 2)"
        h.update(f"{name}|torch.float32|{shape}|".encode() + torch.tensor(values).numpy().tobytes())
    assert checkpoint.state_dict_hash(net) == h.hexdigest()[:16]
    assert checkpoint.state_dict_hash(net.double()) != checkpoint.state_dict_hash(net.float())


def test_stale_temporaries_are_only_our_folders(tmp_path):
    (tmp_path / ".tmp-step_notours").mkdir()  # the prefix, not the name pattern
    (tmp_path / ".tmp-step_00000001-abc").write_text("a file, not a folder")
    stale = tmp_path / ".tmp-step_00000003-xyz"
    stale.mkdir()
    assert checkpoint.remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-step_00000001-abc", ".tmp-step_notours"]


def test_a_save_is_written_beside_its_final_folder_and_replaces_an_earlier_save_of_its_step(tmp_path, monkeypatch):
    written = []
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, path: (written.append(Path(path)), save(obj, path)))
    checkpoint.save_training(tmp_path, 5, {"w": torch.zeros(1)}, {"n": 1}, {}, keep=2)
    assert written[0].parent.parent == tmp_path and written[0].parent.name.startswith(".tmp-step_00000005-")
    checkpoint.save_training(tmp_path, 5, {"w": torch.ones(1)}, {"n": 2}, {}, keep=2)
    step, tensors, state = checkpoint.load_training(tmp_path / "step_00000005")
    assert (step, state["n"]) == (5, 2) and torch.equal(tensors["w"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000005"]
