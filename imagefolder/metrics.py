"""Evaluation: generation metrics through torch-fidelity, reconstruction, codebook usage, linear probing.

Generation metrics (FID/FD, IS, precision, recall, KID) are torch-fidelity's, computed from its feature
extraction (a set's features can be kept and passed again: `set_features`) with one feature network
for all of them: torch-fidelity's `inception-v3-compat` (paper profile,
loaded from a local file only) or a compendium reference network wrapped by `ReferenceFeatureExtractor`
(small profiles). Keys are renamed after the network (`FD_evaluator`, `IS_evaluator`, ...; `FID`, `IS`,
... for Inception) and every result carries N, the network name and its hash.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torch_fidelity.datasets import ImagesPathDataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.metric_prc import prc_featuresdict_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from . import pretrained
from .checkpoint import state_dict_hash
from .data import IMAGE_SUFFIXES, from_uint8
from .pretrained import MissingWeightsError

# ----------------------------------------------------------------------------- metric networks

INCEPTION_EXTRACTOR = "inception-v3-compat"  # torch-fidelity's name, also the resolver's


def inception_weights_path() -> Path:
    """The local file of torch-fidelity's Inception-v3 (FID/IS of the paper profile), never downloaded.

    Looked up by `pretrained.resolve("inception-v3-compat")`: `$IMAGEFOLDER_WEIGHTS/` then
    `$TORCH_HOME/hub/checkpoints/`; MissingWeightsError names the file and both folders.
    """
    return pretrained.resolve(INCEPTION_EXTRACTOR)


@dataclass(frozen=True)
class MetricNetwork:
    """The network behind FID/IS/precision/recall/KID, as named in result keys and captions.

    name: "inception" (keys FID, IS, ...) or e.g. "evaluator" (keys FD_evaluator, IS_evaluator, ...).
    extractor: its torch-fidelity registry name. sha256: short hash of its weights file (or state dict).
    resolution: the image side it takes (None: any; Inception resizes to 299 itself).
    """

    name: str
    extractor: str
    sha256: str
    file: str | None = None
    resolution: int | None = None
    weights_path: str | None = None  # passed to torch-fidelity (Inception only)

    def describe(self) -> str:
        return f"{self.name} (sha256 {self.sha256})"


# extractor name -> (network, logits label, sha256); a network is any module with `features` and `classify`
_NETWORKS: dict[str, tuple[Any, str | None, str]] = {}


class ReferenceFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity view of a reference net: uint8 (B,3,H,W) → `features` (B,D) and `logits` (B,n).

    The network is looked up by the registered name, so one class serves every registration.
    FID/KID/precision/recall use `features`; IS uses the softmax of `logits`.
    """

    def __init__(self, name: str, features_list: Sequence[str], **kwargs):
        super().__init__(name, list(features_list))
        if name not in _NETWORKS:
            raise KeyError(f"no reference network registered as {name!r}; call reference_network() first")

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B,3,H,W) images, got {x.dtype} {tuple(x.shape)}")
        net, label, _ = _NETWORKS[self.name]
        device = next(net.parameters()).device
        features_BD = net.features(from_uint8(x.to(device)))  # one pass serves both layers
        out = {"features": lambda: features_BD, "logits": lambda: net.classify(features_BD, label)}
        return tuple(out[f]().float() for f in self.features_list)


def reference_network(module: nn.Module, name: str = "evaluator", *, label: str | None = None,
                      file: str | Path | None = None, resolution: int | None = None,
                      extractor: str | None = None) -> MetricNetwork:
    """Register a reference net (`features(x)`, `classify(features, label)`) with torch-fidelity; idempotent.

    The network is put in eval mode; `resolution` defaults to `module.resolution` when it has one.
    `extractor` is the registry name (default `<name>-<hash[:12]>`);
    registering it again with the same weights (e.g. a reloaded copy) is allowed, with other weights
    it raises ValueError. `label` picks the logits head used for IS.
    """
    sha = pretrained.file_hash(file) if file is not None else state_dict_hash(module)
    extractor = extractor or f"{name}-{sha}"
    taken = FEATURE_EXTRACTORS_REGISTRY.get(extractor)
    if taken is not None and taken is not ReferenceFeatureExtractor:
        raise ValueError(f"feature extractor name {extractor!r} is taken by {taken.__name__}")
    if extractor in _NETWORKS and _NETWORKS[extractor][2] != sha:
        raise ValueError(f"feature extractor {extractor!r} is registered with a different network "
                         f"(sha256 {_NETWORKS[extractor][2]}, now {sha}); choose another name")
    module.eval()
    resolution = resolution if resolution is not None else getattr(module, "resolution", None)
    _NETWORKS[extractor] = (module, label, sha)
    if taken is None:
        register_feature_extractor(extractor, ReferenceFeatureExtractor)
    return MetricNetwork(name=name, extractor=extractor, sha256=sha,
                         file=str(file) if file is not None else None, resolution=resolution)


