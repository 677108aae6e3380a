import fcntl
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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


# ----------------------------------------------------------------------------- the atomic writer

def test_atomic_write_creates_missing_parent_folders(tmp_path):
    """A file two folders below an absent one is written (the folders are made), as UTF-8, with no temporary left."""
    path = tmp_path / "a" / "b" / "notes.txt"
    assert checkpoint.atomic_write_text(path, "héllo ✓\n") == path
    assert path.read_bytes() == b"h\xc3\xa9llo \xe2\x9c\x93\n"
    assert [p.name for p in path.parent.iterdir()] == ["notes.txt"]


def test_atomic_write_fills_a_hidden_temporary_beside_the_file(tmp_path):
    """`write` gets `.<name>.<pid>-<8 random hex digits>.tmp` in the file's own folder (one file system, so
    the rename is atomic; hidden, so folder listings skip it); it becomes the file, and nothing else is left."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"new")
    checkpoint.atomic_write(path, write)
    checkpoint.atomic_write(path, write)
    assert all(tmp.parent == tmp_path for tmp in seen) and seen[0].name != seen[1].name
    assert all(re.fullmatch(rf"\.f\.bin\.{os.getpid()}-[0-9a-f]{{8}}\.tmp", tmp.name) for tmp in seen), seen
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_failed_atomic_write_raises_its_own_error_and_leaves_the_old_file(tmp_path):
    """A `write` that fails, before creating its temporary or half way through it, raises its own error; the
    old file is untouched and no temporary is left."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def fail_at_once(tmp):
        raise ValueError("no space for a single byte")

    def fail_half_way(tmp):
        tmp.write_bytes(b"ne")
        raise ValueError("disk full half way")
    for write, message in ((fail_at_once, "no space for a single byte"), (fail_half_way, "disk full half way")):
        with pytest.raises(ValueError) as err:
            checkpoint.atomic_write(path, write)
        assert type(err.value) is ValueError and str(err.value) == message
        assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# ----------------------------------------------------------------------------- finished models

def test_load_model_names_a_missing_file_and_a_file_without_config(tmp_path):
    """The two refusals of `load_model` say what is wrong in full: no file, or a safetensors file that
    `save_model` did not write (no header metadata at all, or metadata without the config)."""
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(missing)
    assert str(err.value) == f"checkpoint not found: {missing}"
    for name, metadata in (("bare.safetensors", None), ("other.safetensors", {"format": "pt"})):
        path = tmp_path / name
        save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
        with pytest.raises(CheckpointError) as err:
            checkpoint.load_model(path)
        assert str(err.value) == f"{path} has no config metadata: not a checkpoint written by imagefolder"


def test_load_model_without_extra_metadata_gives_an_empty_extra(tmp_path):
    """A model file with a config but no `extra` entry (written by `save_tensors` with the config alone)
    loads with `extra == {}`."""
    path = checkpoint.save_tensors({"w": torch.arange(4.0)}, tmp_path / "m.safetensors",
                                   {"config": json.dumps({"a": 1})})
    tensors, config, extra = checkpoint.load_model(path, {"a": 1})
    assert torch.equal(tensors["w"], torch.arange(4.0)) and config == {"a": 1} and extra == {}


# ----------------------------------------------------------------------------- training checkpoints

def test_a_failed_save_raises_its_own_error_when_its_temporary_is_gone(tmp_path, monkeypatch):
    """A save that fails because its temporary folder vanished (the disk went away) raises that failure,
    not the error of removing a folder that is no longer there; the previous checkpoint stays `latest`."""
    root = tmp_path / "ck"
    checkpoint.save_training(root, 1, {"w": torch.ones(1)}, {"s": 1}, {}, keep=2)

    def vanish(obj, path):
        shutil.rmtree(Path(path).parent)
        raise OSError("the disk went away")
    monkeypatch.setattr(torch, "save", vanish)
    with pytest.raises(OSError) as err:
        checkpoint.save_training(root, 2, {"w": torch.ones(1)}, {"s": 2}, {}, keep=2)
    assert type(err.value) is OSError and str(err.value) == "the disk went away"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]
    assert checkpoint.latest_training(root).name == "step_00000001"


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """The training state of a checkpoint written on a GPU (its tensors tagged `cuda:0` in state.pt) loads
    onto the CPU, whether or not this machine has a GPU."""
    folder = checkpoint.save_training(tmp_path, 3, {"w": torch.zeros(1)}, {}, {}, keep=1)
    state = {"opt": torch.arange(3.0), "rng": [torch.tensor([7], dtype=torch.uint8)], "n": 2}
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, folder / "state.pt")
    assert b"cuda:0" in (folder / "state.pt").read_bytes()  # the forged tag is really in the file
    step, _, loaded = checkpoint.load_training(folder)
    assert step == 3 and loaded["n"] == 2
    assert loaded["opt"].device.type == "cpu" and torch.equal(loaded["opt"], torch.arange(3.0))
    assert loaded["rng"][0].device.type == "cpu" and loaded["rng"][0].tolist() == [7]
