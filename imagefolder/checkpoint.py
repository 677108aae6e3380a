"""One checkpoint format, written atomically and loaded without unpickling code.

A training checkpoint is a folder `step_<N>/` holding `model.safetensors` (trainable weights and the
EMA), `state.pt` (optimizer, scheduler and RNG state: tensors and plain containers only, loaded with
`weights_only=True`) and `meta.json` (step, and the config that defines the run, compared at resume).
It is written under a temporary name and renamed into place, then `latest` is replaced, so a killed run
never leaves a half-written checkpoint behind (the temporary folder it may leave is removed at the next
save). A finished model is one safetensors file with its config in the metadata (`save_model` /
`load_model`). Every file is written through the one atomic writer, `atomic_write`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .config import diff


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, foreign or made with a different config."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """The one atomic writer: `write(tmp)` fills a temporary file in `path`'s folder, which is fsynced and
    renamed onto `path` (`os.replace`), so readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")  # `write` creates it (umask)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (blocking): one process at a time writes what `path` names."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def state_dict_hash(module: torch.nn.Module) -> str:
    """Short SHA-256 of a module's state dict (names, dtypes, shapes, values): identifies its weights."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path,
                 metadata: dict[str, str] | None = None) -> Path:
    """Save a state dict as one safetensors file (string `metadata` in its header), atomically."""
    return atomic_write(path, lambda tmp: save_file(_contiguous(tensors), str(tmp), metadata=metadata))


def save_model(tensors: dict[str, torch.Tensor], path: str | Path, config: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    """Save a state dict as safetensors with `config` (and `extra`) as JSON metadata, atomically."""
    save_tensors(tensors, path, {"config": json.dumps(config), "extra": json.dumps(extra or {})})


def load_model(path: str | Path, expected_config: dict[str, Any] | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Load `(state_dict, config, extra)` from a file written by `save_model`.

    With `expected_config`, a differing config raises CheckpointError listing the fields that differ.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint (truncated or foreign?): {err}"
                              ) from err
    if "config" not in meta:
        raise CheckpointError(f"{path} has no config metadata: not a checkpoint written by imagefolder")
    config = json.loads(meta["config"])
    if expected_config is not None:
        check_config(config, expected_config, path)
    return tensors, config, json.loads(meta.get("extra", "{}"))


def check_config(saved: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Raise CheckpointError naming every field where a checkpoint's config differs from `expected`."""
    changes = diff(saved, expected)
    if changes:
        raise CheckpointError(f"{path} was made with a different config:\n  " + "\n  ".join(changes))


TMP_PREFIX = ".tmp-step_"  # a checkpoint being written: `.tmp-step_<8 digits>-<random>/`
_TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"\d{8}-\w+")


def remove_stale_temporaries(ckpt_root: str | Path) -> list[Path]:
    """Delete the `.tmp-step_…` folders a killed save left in `ckpt_root` (nothing else); returns them.
    Only one process writes a run's checkpoints (rank 0, under the run lock), so any such folder is stale."""
    stale = [p for p in Path(ckpt_root).glob(f"{TMP_PREFIX}*") if p.is_dir() and _TMP_NAME.fullmatch(p.name)]
    for folder in stale:
        shutil.rmtree(folder)
    return stale


def save_training(ckpt_root: str | Path, step: int, model_tensors: dict[str, torch.Tensor],
                  state: dict[str, Any], config: dict[str, Any], keep: int) -> Path:
    """Write `ckpt_root/step_<step>/` atomically, point `latest` at it, keep the newest `keep`.

    `config` is what the checkpoint is compared on at resume (`load_training`'s `expected_config`).
    Temporary folders of earlier, killed saves are removed first.
    """
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}{step:08d}-"))
    try:
        save_file(_contiguous(model_tensors), str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, "config": config}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_training(ckpt_root: str | Path) -> Path | None:
    """The folder `latest` points to, or None when there is no checkpoint yet."""
    pointer = Path(ckpt_root) / "latest"
    if not pointer.exists():
        return None
    folder = Path(ckpt_root) / pointer.read_text().strip()
    if not folder.is_dir():
        raise CheckpointError(f"{pointer} points to {folder}, which does not exist")
    return folder


def load_training(folder: str | Path, expected_config: dict[str, Any] | None = None
                  ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """`(step, model tensors, state)` of a training checkpoint folder; never unpickles code."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        tensors = load_file(str(folder / "model.safetensors"))
        state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    except (OSError, ValueError, KeyError, SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"cannot load training checkpoint {folder} (truncated or foreign?): {err}") from err
    if expected_config is not None:
        check_config(meta["config"], expected_config, folder)
    return int(meta["step"]), tensors, state