def inception_network(path: str | Path | None = None) -> MetricNetwork:
    """torch-fidelity's Inception-v3 (paper profile) from a local file (default: inception_weights_path())."""
    path = Path(path) if path is not None else inception_weights_path()
    if not path.is_file():
        raise MissingWeightsError(f"Inception-v3 weights file {path} does not exist")
    try:  # torch-fidelity unpickles the file as it is: first prove it holds tensors only
        torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise ValueError(f"{path} is not a plain state dict (refused to unpickle it): {err}") from err
    return MetricNetwork(name="inception", extractor=INCEPTION_EXTRACTOR, sha256=pretrained.file_hash(path),
                         file=str(path), weights_path=str(path))


# ----------------------------------------------------------------------------- sample sets

class UInt8Images(Dataset):
    """A uint8 (N,3,H,W) tensor as the Dataset of (3,H,W) tensors torch-fidelity reads."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


class _FirstItem(Dataset):
    """Items of a Dataset of tuples reduced to their first element (the image)."""

    def __init__(self, base: Dataset, n: int):
        self.base, self.n = base, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = self.base[i]
        return item[0] if isinstance(item, (tuple, list)) else item


_UINT8_HINT = ("metrics take uint8 images in [0, 255] (convert [-1,1] floats with data.to_uint8; "
               "ImageFolderDataset.uint8_images() gives a split as uint8)")


def _range_hint(x: torch.Tensor) -> str:
    if not (x.is_floating_point() and x.numel()):
        return ""
    return f" with values in [{x.min().item():.3g}, {x.max().item():.3g}]"


def _check_images(source, what: str, n: int | None) -> tuple[Dataset, int, tuple[int, int]]:
    """Validate a sample set; return (Dataset of uint8 (3,H,W), count used, (H, W)) or raise ValueError.

    `source`: a uint8 tensor (N,3,H,W), a Dataset of uint8 (3,H,W) tensors (or tuples led by one), or a
    folder of PNG/JPEG files (sorted by name, not searched recursively). Uses the first `n` (all if None).
    Folders are checked from the image headers, Datasets item by item (one pass over the used items).
    """
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"{what}: folder {folder} does not exist")
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        count = len(files) if n is None else n
        if not files or len(files) < count:
            raise ValueError(f"{what}: {len(files)} image(s) in {folder}, need {max(count, 1)}")
        sizes: dict[tuple[int, int], Path] = {}
        for f in files[:count]:
            with Image.open(f) as im:
                sizes.setdefault(im.size, f)
        if len(sizes) > 1:
            raise ValueError(f"{what}: mixed image sizes in {folder}: "
                             + ", ".join(f"{w}x{h} (e.g. {p.name})" for (w, h), p in sizes.items()))
        (w, h), = sizes
        return ImagesPathDataset([str(f) for f in files[:count]]), count, (h, w)

    if torch.is_tensor(source):
        if source.dim() != 4 or source.shape[1] != 3:
            raise ValueError(f"{what}: expected a (N,3,H,W) tensor, got shape {tuple(source.shape)}")
        count = len(source) if n is None else n
        if len(source) == 0 or len(source) < count:
            raise ValueError(f"{what}: {len(source)} image(s), need {max(count, 1)}")
        if source.dtype != torch.uint8:
            raise ValueError(f"{what}: images are {source.dtype}{_range_hint(source)}; {_UINT8_HINT}")
        return UInt8Images(source[:count]), count, (source.shape[2], source.shape[3])
    if not isinstance(source, Dataset) or not isinstance(source, Sized):
        raise ValueError(f"{what}: expected a uint8 tensor, a Dataset or a folder, got {type(source).__name__}")
    total = len(source)
    count = total if n is None else n
    if total == 0 or total < count:
        raise ValueError(f"{what}: {total} image(s), need {max(count, 1)}")
    data = _FirstItem(source, count)
    shape = None
    for i in range(count):
        x = data[i]
        if not torch.is_tensor(x) or x.dtype != torch.uint8:
            got = f"{x.dtype}{_range_hint(x)}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{what}: image {i} is {got}; {_UINT8_HINT}")
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"{what}: image {i} has shape {tuple(x.shape)}, expected (3,H,W)")
        if shape is None:
            shape = tuple(x.shape)
        elif tuple(x.shape) != shape:
            raise ValueError(f"{what}: mixed image sizes: image 0 is {shape}, image {i} is {tuple(x.shape)}")
    if shape is None:
        raise ValueError(f"{what}: no images to score (n = {count})")
    return data, count, (shape[1], shape[2])


def _classifies(network: MetricNetwork, label: str | None) -> bool:
    """Whether the logits `network` gives IS are over `label` (only then is class consistency defined)."""
    return network.extractor in _NETWORKS and _NETWORKS[network.extractor][1] == label


def _agreement(logits_NC: torch.Tensor, labels_N: torch.Tensor) -> float:
    """Class consistency: the fraction of rows whose top-1 class is their label."""
    return float((logits_NC.argmax(-1) == labels_N.to(logits_NC.device)).float().mean())


# ----------------------------------------------------------------------------- generation metrics

_KEYS = {  # torch-fidelity result key -> our metric name
    "frechet_inception_distance": "FD",
    "inception_score_mean": "IS",
    "inception_score_std": "IS_std",
    "precision": "precision",
    "recall": "recall",
    "kernel_inception_distance_mean": "KID",
    "kernel_inception_distance_std": "KID_std",
}


def metric_key(metric: str, network: str) -> str:
    """Result key of a metric computed by a network: FID/IS/... for Inception, FD_<net>/IS_<net>/... else."""
    if network == "inception":
        return "FID" if metric == "FD" else metric
    return f"{metric}_{network}"


@dataclass(frozen=True)
class SetFeatures:
    """A checked image set's features under one metric network, as torch-fidelity extracts them: {layer:
    (N, D)}, with the images' (H, W) and the network's hash (features of another network are refused)."""

    layers: dict[str, torch.Tensor]
    size: tuple[int, int]
    network_sha256: str

    def __len__(self) -> int:
        return len(next(iter(self.layers.values())))


def feature_layers(network: MetricNetwork, metrics: Sequence[str]) -> list[str]:
    """The network's feature layers that the torch-fidelity `metrics` read, sorted."""
    extractor = FEATURE_EXTRACTORS_REGISTRY[network.extractor]
    return sorted({extractor.get_default_feature_layer_for_metric(m) for m in metrics})


