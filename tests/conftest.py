"""Shared fixtures: tiny configs and image folders made on the fly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from imagefolder import config


def pytest_addoption(parser):
    parser.addoption("--torch-threads", type=int, default=2,
                     help="torch threads per test (make mutation: 1, one per mutmut worker)")


@pytest.fixture(autouse=True)
def _threads(request):
    torch.set_num_threads(request.config.getoption("--torch-threads"))


@pytest.fixture
def smoke_cfg(tmp_path) -> config.Config:
    """The smoke profile with run_dir in a temporary folder."""
    return config.profile("smoke", {"run_dir": str(tmp_path / "runs")})


def make_image_folder(root: Path, classes=("a", "b"), per_class=6, size=20, splits=("train", "val")) -> Path:
    """A tiny ImageFolder tree of coloured squares; class c has hue c."""
    g = torch.Generator().manual_seed(0)
    for split in splits:
        for ci, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = tuple(int(v) for v in torch.randint(0, 255, (3,), generator=g))
                img = Image.new("RGB", (size, size), colour)
                img.putpixel((ci, i), (255, 255, 255))
                img.save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "tiny")
