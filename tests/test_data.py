import hashlib
import json
import math
import os
import stat

import pytest
import torch

from imagefolder import config, emoji
from imagefolder.data import (
    DataError,
    ImageFolderDataset,
    MultiLabelView,
    UInt8View,
    _spread,
    from_uint8,
    split_files,
    split_folder,
    to_uint8,
)


def _data_cfg(root, **kw):
    return config.DataConfig(name="folder", root=str(root), resolution=16, **kw)


def test_dataset_classes_sorted_and_images_in_range(image_folder):
    ds = ImageFolderDataset(_data_cfg(image_folder), "train")
    assert ds.classes == ["a", "b"] and len(ds) == 12 and ds.num_classes == 2
    x, y = ds[7]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert y == 1 and ds.uint8_images().dtype == torch.uint8


def test_corrupt_image_raises_naming_the_file(image_folder):
    bad = image_folder / "train" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match="broken.png"):
        ImageFolderDataset(_data_cfg(image_folder), "train")


def test_corrupt_image_skipped_and_counted_when_allowed(image_folder, capsys):
    (image_folder / "train" / "a" / "broken.png").write_bytes(b"not an image")
    ds = ImageFolderDataset(_data_cfg(image_folder, skip_corrupt=True), "train")
    assert len(ds) == 12 and len(ds.skipped) == 1 and ds.skipped[0].endswith("broken.png")
    assert len(ds.labels) == len(ds) and "skipped 1 corrupt image" in capsys.readouterr().out


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="make data"):
        ImageFolderDataset(config.DataConfig(root=str(tmp_path / "nowhere")), "train")
    with pytest.raises(DataError, match="IMAGEFOLDER_IMAGENET"):
        ImageFolderDataset(config.DataConfig(name="imagenet", root="$IMAGEFOLDER_IMAGENET_UNSET_FOR_TEST"), "train")


def test_uint8_round_trip():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(x)), x)


def test_max_per_split_keeps_every_class(image_folder):
    ds = ImageFolderDataset(_data_cfg(image_folder, max_per_split=4), "val")
    assert len(ds) == 4 and set(ds.labels.tolist()) == {0, 1}


def test_uint8_view_decodes_on_access_what_memory_holds(image_folder):
    in_memory = ImageFolderDataset(_data_cfg(image_folder), "train")
    on_disk = ImageFolderDataset(_data_cfg(image_folder, in_memory=False), "train")
    assert on_disk.images is None
    view = UInt8View(on_disk)
    assert len(view) == 12 and torch.equal(torch.stack([view[i] for i in range(12)]), in_memory.uint8_images())


# ----------------------------------------------------------------------------- emoji builder

def test_integrity_check_rejects_a_changed_tarball(tmp_path):
    tarball = tmp_path / "x.tgz"
    tarball.write_bytes(b"payload")
    import base64
    import hashlib
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"payload").digest()).decode()
    emoji.verify_integrity(tarball, good)
    tarball.write_bytes(b"payload!")
    with pytest.raises(emoji.EmojiBuildError, match="SHA-512 mismatch"):
        emoji.verify_integrity(tarball, good)