def set_features(source, network: MetricNetwork, layers: Sequence[str], *, n: int | None = None,
                 batch_size: int = 64, device: str | torch.device = "cpu", what: str = "images") -> SetFeatures:
    """`layers` (`feature_layers`) of the first `n` (default all) images of a sample set, as
    `generation_metrics` reads one, checked first (ValueError naming `what`)."""
    data, _, size = _check_images(source, what, n)
    return _extract(data, size, network, layers, batch_size, device)


def _extract(data: Dataset, size: tuple[int, int], network: MetricNetwork, layers: Sequence[str],
             batch_size: int, device: str | torch.device) -> SetFeatures:
    """Features of a checked Dataset of uint8 (3,H,W) through torch-fidelity's extraction, batch by batch in order."""
    device = torch.device(device)
    if network.extractor == INCEPTION_EXTRACTOR and not network.weights_path:
        raise MissingWeightsError("Inception-v3 needs a local weights file: build the network with inception_network()")
    if network.extractor in _NETWORKS:
        _NETWORKS[network.extractor][0].to(device)
    cuda, verbose = device.type == "cuda", sys.stderr.isatty()  # torch-fidelity's bars only on a terminal
    extractor = create_feature_extractor(network.extractor, list(layers), cuda=cuda, verbose=verbose,
                                         feature_extractor_weights_path=network.weights_path)
    out = get_featuresdict_from_dataset(data, extractor, batch_size, cuda, save_cpu_ram=True, verbose=verbose)
    return SetFeatures(out, (size[0], size[1]), network.sha256)


