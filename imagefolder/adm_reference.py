"""The paper's FID protocol: 50 000 generated 256 px samples scored with torch-fidelity's TF-compatible
Inception-v3 (`inception-v3-compat`, pool3 features) against the ADM evaluation suite's ImageNet 256 reference
statistics, the `mu` / `sigma` of `VIRTUAL_imagenet256_labeled.npz` (openai/guided-diffusion, evaluations/),
which the user supplies in $IMAGEFOLDER_WEIGHTS. So a reader's gFID is comparable with the paper's 2.60.

    ref = load_reference()                              # the npz, checked; a missing file names itself
    adm_fid(images_u8, metrics.inception_network(), ref) # or fid_against(features, ref) for features in hand
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_featuresdict_to_statistics, fid_statistics_to_metric

from . import metrics, pretrained

ADM_FILE = "VIRTUAL_imagenet256_labeled.npz"
ADM_SAMPLES = 50_000  # the paper's sample count (50 per ImageNet class)
FID_LAYER = "2048"  # the Inception layer FID reads (pool3), as the ADM suite's `pool_3`


@dataclass(frozen=True)
class AdmReference:
    """Reference statistics of the ADM suite: mean (D,) and covariance (D, D) of pool3 features."""

    mu: np.ndarray
    sigma: np.ndarray
    path: Path
    sha256: str


def reference_path() -> Path:
    """Where the npz is looked for: $IMAGEFOLDER_WEIGHTS/VIRTUAL_imagenet256_labeled.npz."""
    return pretrained.weights_dir() / ADM_FILE


def load_reference(path: str | Path | None = None) -> AdmReference:
    """The `mu` / `sigma` of an ADM reference batch (default `reference_path()`), checked: a missing file or
    field, a wrong shape or a non-finite value raises naming the file."""
    path = Path(path) if path is not None else reference_path()
    if not path.is_file():
        raise pretrained.MissingWeightsError(
            f"the ADM reference statistics {path} are missing: put {ADM_FILE} (openai/guided-diffusion, "
            f"evaluations/, ImageNet 256×256) in {path.parent}/ (or set IMAGEFOLDER_WEIGHTS to its folder)")
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in ("mu", "sigma") if k not in npz.files]
        if missing:
            raise ValueError(f"{path}: no {' / '.join(missing)} array (has {sorted(npz.files)})")
        mu, sigma = npz["mu"].astype(np.float64), npz["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu / sigma hold non-finite values")
    return AdmReference(mu, sigma, path, pretrained.file_hash(path))


def fid_against(features_ND: torch.Tensor | metrics.SetFeatures, ref: AdmReference) -> float:
    """FID of pool3 features (N, D) (or a `SetFeatures` holding layer "2048") against `ref`: torch-fidelity's
    statistics (mean, unbiased covariance, float64) and Fréchet distance."""
    feats = features_ND.layers[FID_LAYER] if isinstance(features_ND, metrics.SetFeatures) else features_ND
    if feats.ndim != 2 or feats.shape[1] != ref.mu.shape[0]:
        raise ValueError(f"features {tuple(feats.shape)} do not match {ref.path}'s {ref.mu.shape[0]}-d statistics")
    if feats.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 samples, got {feats.shape[0]}")
    ours = fid_featuresdict_to_statistics({FID_LAYER: feats}, FID_LAYER)
    return float(fid_statistics_to_metric(ours, {"mu": ref.mu, "sigma": ref.sigma}, False)[KEY_METRIC_FID])


def adm_fid(images_u8, network: metrics.MetricNetwork, ref: AdmReference, *, batch_size: int = 250,
            device: str | torch.device = "cpu") -> dict:
    """The paper's gFID of generated uint8 images (N, 3, 256, 256) under torch-fidelity's Inception (`network`,
    `metrics.inception_network()`) against `ref`: {"FID_adm", "N", "reference", "reference_sha256",
    "network_sha256"}. The paper's protocol is N = ADM_SAMPLES."""
    if network.extractor != metrics.INCEPTION_EXTRACTOR:
        raise ValueError(f"the ADM statistics are Inception pool3 features; {network.describe()} is not Inception")
    feats = metrics.set_features(images_u8, network, [FID_LAYER], batch_size=batch_size, device=device,
                                 what="generated samples")
    return {"FID_adm": fid_against(feats, ref), "N": len(feats), "reference": str(ref.path),
            "reference_sha256": ref.sha256, "network_sha256": network.sha256}
