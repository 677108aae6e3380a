"""The small profiles' reference networks, trained by the compendium on the data set.

- The **teacher**: a timm ViT with the tokenizer encoder's width, depth and patch size, trained on the
  emoji subcategories. It stands in for DINOv2: it initialises the encoder, gives the semantic
  branch its target, the perceptual distance and the "DINO" discriminator's frozen features.
- The **evaluator**: a convnet of another architecture and seed, trained on categories and
  subcategories, used only to compute FD / IS / precision / recall — never seen by the tokenizer.

The smoke and cpu profiles' networks ship with the package (`imagefolder/reference_weights/`, see
`pretrained`) and are used as they are, so every machine measures with the same instrument; `make data`
trains a profile's networks only where none ship (the gpu profile) or when asked (`--force`), into
`runs/weights/<role>-<profile>.safetensors` with their val accuracy in a JSON beside.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, pretrained
from .backbones import build_vit
from .config import Config, ReferenceNetConfig, ViTConfig, from_dict, to_dict, without_roles
from .data import ImageFolderDataset, MultiLabelView
from .train import Objective, pick_device, seed_everything, train


class ConvTrunk(nn.Module):
    """`depth` stages of two 3×3 conv-BN-GELU layers, each stage halving the resolution and doubling width."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        layers, c_in = [], 3
        for i in range(depth):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU(),
                       nn.AvgPool2d(2) if i < depth - 1 else nn.Identity()]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.num_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean(dim=(2, 3))  # (B, C)


class ReferenceNet(nn.Module):
    """A classifier with one linear head per label; `features` is the pooled penultimate layer.

    Inputs are images in [-1, 1], (B, 3, R, R) at the data resolution.
    """

    def __init__(self, rcfg: ReferenceNetConfig, resolution: int, num_classes: dict[str, int]):
        super().__init__()
        self.arch, self.resolution = rcfg.arch, resolution
        if rcfg.arch == "vit":
            self.vit = build_vit(ViTConfig(width=rcfg.width, depth=rcfg.depth, heads=rcfg.heads,
                                           patch_size=rcfg.patch_size), resolution)
            dim = rcfg.width
        else:
            self.trunk = ConvTrunk(rcfg.width, rcfg.depth)
            dim = self.trunk.num_features
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in num_classes.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) → (B, D): the ViT's normalised CLS token, or the convnet's pooled map."""
        if self.arch == "vit":
            return self.vit.forward_features(x)[:, 0]
        return self.trunk(x)

    def classify(self, features_BD: torch.Tensor, label: str) -> torch.Tensor:
        """`features` → (B, n) logits of the head for `label`."""
        return self.heads[label](features_BD)

    def logits(self, x: torch.Tensor, label: str) -> torch.Tensor:
        return self.classify(self.features(x), label)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate every image of the batch by the same random offset in [-pad, pad] (edge-replicated)."""
    if pad == 0:
        return x
    i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    h, w = x.shape[-2:]
    return F.pad(x, (pad,) * 4, mode="replicate")[..., i:i + h, j:j + w]


class ClassifierObjective(Objective):
    """Cross-entropy summed over the heads; batches are `(images, y_label1, …)`."""

    phases = ("model",)

    def __init__(self, net: ReferenceNet, labels: Sequence[str], shift: int):
        super().__init__()
        self.net, self.labels, self.shift = net, labels, shift

    @property
    def ema_target(self) -> nn.Module:
        return self.net

    def parameters_for(self, phase: str) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def forward(self, batch, phase: str, step: int):
        images, *targets = batch
        feats = self.net.features(random_shift(images, self.shift))
        losses = {name: F.cross_entropy(self.net.heads[name](feats), y) for name, y in zip(self.labels, targets)}
        return sum(losses.values()), {f"ce_{k}": float(v.detach()) for k, v in losses.items()}


def _label_counts(ds: ImageFolderDataset, labels: Sequence[str]) -> dict[str, int]:
    return {name: len(ds.target_names[name]) for name in labels}