def generation_metrics(samples, reference, network: MetricNetwork, n: int, *, n_reference: int | None = None,
                       metrics: Sequence[str] = ("fid", "isc", "prc", "kid"), batch_size: int = 64,
                       kid_subset_size: int = 1000, isc_splits: int = 10, prc_neighborhood: int = 3,
                       device: str | torch.device = "cpu", seed: int = 2020, labels: torch.Tensor | None = None,
                       label: str | None = None) -> dict:
    """FD/FID, IS, precision, recall and KID of `samples` against `reference`, all on one network.

    samples, reference: uint8 tensor (N,3,H,W), Dataset of uint8 (3,H,W) (or tuples led by one), or a
    folder; `reference` may also be its `SetFeatures` under `network` (e.g. `pipeline.reference_features`,
    which caches them). The first `n` samples and the first `n_reference` (default all) reference images are
    used; fewer images, mixed sizes or a non-uint8 dtype raise ValueError before any network runs.
    Features come from torch-fidelity's extraction and every metric from torch-fidelity's functions on
    them (its own feature cache, a pickle, is not used). KID's subset size is capped at the smaller set.
    IS uses the samples only. With `labels` (the class each sample was generated for, or a real image's own,
    under the data's `label`), also their class consistency from the same network pass: the fraction the
    network's head for `label` classifies as their class (None where the network has no head over `label`;
    Inception: not computed). Returns keys named by `metric_key` plus N, N_reference, network,
    network_sha256, network_file, KID_subset_size.
    """
    unknown = set(metrics) - {"fid", "isc", "prc", "kid"}
    if unknown or not metrics:
        raise ValueError(f"metrics: {sorted(unknown) or 'none'} not among fid, isc, prc, kid")
    if n < 2:
        raise ValueError(f"n={n}: need at least 2 samples")
    input1, n1, size1 = _check_images(samples, "samples", n)
    if isinstance(reference, SetFeatures):
        if reference.network_sha256 != network.sha256:
            raise ValueError(f"reference features were computed by network {reference.network_sha256}, "
                             f"not {network.describe()}")
        if n_reference is not None and n_reference != len(reference):
            raise ValueError(f"reference: {len(reference)} precomputed features, n_reference={n_reference}")
        input2, n2, size2 = None, len(reference), reference.size
    else:
        input2, n2, size2 = _check_images(reference, "reference", n_reference)
    if network.resolution is not None:
        for what, size in (("samples", size1), ("reference", size2)):
            if size != (network.resolution, network.resolution):
                raise ValueError(f"{what}: images are {size[0]}x{size[1]} but {network.name} takes "
                                 f"{network.resolution}x{network.resolution}")
    if size1 != size2 and network.resolution is None and network.name != "inception":
        raise ValueError(f"samples are {size1} but reference images are {size2}")
    if "isc" in metrics and n1 < isc_splits:
        raise ValueError(f"IS needs at least isc_splits={isc_splits} samples, got {n1}")
    if "prc" in metrics and min(n1, n2) <= prc_neighborhood:
        raise ValueError(f"precision/recall need more than prc_neighborhood={prc_neighborhood} images per set")
    kid_size = min(kid_subset_size, n1, n2)
    binary = [m for m in metrics if m != "isc"]
    missing = set(feature_layers(network, binary)) - set(reference.layers) if input2 is None else set()
    if missing:
        raise ValueError(f"reference features lack the layer(s) {sorted(missing)} that {binary} read")
    if labels is not None and len(labels) != n1:
        raise ValueError(f"labels: {len(labels)} for {n1} samples")
    consistency = labels is not None and _classifies(network, label)
    read = [*metrics, "isc"] if consistency else list(metrics)  # class consistency reads the IS logits
    feats1 = _extract(input1, size1, network, feature_layers(network, read), batch_size, device).layers
    feats2 = None
    if binary:
        feats2 = (reference if input2 is None else
                  _extract(input2, size2, network, feature_layers(network, binary), batch_size, device)).layers
    options = dict(isc_splits=isc_splits, kid_subset_size=kid_size, prc_neighborhood=prc_neighborhood,
                   rng_seed=seed, save_cpu_ram=True, verbose=sys.stderr.isatty())
    layer = {m: feature_layers(network, [m])[0] for m in metrics}
    raw: dict[str, Any] = {}
    if "isc" in metrics:
        raw |= isc_featuresdict_to_metric(feats1, layer["isc"], **options)
    if "fid" in metrics:
        raw |= fid_statistics_to_metric(*(fid_featuresdict_to_statistics(f, layer["fid"]) for f in (feats1, feats2)),
                                        options["verbose"])
    if "kid" in metrics:
        raw |= kid_featuresdict_to_metric(feats1, feats2, layer["kid"], **options)
    if "prc" in metrics:
        raw |= prc_featuresdict_to_metric(feats1, feats2, layer["prc"], **options)
    out: dict[str, Any] = {metric_key(_KEYS[k], network.name): float(v) for k, v in raw.items() if k in _KEYS}
    out.update(N=n1, N_reference=n2, network=network.name, network_sha256=network.sha256,
               network_file=network.file)
    if "kid" in metrics:
        out["KID_subset_size"] = kid_size
    if labels is not None:
        logits = feature_layers(network, ["isc"])[0]
        out[metric_key("class_consistency", network.name)] = _agreement(feats1[logits], labels) if consistency else None
    return out


