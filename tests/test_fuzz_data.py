"""Fuzz suite for the data loader: each fault is planted alone in a tiny ImageFolder tree, and the loader
must name the file, folder or class, or (under `skip_corrupt`) count the skip; never train silently."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagefolder import config, emoji
from imagefolder.config import ConfigError
from imagefolder.data import DataError, ImageFolderDataset
from tests.conftest import make_image_folder

PER_CLASS = 6  # images per class and split in make_image_folder


def _cfg(root: Path, **kw) -> config.DataConfig:
    return config.DataConfig(**{"name": "folder", "root": str(root), "resolution": 16} | kw)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height RGB pixels and that holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _noise_png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- unreadable files

def _zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    png = _noise_png()
    path.write_bytes(png[: len(png) // 2])


def _text(path: Path) -> None:
    path.write_text("this is not an image\n")


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)  # points at itself


def _directory(path: Path) -> None:
    path.mkdir()


def _bomb(path: Path) -> None:
    path.write_bytes(_header_only_png(20_000, 20_000))  # claims 400 M pixels, stores none


FAULTS = {"zero_byte": _zero_byte, "truncated": _truncated, "text": _text, "symlink_loop": _symlink_loop,
          "directory": _directory, "bomb": _bomb}


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("fault", FAULTS)
def test_unreadable_file_raises_naming_it(tmp_path, fault, in_memory):
    root = make_image_folder(tmp_path / "tree")
    FAULTS[fault](root / "train" / "b" / "x.png")
    with pytest.raises(DataError, match=r"b[/\\]x\.png"):
        ds = ImageFolderDataset(_cfg(root, in_memory=in_memory), "train")
        ds.uint8_images()  # on disk, the file is read here


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("fault", FAULTS)
def test_unreadable_file_is_a_counted_skip(tmp_path, capsys, fault, in_memory):
    root = make_image_folder(tmp_path / "tree")
    FAULTS[fault](root / "train" / "b" / "x.png")
    ds = ImageFolderDataset(_cfg(root, skip_corrupt=True, in_memory=in_memory), "train")
    assert len(ds) == 2 * PER_CLASS and ds.skipped == [str(root / "train" / "b" / "x.png")]
    assert len(ds.labels) == len(ds) and ds.uint8_images().shape == (2 * PER_CLASS, 3, 16, 16)
    printed = capsys.readouterr().out
    assert "x.png" in printed and "skipped 1 corrupt image(s) of 13" in printed


def test_both_loading_modes_skip_and_report_the_same(tmp_path, capsys):
    root = make_image_folder(tmp_path / "tree")
    _truncated(root / "train" / "a" / "x.png")
    _text(root / "train" / "b" / "y.png")
    memory = ImageFolderDataset(_cfg(root, skip_corrupt=True, in_memory=True), "train")
    printed = capsys.readouterr().out
    disk = ImageFolderDataset(_cfg(root, skip_corrupt=True, in_memory=False), "train")
    assert capsys.readouterr().out == printed and "skipped 2 corrupt image(s) of 14" in printed
    assert disk.skipped == memory.skipped and disk.files == memory.files
    assert torch.equal(disk.labels, memory.labels) and torch.equal(disk.uint8_images(), memory.uint8_images())


def test_skip_in_worker_processes_counts_the_same(tmp_path, capsys):
    root = make_image_folder(tmp_path / "tree")
    _truncated(root / "train" / "a" / "x.png")
    ds = ImageFolderDataset(_cfg(root, skip_corrupt=True, in_memory=False, num_workers=1), "train")
    assert ds.skipped == [str(root / "train" / "a" / "x.png")] and len(ds) == 2 * PER_CLASS
    assert "skipped 1 corrupt image(s) of 13" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"a[/\\]x\.png"):
        ImageFolderDataset(_cfg(root, in_memory=True, num_workers=1), "train")


def test_bomb_under_a_low_pixel_limit_is_named(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "tree")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 20×20 = 400 px > 2 × 100: a "bomb"
    with pytest.raises(DataError, match=r"train[/\\]a[/\\]0\.png.*decompression bomb"):
        ImageFolderDataset(_cfg(root), "train")


# ----------------------------------------------------------------------------- class folders

@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_class_folder_in_one_split_is_named(tmp_path, split):
    root = make_image_folder(tmp_path / "tree")
    (root / "train" / "aa_empty").mkdir()
    with pytest.raises(DataError, match=r"train[/\\]aa_empty"):
        ImageFolderDataset(_cfg(root), split)


def test_empty_class_folder_in_both_splits_is_named(tmp_path):
    root = make_image_folder(tmp_path / "tree")
    for split in ("train", "val"):
        (root / split / "c_empty").mkdir()
        (root / split / "c_empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"c_empty.*without images|without images.*c_empty"):
        ImageFolderDataset(_cfg(root), "val")


@pytest.mark.parametrize("split", ["train", "val"])
def test_class_missing_from_a_split_is_named(tmp_path, split):
    root = make_image_folder(tmp_path / "tree", classes=("a", "b", "c"))
    make_image_folder(tmp_path / "tree", classes=("d",), splits=("train",))
    for c in ("a",):
        for f in (root / "train" / c).iterdir():
            f.unlink()
        (root / "train" / c).rmdir()
    with pytest.raises(DataError, match=r"missing in train/: a; missing in val/: d"):
        ImageFolderDataset(_cfg(root), split)


def test_hidden_folders_and_files_are_ignored(tmp_path):
    root = make_image_folder(tmp_path / "tree")
    reference = {s: ImageFolderDataset(_cfg(root), s) for s in ("train", "val")}
    checkpoints = root / "train" / ".ipynb_checkpoints"  # what JupyterLab leaves behind
    checkpoints.mkdir()
    Image.new("RGB", (20, 20)).save(checkpoints / "0.png")
    (root / "train" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    (root / "val" / "b" / ".hidden.png").write_bytes(b"")
    for split in ("train", "val"):
        ds = ImageFolderDataset(_cfg(root), split)
        assert ds.classes == ["a", "b"] and ds.files == reference[split].files
        assert torch.equal(ds.labels, reference[split].labels)


def test_capped_split_still_has_every_class(tmp_path):
    root = make_image_folder(tmp_path / "tree", classes=("a", "b", "c"))
    for split in ("train", "val"):
        ds = ImageFolderDataset(_cfg(root, max_per_split=1), split)
        assert ds.classes == ["a", "b", "c"] and ds.num_classes == 3 and len(ds) == 1


# ----------------------------------------------------------------------------- image modes

def _one_image_tree(root: Path, image: Image.Image) -> Path:
    """Two classes per split; the image under test is train/a/0.png, the others plain RGB."""
    make_image_folder(root)
    image.save(root / "train" / "a" / "0.png")
    return root


def _loaded(root: Path, **kw) -> torch.Tensor:
    """train/a/0.png as the loader gives it: uint8 (3, 16, 16)."""
    return ImageFolderDataset(_cfg(root, **kw), "train").image_uint8(0)


def test_mid_grey_16_bit_png_is_not_saturated(tmp_path):
    grey = Image.fromarray(np.full((20, 20), 32767, dtype=np.uint16))
    assert grey.mode == "I;16"
    x = _loaded(_one_image_tree(tmp_path / "tree", grey)).float()
    assert abs(x.mean().item() - 127.5) <= 1 and x.std().item() < 1


def test_16_bit_gradient_keeps_its_range(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 20).round().astype(np.uint16), (20, 1))
    x = _loaded(_one_image_tree(tmp_path / "tree", Image.fromarray(ramp))).float()
    assert x.min() <= 10 and x.max() >= 245 and (x == 255).float().mean() < 0.2
    assert abs(x.mean().item() - 127.5) < 8


def _sprite() -> Image.Image:
    """An RGBA picture: a red disc with a soft, half-transparent rim on a fully transparent background
    whose hidden colour is black (as most encoders store it)."""
    yy, xx = np.mgrid[:20, :20]
    r = np.hypot(yy - 9.5, xx - 9.5)
    alpha = np.clip((8 - r) * 128, 0, 255).astype(np.uint8)
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 3] = 220, 40, alpha
    rgba[alpha == 0, :3] = 0
    return Image.fromarray(rgba, "RGBA")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_picture_loads_as_its_white_composite(tmp_path, mode):
    """The same picture stored with transparency, and as the emoji builder writes it (composited onto
    white), loads to the same pixels."""
    sprite = _sprite()
    if mode == "LA":
        sprite = sprite.convert("LA")
    elif mode == "P":  # entries: transparent black, opaque red, half-transparent red (a tRNS alpha per entry)
        alpha = np.asarray(sprite)[..., 3]
        sprite = Image.fromarray(np.select([alpha == 0, alpha == 255], [0, 1], 2).astype(np.uint8), "P")
        sprite.putpalette([0, 0, 0, 220, 40, 0, 220, 40, 0])
        sprite.info["transparency"] = bytes([0, 255, 128])
    stored = Image.open(io.BytesIO(_png(sprite)))
    assert stored.mode == mode and (mode != "P" or "transparency" in stored.info)
    white = emoji.on_white(_png(sprite))
    by_hand = np.asarray(sprite.convert("RGBA")).astype(float)
    a = by_hand[..., 3:] / 255
    assert np.abs(np.asarray(white) - (by_hand[..., :3] * a + 255 * (1 - a))).max() <= 1
    transparent = _loaded(_one_image_tree(tmp_path / "t1", stored))
    composited = _loaded(_one_image_tree(tmp_path / "t2", white))
    assert torch.equal(transparent, composited)
    assert (transparent[:, 0, 0] == 255).all()  # the corner was transparent: now white, not black


def test_background_is_a_config_field(tmp_path):
    root = _one_image_tree(tmp_path / "tree", _sprite())
    assert _loaded(root, background="black")[:, 0, 0].tolist() == [0, 0, 0]
    assert _loaded(root, background="#336699")[:, 0, 0].tolist() == [0x33, 0x66, 0x99]
    with pytest.raises(ConfigError, match="data.background"):
        _loaded(root, background="transparent-ish")


def test_valid_rgb_images_load_as_before(tmp_path):
    root = make_image_folder(tmp_path / "tree")
    x = ImageFolderDataset(_cfg(root, resolution=20), "train").uint8_images()
    expected = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1)
                            for c in ("a", "b") for f in sorted((root / "train" / c).iterdir())])
    assert torch.equal(x, expected)
