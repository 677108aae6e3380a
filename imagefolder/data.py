"""ImageFolder-layout data sets (`root/{train,val}/<class>/*.png|jpg`), transforms and loaders.

Class index = position of the folder name in sorted order; every split must have the same class
folders, each with images (hidden entries such as `.ipynb_checkpoints/` are ignored). A secondary label
(the emoji subcategory) is read from `root/labels.csv` when present. Images are float tensors in [-1, 1].
`TokenDataset` is the generator's data set: a tokenizer's indices of a split, cached and checked.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageColor, UnidentifiedImageError
from safetensors.torch import load_file, safe_open, save
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .checkpoint import atomic_write_bytes
from .config import ConfigError, DataConfig
from .layouts import flatten_indices, unflatten_indices

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
SPLITS = ("train", "val")
WHITE = (255, 255, 255)
# what PIL raises on a file it cannot decode (ValueError: e.g. an oversized PNG text chunk)
UNREADABLE = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


class DataError(RuntimeError):
    """A data root is missing or an image cannot be read."""


def resolve_root(cfg: DataConfig) -> Path:
    """The data root; `$VAR` roots (ImageNet) come from the environment and are never downloaded."""
    if cfg.root.startswith("$"):
        var = cfg.root[1:]
        if not os.environ.get(var):
            raise DataError(f"${var} is not set: point it at an ImageNet folder with train/ and val/ in "
                            f"ImageFolder layout (the project never downloads ImageNet)")
        return Path(os.environ[var])
    return Path(cfg.root)


def is_visible_image(name: str) -> bool:
    """An entry name with an image suffix that is not hidden (`.x.png`, macOS `._x.png` are ignored)."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def class_names(root: Path, split: str) -> list[str]:
    """The sorted class folders of `root`, checked across its splits (train, val and `split`).

    Hidden folders are ignored. A class folder without images, or a class missing from one split,
    raises DataError naming it: either would silently shift every later label of that split.
    """
    found = {}
    for s in dict.fromkeys((*SPLITS, split)):
        if (root / s).is_dir():
            found[s] = sorted(p.name for p in (root / s).iterdir() if p.is_dir() and not p.name.startswith("."))
    empty = [str(root / s / c) for s, names in found.items() for c in names if not _has_image(root / s / c)]
    if empty:
        raise DataError(f"class folder(s) without images: {', '.join(empty)} — add images or remove the "
                        f"folder (an empty class shifts every later label)")
    union = sorted(set().union(*found.values()))
    missing = {s: [c for c in union if c not in names] for s, names in found.items()}
    if any(missing.values()):
        raise DataError(f"the splits of {root} have different class folders: "
                        + "; ".join(f"missing in {s}/: {', '.join(m)}" for s, m in missing.items() if m)
                        + " — every split needs the same classes, or the labels shift")
    return union


