"""sample_classes.py: the classes generated samples are drawn for."""
import pytest
import torch
from PIL import Image

from imagefolder import config
from imagefolder.sample_classes import balanced_labels, proportional_labels, sample_labels, samples_note


def test_balanced_labels():
    labels = balanced_labels(10, 4)
    assert torch.bincount(labels).tolist() == [3, 3, 2, 2]
    with pytest.raises(ValueError):
        balanced_labels(0, 4)


def test_proportional_labels_follow_the_class_counts():
    counts = [154, 286, 488, 244, 480, 4108, 298, 406, 394]  # the emoji train split's categories
    labels = proportional_labels(1000, counts)
    share = torch.bincount(labels, minlength=9)
    assert share.sum() == 1000 and (share - 1000 * torch.tensor(counts) / sum(counts)).abs().max() < 1
    assert torch.bincount(proportional_labels(10, [1, 1, 2])).tolist() == [3, 2, 5]  # a tie goes to class 0
    assert torch.bincount(proportional_labels(7, [0, 3]), minlength=2).tolist() == [0, 7]
    for bad in ([], [0, 0], [2, -1]):
        with pytest.raises(ValueError):
            proportional_labels(4, bad)


def test_sample_labels_follow_the_reference_split(tmp_path):
    root = tmp_path / "data"
    for split, per_class in (("train", [6, 2]), ("val", [1, 1])):
        for c, count in zip(("a", "b"), per_class):
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (16, 16)).save(root / split / c / f"{i}.png")
    cfg = config.profile("smoke", {"data.root": str(root)})
    assert torch.bincount(sample_labels(cfg, 8, 2)).tolist() == [6, 2]
    balanced = config.apply_overrides(cfg, {"evaluation.sample_labels": "balanced"})
    assert torch.bincount(sample_labels(balanced, 8, 2)).tolist() == [4, 4]
    with pytest.raises(ValueError, match="3"):
        sample_labels(cfg, 8, 3)
    assert samples_note(cfg, 8) == "8 samples, classes as in the train split"
    assert samples_note(balanced, 8) == "8 samples, classes balanced"
