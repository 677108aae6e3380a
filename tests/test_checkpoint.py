import fcntl
import os
import pickle

import pytest
import torch

from imagefolder import checkpoint
from imagefolder.checkpoint import CheckpointError


def test_model_round_trip_with_config(tmp_path):
    sd = {"w": torch.randn(3, 4), "b": torch.arange(3)}
    checkpoint.save_model(sd, tmp_path / "m.safetensors", {"a": 1, "q": {"k": 2}}, {"steps": 5})
    loaded, cfg, extra = checkpoint.load_model(tmp_path / "m.safetensors")
    assert torch.equal(loaded["w"], sd["w"]) and cfg == {"a": 1, "q": {"k": 2}} and extra == {"steps": 5}


def test_config_mismatch_names_the_fields(tmp_path):
    path = tmp_path / "m.safetensors"
    checkpoint.save_model({"w": torch.zeros(1)}, path, {"a": 1, "q": {"k": 2, "p": 0.1}})
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(path, {"a": 2, "q": {"k": 3, "p": 0.1}})
    assert str(err.value) == f"{path} was made with a different config:\n  a: 1 → 2\n  q.k: 2 → 3"


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    checkpoint.save_model({"w": torch.randn(100)}, path, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        checkpoint.load_model(path)
    foreign = tmp_path / "f.safetensors"
    foreign.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError):
        checkpoint.load_model(foreign)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_training_state_never_unpickles_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = checkpoint.save_training(tmp_path / "ck", 1, {"w": torch.zeros(1)}, {"x": torch.zeros(1)}, {}, keep=2)
    torch.save({"payload": _Evil()}, folder / "state.pt")
    with pytest.raises(CheckpointError, match="cannot load training checkpoint"):
        checkpoint.load_training(folder)
    assert not (tmp_path / "pwned").exists()


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    root = tmp_path / "ck"
    checkpoint.save_training(root, 1, {"w": torch.ones(1)}, {"s": 1}, {"c": 1}, keep=2)

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_training(root, 2, {"w": torch.ones(1) * 2}, {"s": 2}, {"c": 1}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]
    step, tensors, state = checkpoint.load_training(checkpoint.latest_training(root))
    assert step == 1 and state == {"s": 1}


def test_keep_only_newest(tmp_path):
    for s in range(1, 5):
        checkpoint.save_training(tmp_path, s, {"w": torch.ones(1)}, {}, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000003", "step_00000004"]
    assert checkpoint.latest_training(tmp_path).name == "step_00000004"


def _try_lock(path) -> bool:
    with open(f"{path}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_exclusive_holds_the_run_lock_until_exit(tmp_path):
    run = tmp_path / "tok-0123"
    with checkpoint.exclusive(run):
        assert not _try_lock(run)  # a second process (a parallel notebook) would wait here
    assert _try_lock(run)