def _has_image(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(is_visible_image(e.name) for e in entries)


def background_rgb(cfg: DataConfig) -> tuple[int, int, int]:
    """`data.background` as an RGB triple, or ConfigError naming the field."""
    try:
        return ImageColor.getrgb(cfg.background)[:3]
    except (ValueError, TypeError, AttributeError) as err:
        raise ConfigError(f"data.background: {cfg.background!r} is not a colour (a name such as 'white', "
                          f"or '#rrggbb')") from err


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any PIL image as 8-bit RGB: 16-bit grey (modes I;16, I) scaled to 8 bit, and transparency (RGBA,
    LA, PA, a tRNS colour key in P, L or RGB) alpha-composited onto `background`."""
    if im.mode.startswith("I"):
        grey = np.asarray(im).astype(np.float64) / 257  # 0..65535 → 0..255
        return Image.fromarray(grey.round().clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        base = Image.new("RGBA", im.size, (*background, 255))
        return Image.alpha_composite(base, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float → [0, 255] uint8, same shape."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 255] uint8 → [-1, 1] float32, same shape."""
    return x.float() / 127.5 - 1


def image_transform(resolution: int) -> v2.Compose:
    """PIL image → uint8 (3, R, R): resize the short side (bicubic, antialiased), centre crop."""
    return v2.Compose([v2.PILToTensor(),
                       v2.Resize(resolution, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                       v2.CenterCrop(resolution)])


class ImageFolderDataset(Dataset):
    """One split of an ImageFolder tree; items are `(image (3,R,R) in [-1,1], label)`.

    `label` picks the class folder ("category") or the secondary label from labels.csv ("subcategory").
    Corrupt files raise DataError naming the file, unless `skip_corrupt`, in which case they are
    dropped, counted in `self.skipped` and printed. Every image is decoded once up front when
    `in_memory` (and kept) or `skip_corrupt` (to find the corrupt ones), so both modes skip the same files.
    """

    def __init__(self, cfg: DataConfig, split: str, train: bool | None = None):
        root = resolve_root(cfg)
        split_folder(cfg, split)
        self.cfg, self.split = cfg, split
        self.classes = class_names(root, split)
        files = split_files(cfg, split, self.classes)
        self.files = [f for f, _ in files]
        self.target_names = {"category": self.classes}
        self.targets = {"category": torch.tensor([ci for _, ci in files])}
        if (root / "labels.csv").exists():
            sub = read_secondary_labels(root)
            names = sorted(set(sub.values()))
            index = {name: i for i, name in enumerate(names)}
            self.target_names["subcategory"] = names
            self.targets["subcategory"] = torch.tensor([index[sub[f.relative_to(root).as_posix()]] for f in self.files])
        if cfg.label not in self.targets:
            raise DataError(f"data.label={cfg.label!r} needs {root / 'labels.csv'} (the emoji data has it)")
        self.transform = image_transform(cfg.resolution)
        self.background = background_rgb(cfg)
        self.flip = cfg.hflip and (train if train is not None else split == "train")
        self.skipped: list[str] = []
        self.images = self._decode_all(keep=cfg.in_memory) if cfg.in_memory or cfg.skip_corrupt else None

    @property
    def labels(self) -> torch.Tensor:
        return self.targets[self.cfg.label]

    @property
    def label_names(self) -> list[str]:
        return self.target_names[self.cfg.label]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def _load(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as im:
                return self.transform(to_rgb(im, self.background))
        except UNREADABLE as err:
            raise DataError(f"cannot read image {path}: {err}") from err

    def _decode_all(self, keep: bool) -> torch.Tensor | None:
        """Decode every file once (in `num_workers` processes); a corrupt one raises, or under
        `skip_corrupt` is dropped, counted and printed. Returns the (N, 3, R, R) uint8 images if `keep`."""
        images, kept = [], []
        decoded = DataLoader(_Decoded(self), batch_size=None, num_workers=self.cfg.num_workers,
                             generator=torch.Generator())  # its own seed: the global RNG is left as it was
        for i, (image, err) in enumerate(decoded):
            if err is None:
                kept.append(i)
                images += [image] if keep else []
            elif self.cfg.skip_corrupt:
                self.skipped.append(str(self.files[i]))
                print(f"skipped corrupt image ({len(self.skipped)} so far): {err}")
            else:
                raise err
        if self.skipped:
            print(f"{self.split}: skipped {len(self.skipped)} corrupt image(s) of {len(self.files)}")
            self.files = [self.files[i] for i in kept]
            self.targets = {k: v[kept] for k, v in self.targets.items()}
        return torch.stack(images) if keep else None

    def __len__(self) -> int:
        return len(self.files)

    def image_uint8(self, i: int) -> torch.Tensor:
        """Image i as uint8 (3, R, R), never flipped (from memory, or decoded now)."""
        return self.images[i] if self.images is not None else self._load(self.files[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.image_uint8(i)
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return from_uint8(img), int(self.labels[i])

    def uint8_images(self) -> torch.Tensor:
        """All images as one (N, 3, R, R) uint8 tensor (decodes them if not held in memory)."""
        return self.images if self.images is not None else torch.stack([self._load(f) for f in self.files])

    def fingerprint(self) -> str:
        """Short hash of the file list and labels: identifies the data a result was computed on."""
        h = hashlib.sha256()
        for f, y in zip(self.files, self.labels.tolist()):
            h.update(f"{f.name}:{y}\n".encode())
        return h.hexdigest()[:16]


class _Decoded(Dataset):
    """Items `(uint8 image or None, DataError or None)` of a data set's files, for the up-front decode."""

    def __init__(self, dataset: ImageFolderDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, DataError | None]:
        try:
            return self.dataset._load(self.dataset.files[i]), None
        except DataError as err:
            return None, err


class MultiLabelView(Dataset):
    """Items `(image, label_1, …, label_n)` for the named labels of an ImageFolderDataset."""

    def __init__(self, base: ImageFolderDataset, labels: Sequence[str]):
        missing = [name for name in labels if name not in base.targets]
        if missing:
            raise DataError(f"labels {missing} are not available for {base.split} (have {sorted(base.targets)})")
        self.base, self.names = base, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple:
        image, _ = self.base[i]
        return (image, *(int(self.base.targets[name][i]) for name in self.names))


def split_folder(cfg: DataConfig, split: str) -> Path:
    """The folder of a split, or DataError saying how to get it."""
    folder = resolve_root(cfg) / split
    if not folder.is_dir():
        hint = "run `make data`" if cfg.name == "emoji" else "check the path (or set IMAGEFOLDER_IMAGENET)"
        raise DataError(f"data split not found: {folder} — {hint}")
    return folder


def split_files(cfg: DataConfig, split: str, classes: list[str] | None = None) -> list[tuple[Path, int]]:
    """The (file, class index) pairs of a split that `ImageFolderDataset` reads, in its order and capped at
    `max_per_split` (spread over classes), without decoding any image; `classes` defaults to `class_names`."""
    folder = split_folder(cfg, split)
    classes = class_names(resolve_root(cfg), split) if classes is None else classes
    files = [(f, ci) for ci, c in enumerate(classes) for f in sorted((folder / c).iterdir())
             if is_visible_image(f.name)]
    if cfg.max_per_split is not None:
        files = _spread(files, cfg.max_per_split)
    if not files:
        raise DataError(f"no images in {folder}")
    return files


def _spread(files: list, n: int) -> list:
    """Up to n items spread evenly over the sorted list (so every class is represented)."""
    if n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def read_secondary_labels(root: Path) -> dict[str, str]:
    """`labels.csv` → {relative path: subcategory}."""
    path = root / "labels.csv"
    if not path.exists():
        raise DataError(f"{path} not found: the subcategory label exists only for the emoji data (run `make data`)")
    with open(path, newline="") as fh:
        return {row["path"]: row["subcategory"] for row in csv.DictReader(fh)}


class UInt8View(Dataset):
    """The images of an ImageFolderDataset as uint8 (3, R, R), decoded on access when not held in memory:
    what metrics read for a reference set too large for RAM (ImageNet)."""

    def __init__(self, dataset: ImageFolderDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset.image_uint8(i)


# ----------------------------------------------------------------------------- token cache

class TokenCacheMismatch(ValueError):
    """A token cache was made by another tokenizer (or another scale / branch / codebook layout)."""


class TokenDataset(Dataset):
    """Cached token indices of a data set and their labels, tied to the tokenizer that made them.

    Item i: (tokens (T,) long in `layouts.flatten_indices` order, T = P·Σ s², label () long). Shapes
    and token values are checked once here, so the training step does not check them.
    """

    def __init__(self, tokens_NT: torch.Tensor, labels_N: torch.Tensor, scales: Sequence[int], branches: int,
                 codebook_size: int, fingerprint: str):
        self.scales, self.branches = list(scales), branches
        self.codebook_size, self.fingerprint = codebook_size, fingerprint
        unflatten_indices(tokens_NT[:1], self.scales, branches)  # shape check
        if labels_N.shape != (tokens_NT.shape[0],):
            raise ValueError(f"labels: expected shape ({tokens_NT.shape[0]},), got {tuple(labels_N.shape)}")
        if tokens_NT.numel() and not 0 <= int(tokens_NT.min()) <= int(tokens_NT.max()) < codebook_size:
            raise ValueError(f"tokens: values must be in [0, {codebook_size}) (the codebook size)")
        self.tokens_NT, self.labels_N = tokens_NT.long(), labels_N.long()

    def __len__(self) -> int:
        return self.tokens_NT.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens_NT[i], self.labels_N[i]

    @classmethod
    def encode(cls, encode: Callable[[torch.Tensor], list[torch.Tensor]],
               batches: Iterable[tuple[torch.Tensor, torch.Tensor]], codebook_size: int,
               fingerprint: str) -> TokenDataset:
        """Tokenize (images, labels) batches with `encode(images) -> [S × (B, P, s, s)]`."""
        tokens, labels, shapes = [], [], None
        with torch.no_grad():
            for images, y in batches:
                idx = encode(images)
                shapes = [tuple(t.shape[1:]) for t in idx]
                tokens.append(flatten_indices(idx).cpu())
                labels.append(y.cpu())
        if shapes is None:
            raise ValueError("no batches to encode")
        return cls(torch.cat(tokens), torch.cat(labels), [s[-1] for s in shapes], shapes[0][0],
                   codebook_size, fingerprint)

    def indices(self, rows: torch.Tensor | slice) -> list[torch.Tensor]:
        """Indices [S × (n, P, s, s)] of the selected rows."""
        return unflatten_indices(self.tokens_NT[rows], self.scales, self.branches)

    def _meta(self) -> dict[str, str]:
        return {"scales": json.dumps(self.scales), "branches": str(self.branches),
                "codebook_size": str(self.codebook_size), "fingerprint": self.fingerprint}

    def save(self, path: str | Path) -> None:
        """Write a safetensors file atomically (a unique temporary file, then rename)."""
        atomic_write_bytes(path, save({"tokens": self.tokens_NT.contiguous(), "labels": self.labels_N.contiguous()},
                                      metadata=self._meta()))

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None) -> TokenDataset:
        """Read a cache (checked like a new one); with `fingerprint`, raise TokenCacheMismatch if another
        tokenizer made it."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise TokenCacheMismatch(f"{path}: token cache made by tokenizer {meta['fingerprint']}, but the "
                                     f"current tokenizer is {fingerprint}; delete the cache to re-encode")
        data = load_file(str(path))
        return cls(data["tokens"], data["labels"], json.loads(meta["scales"]), int(meta["branches"]),
                   int(meta["codebook_size"]), meta["fingerprint"])

    def check_compatible(self, generator, fingerprint: str | None = None) -> None:
        """Raise TokenCacheMismatch if the cache's layout (or tokenizer) differs from the generator's
        (its `scales`, `branches`, `codebook_size`), ValueError if a label is not one of its
        `num_classes` classes."""
        ours = (self.scales, self.branches, self.codebook_size)
        theirs = (generator.scales, generator.branches, generator.codebook_size)
        if ours != theirs:
            raise TokenCacheMismatch(f"token cache has (scales, branches, codebook_size) = {ours}, the "
                                     f"generator expects {theirs}")
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise TokenCacheMismatch(f"token cache made by tokenizer {self.fingerprint}, current is {fingerprint}")
        bad = self.labels_N[(self.labels_N < 0) | (self.labels_N >= generator.num_classes)]
        if bad.numel():
            raise ValueError(f"token cache labels: unknown class index {int(bad[0])}; the generator has "
                             f"{generator.num_classes} classes (0..{generator.num_classes - 1})")