# ----------------------------------------------------------------------------- reconstruction

PSNR_CAP_DB = 100.0  # PSNR of identical images (MSE = 0); 8-bit quantisation alone tops out near 58.9 dB


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of float images in [-1,1] (peak-to-peak 2): 10·log10(4 / MSE), (B,).

    Both are clamped to [-1,1] first (as when saved as images); MSE = 0 gives PSNR_CAP_DB.
    """
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"psnr takes float images in [-1,1], got {x.dtype} and {y.dtype}")
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"psnr: shapes must match and be (B,C,H,W), got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.clamp(-1, 1).double() - y.clamp(-1, 1).double()).pow(2).flatten(1).mean(1)  # (B,)
    floor = 4.0 * 10 ** (-PSNR_CAP_DB / 10)
    return (10 * torch.log10(4.0 / mse.clamp_min(floor))).float()


def reconstruction_metrics(originals: torch.Tensor, reconstructions: torch.Tensor,
                           perceptual: Callable[..., torch.Tensor] | None = None,
                           perceptual_name: str = "LPIPS", batch_size: int = 100,
                           original_features: Sequence | None = None) -> dict:
    """Mean PSNR and mean perceptual distance over images in [-1,1], (N,3,H,W) each.

    `perceptual(reconstructions, originals) -> (B,)` or (B,1,1,1) distances per batch (e.g. LPIPS, or the
    teacher-feature distance of the small profiles), reported under `perceptual_name`; with
    `original_features` (one entry per batch of `batch_size`) it is called as `perceptual(reconstructions,
    originals, features)`, so the originals' side need not be computed again. rFID is `generation_metrics`
    on the same pairs.
    """
    if len(originals) == 0:
        raise ValueError("reconstruction_metrics: no images")
    p, d = [], []
    with torch.no_grad():
        for k, i in enumerate(range(0, len(originals), batch_size)):
            x, y = originals[i:i + batch_size], reconstructions[i:i + batch_size]
            p.append(psnr(x, y))
            if perceptual is not None:
                known = [] if original_features is None else [original_features[k]]
                d.append(perceptual(y, x, *known).reshape(len(x)).float().cpu())
    out = {"PSNR": torch.cat(p).mean().item(), "N": len(originals)}
    if perceptual is not None:
        out[perceptual_name] = torch.cat(d).mean().item()
    return out


def patch_edge_ratio(images: torch.Tensor, patch: int) -> float:
    """Blockiness of a `patch`-px grid (1 ≈ none; a patch-grid artefact > 1): the mean absolute step between
    neighbouring pixels across patch borders divided by that between neighbours inside a patch, over rows
    and columns of every channel. Images (N, C, H, W) with H and W multiples of `patch`."""
    if images.dim() != 4 or images.shape[-1] % patch or images.shape[-2] % patch:
        raise ValueError(f"patch_edge_ratio: (N, C, H, W) images with H and W multiples of {patch}, "
                         f"got {tuple(images.shape)}")
    x = images.float()
    steps = [x.diff(dim=-1).abs(), x.diff(dim=-2).abs().transpose(-1, -2)]  # (..., W − 1): step i is i → i + 1
    border = (torch.arange(x.shape[-1] - 1) % patch == patch - 1, torch.arange(x.shape[-2] - 1) % patch == patch - 1)
    across = sum(s[..., b].mean() for s, b in zip(steps, border)) / 2
    inside = sum(s[..., ~b].mean() for s, b in zip(steps, border)) / 2
    return float(across / inside)


class CodebookUsage:
    """Fraction of each branch's codes hit, accumulated over batches of token indices.

    `update(indices)` takes a list over scales of (B, P, s, s) LongTensors (CONTRACTS.md layout).
    """

    def __init__(self, codebook_size: int, branches: int):
        self.codebook_size, self.branches = codebook_size, branches
        self.counts = torch.zeros(branches, codebook_size, dtype=torch.long)  # (P, V)

    def update(self, indices: Sequence[torch.Tensor]) -> None:
        for idx_BPss in indices:
            if idx_BPss.dim() != 4 or idx_BPss.shape[1] != self.branches:
                raise ValueError(f"indices must be (B, P={self.branches}, s, s), got {tuple(idx_BPss.shape)}")
            flat_PN = idx_BPss.transpose(0, 1).reshape(self.branches, -1).cpu()  # (P, B*s*s)
            if flat_PN.numel() and (flat_PN.min() < 0 or flat_PN.max() >= self.codebook_size):
                raise ValueError(f"indices outside [0, {self.codebook_size})")
            for b in range(self.branches):
                self.counts[b] += torch.bincount(flat_PN[b], minlength=self.codebook_size)

    def fractions(self) -> list[float]:
        """Per branch, the fraction of codebook entries used at least once."""
        return (self.counts > 0).float().mean(1).tolist()


# ----------------------------------------------------------------------------- linear probe

def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, *,
                 epochs: int = 100, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256,
                 seed: int = 0) -> dict:
    """Top-1 accuracy of BatchNorm1d(affine=False) → Linear on frozen features (B, D), trained with AdamW.

    Deterministic for a seed (its own generator; the global RNG is untouched). Returns top1 (val,
    in [0,1]), train_top1, chance (majority-class rate on val), epochs, N_train, N_val.
    """
    if train_x.dim() != 2 or val_x.dim() != 2 or train_x.shape[1] != val_x.shape[1]:
        raise ValueError(f"features must be (B, D) with equal D, got {tuple(train_x.shape)} and {tuple(val_x.shape)}")
    if len(train_x) != len(train_y) or len(val_x) != len(val_y) or len(train_x) < 2:
        raise ValueError("linear_probe: feature and label counts differ, or fewer than 2 training samples")
    n_cls = int(max(train_y.max(), val_y.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    train_x, val_x = train_x.detach().float().cpu(), val_x.detach().float().cpu()
    train_y, val_y = train_y.long().cpu(), val_y.long().cpu()
    linear = nn.Linear(train_x.shape[1], n_cls)
    with torch.no_grad():
        bound = 1 / math.sqrt(train_x.shape[1])
        linear.weight.uniform_(-bound, bound, generator=gen)
        linear.bias.zero_()
    probe = nn.Sequential(nn.BatchNorm1d(train_x.shape[1], affine=False), linear)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        probe.train()
        for idx in torch.randperm(len(train_x), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(probe(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        top1 = (probe(val_x).argmax(1) == val_y).float().mean().item()
        train_top1 = (probe(train_x).argmax(1) == train_y).float().mean().item()
    chance = torch.bincount(val_y, minlength=n_cls).max().item() / len(val_y)
    return dict(top1=top1, train_top1=train_top1, chance=chance, epochs=epochs,
                N_train=len(train_x), N_val=len(val_x))
