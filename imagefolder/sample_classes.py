"""The classes generated samples are drawn for (`evaluation.sample_labels`), and the reference split they
are scored against.

"balanced": n / classes each (the paper's 50 per ImageNet class); "reference": in proportion to the classes
of the reference (train) images, so that a class-conditional model drawing each class as often as the data
does is not scored against a class mix it was never asked for.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from .config import Config, DataConfig
from .data import class_names, resolve_root, split_files, split_folder


def reference_data(cfg: Config) -> DataConfig:
    """The data config of the reference set: `evaluation.num_reference` train images spread over classes
    (all when None)."""
    return dataclasses.replace(cfg.data, max_per_split=cfg.evaluation.num_reference)


def sample_labels(cfg: Config, n: int, num_classes: int) -> torch.Tensor:
    """The classes of n samples, as `evaluation.sample_labels` says: (n,) long."""
    if cfg.evaluation.sample_labels == "balanced":
        return balanced_labels(n, num_classes)
    data = reference_data(cfg)
    classes = class_names(resolve_root(data), "train")
    if len(classes) != num_classes:
        raise ValueError(f"sample_labels: the reference split {split_folder(data, 'train')} has {len(classes)} "
                         f"classes, the generator {num_classes}")
    counts = torch.bincount(torch.tensor([label for _, label in split_files(data, "train", classes)]),
                            minlength=num_classes)
    return proportional_labels(n, counts.tolist())


def samples_note(cfg: Config, n: int) -> str:
    """n and the class mix of generated samples, for a caption ("1000 samples, classes as in the train split")."""
    mix = {"balanced": "classes balanced", "reference": "classes as in the train split"}[cfg.evaluation.sample_labels]
    return f"{n} samples, {mix}"


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """Class labels for n samples spread evenly over classes (counts differ by at most one): (n,) long."""
    if n < 1 or num_classes < 1:
        raise ValueError(f"balanced_labels: n={n} and num_classes={num_classes} must be positive")
    return torch.arange(n) % num_classes


def proportional_labels(n: int, class_counts: Sequence[int]) -> torch.Tensor:
    """Class labels for n samples in proportion to `class_counts` (e.g. a reference set's images per class),
    rounded by largest remainder (each class within one of n · its share; ties to the lower class), grouped by
    class: (n,) long."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if n < 1 or counts.ndim != 1 or not len(counts) or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"proportional_labels: n={n} must be positive and class_counts={list(class_counts)} "
                         "non-negative with a positive sum")
    quota = n * counts / counts.sum()
    share = quota.floor().long()
    extra = torch.argsort(quota - share, descending=True, stable=True)[:n - int(share.sum())]
    share[extra] += 1
    return torch.repeat_interleave(torch.arange(len(counts)), share)