@torch.no_grad()
def accuracy(net: ReferenceNet, ds: ImageFolderDataset, label: str, batch_size: int = 256) -> float:
    """Top-1 accuracy of the head `label` on a data set."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(ds), batch_size):
        idx = range(start, min(len(ds), start + batch_size))
        x = torch.stack([ds[i][0] for i in idx]).to(device)
        correct += int((net.logits(x, label).argmax(-1).cpu() == ds.targets[label][list(idx)]).sum())
    return correct / len(ds)


def weights_name(cfg: Config, role: str) -> str:
    return f"{role}-{cfg.profile}"


def _origin(path: Path, digest: str) -> str:
    """Where a reference network's file comes from, measured against the shipped one of that name."""
    if path.parent == pretrained.SHIPPED_DIR:
        return "shipped with the package"
    shipped = pretrained.shipped_sums().get(path.name)
    if shipped is None:
        return "trained here"
    if digest == shipped:
        return "trained here, the same file as the shipped one"
    return "trained here, NOT the shipped file: delete it to measure with the shipped one"


def train_reference(cfg: Config, role: str, force: bool = False) -> Path:
    """Train the teacher or evaluator of `cfg` unless a file of it exists (a trained or a shipped one) and
    `force` is off; returns the weights path."""
    rcfg: ReferenceNetConfig = getattr(cfg, role)
    name = weights_name(cfg, role)
    path = pretrained.weights_dir() / f"{name}.safetensors"
    if not force:
        found = pretrained.find(name)
        if found is not None:
            info = json.loads(found.with_suffix(".json").read_text())
            digest = pretrained.sha256(found)
            print(f"{role}: {found} ({_origin(found, digest)}; sha256 {digest[:16]}; "
                  f"val accuracy {info['val_accuracy']})")
            return found
    train_ds, val_ds = ImageFolderDataset(cfg.data, "train"), ImageFolderDataset(cfg.data, "val")
    seed_everything(rcfg.seed)
    net = ReferenceNet(rcfg, cfg.data.resolution, _label_counts(train_ds, rcfg.labels))
    objective = ClassifierObjective(net, rcfg.labels, shift=max(1, cfg.data.resolution // 16))
    run_dir = Path(cfg.run_dir) / cfg.profile / role
    record = {"role": role, "profile": cfg.profile, "reference": to_dict(cfg)[role], "data": to_dict(cfg)["data"]}
    result = train(objective, MultiLabelView(train_ds, rcfg.labels), rcfg.train, run_dir, rcfg.seed,
                   config=record, device=pick_device(cfg.device), desc=role,
                   run_key=record | {"reference": without_roles(rcfg)})
    ema_net = load_from(result.model_path, record)
    acc = {name: round(accuracy(ema_net, val_ds, name), 4) for name in rcfg.labels}
    checkpoint.save_model(ema_net.state_dict(), path, record, {"val_accuracy": acc})
    info = record | {"val_accuracy": acc, "val_images": len(val_ds), "data_fingerprint": val_ds.fingerprint(),
                     "steps": result.steps, "file_hash": pretrained.file_hash(path)}
    checkpoint.atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=1))
    print(f"{role}: val accuracy {acc} on {len(val_ds)} images → {path}")
    return path


def load_from(path: str | Path, expected: dict | None = None) -> ReferenceNet:
    """A frozen ReferenceNet from a file written by `train_reference` (config read from its metadata)."""
    tensors, record, _ = checkpoint.load_model(path, expected)
    rcfg = from_dict(record["reference"], ReferenceNetConfig)
    counts = {name: tensors[f"heads.{name}.weight"].shape[0] for name in rcfg.labels}
    net = ReferenceNet(rcfg, record["data"]["resolution"], counts)
    net.load_state_dict(tensors)
    return net.eval().requires_grad_(False)


def load(cfg: Config, role: str) -> ReferenceNet:
    """The frozen teacher or evaluator of `cfg`'s profile, through the resolver (clear error if absent)."""
    return load_from(pretrained.resolve(weights_name(cfg, role)))