def test_failed_npm_pack_leaves_no_partial_data(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    npm = fake_bin / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(emoji.EmojiBuildError, match="npm pack emoji-datasource-google@16.0.0.*failed"):
        emoji.build(tmp_path / "data" / "emoji")
    assert not (tmp_path / "data" / "emoji").exists()
    assert list((tmp_path / "data").iterdir()) == []  # the staging folder is gone too


def _val_by_hand(base: str) -> bool:
    """The split rule re-implemented: the first 4 bytes of the base's SHA-256, big-endian, over 2³², below 0.1."""
    return int.from_bytes(hashlib.sha256(base.encode()).digest()[:4], "big") / 2**32 < 0.1


def test_split_is_by_base_emoji():
    # hand-checked: 1F44D hashes to 0.0543 and 1F30C to 0.0820 (val); 1F385 to 0.577 and 1F600 to 0.649 (train)
    assert [emoji.split_of(b) for b in ("1F44D", "1F30C", "1F385", "1F600")] == ["val", "val", "train", "train"]
    bases = [f"{i:05X}" for i in range(2000)]
    splits = [emoji.split_of(b) for b in bases]
    assert splits == ["val" if _val_by_hand(b) else "train" for b in bases]
    assert 0.05 < splits.count("val") / len(splits) < 0.15


def test_split_boundary_is_strict(monkeypatch):
    """A base whose hash fraction equals VAL_FRACTION exactly goes to train (the rule is `<`)."""
    fraction = int.from_bytes(hashlib.sha256(b"1F44D").digest()[:4], "big") / 2**32  # exact in a float
    monkeypatch.setattr(emoji, "VAL_FRACTION", fraction)
    assert emoji.split_of("1F44D") == "train"
    monkeypatch.setattr(emoji, "VAL_FRACTION", math.nextafter(fraction, 1.0))
    assert emoji.split_of("1F44D") == "val"


def test_spread_picks_evenly_and_keeps_short_lists():
    # 10 items, 4 wanted: step 2.5, so items 0, 2.5 → 2, 5, 7.5 → 7
    assert _spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert _spread(list(range(3)), 3) == [0, 1, 2] and _spread(list(range(3)), 5) == [0, 1, 2]
    assert _spread(list(range(4)), 1) == [0]


def test_split_files_order_labels_and_cap(image_folder):
    (image_folder / "val" / "a" / ".hidden.png").write_bytes(b"")
    (image_folder / "val" / "b" / "notes.txt").write_text("not an image")
    files = split_files(_data_cfg(image_folder), "val")
    assert [(f.parent.name, f.name, ci) for f, ci in files] == (
        [("a", f"{i}.png", 0) for i in range(6)] + [("b", f"{i}.png", 1) for i in range(6)])
    capped = split_files(_data_cfg(image_folder, max_per_split=3), "val")  # step 4: items 0, 4, 8
    assert [(f.parent.name, f.name, ci) for f, ci in capped] == [("a", "0.png", 0), ("a", "4.png", 0),
                                                                  ("b", "2.png", 1)]
    assert split_files(_data_cfg(image_folder), "val", classes=["b"]) == [
        (image_folder / "val" / "b" / f"{i}.png", 0) for i in range(6)]


def test_split_folder_errors_name_the_folder_and_the_fix(image_folder, tmp_path, monkeypatch):
    """A missing split names its folder and the fix in full: `make data` for the emoji set, the path (or
    $IMAGEFOLDER_IMAGENET) for any other; a split without images names its folder."""
    assert split_folder(_data_cfg(image_folder), "train") == image_folder / "train"
    with pytest.raises(DataError) as err:
        split_folder(_data_cfg(image_folder), "test")
    assert str(err.value) == (f"data split not found: {image_folder / 'test'} — check the path "
                              f"(or set IMAGEFOLDER_IMAGENET)")
    (tmp_path / "emoji" / "train").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        split_folder(config.DataConfig(root=str(tmp_path / "emoji")), "val")
    assert str(err.value) == f"data split not found: {tmp_path / 'emoji' / 'val'} — run `make data`"
    monkeypatch.setenv("IMAGEFOLDER_IMAGENET_FOR_TEST", str(image_folder))
    with pytest.raises(DataError) as err:
        split_folder(config.DataConfig(name="imagenet", root="$IMAGEFOLDER_IMAGENET_FOR_TEST"), "test")
    assert str(err.value) == (f"data split not found: {image_folder / 'test'} — check the path "
                              f"(or set IMAGEFOLDER_IMAGENET)")
    (image_folder / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        split_files(_data_cfg(image_folder), "empty", classes=["a"])
    assert str(err.value) == f"no images in {image_folder / 'empty'}"


EMOJI_ROOT = config.DataConfig().root


@pytest.mark.skipif(not os.path.exists(os.path.join(EMOJI_ROOT, emoji.DONE_MARKER)),
                    reason="emoji data not built (make test builds it first; needs npm)")
def test_emoji_layout_on_the_real_data():
    root = EMOJI_ROOT
    summary = json.load(open(os.path.join(root, emoji.DONE_MARKER)))
    assert summary["counts"]["categories"] == 9 and summary["counts"]["subcategories"] > 90
    assert summary["images"]["train"] > 6000 and 500 < summary["images"]["val"] < 1000
    assert os.path.exists(os.path.join(root, "LICENSES.md"))
    cfg = config.DataConfig(root=root, resolution=32, label="subcategory", max_per_split=64)
    val = ImageFolderDataset(cfg, "val")
    assert "component" not in val.classes and len(val.classes) == 9
    # both vendors and every skin tone of one emoji land in the same split
    import csv
    rows = list(csv.DictReader(open(os.path.join(root, "labels.csv"))))
    by_base = {}
    for row in rows:
        by_base.setdefault(row["base"], set()).add(row["path"].split("/")[0])
    assert all(len(s) == 1 for s in by_base.values())
    assert any(r["path"].endswith("-1F3FB.png") for r in rows)  # skin-tone variants kept
    # white background: the corner pixel of every sampled image is white
    x = val.uint8_images()
    assert (x[:, :, 0, 0] == 255).float().mean() > 0.95
    view = MultiLabelView(val, ["category", "subcategory"])
    image, cat, sub = view[0]
    assert 0 <= cat < 9 and 0 <= sub < len(val.target_names["subcategory"])
