"""One resolver for every pretrained network: a local file, the hub only if allowed, else a clear error.

The profile names the networks; availability never changes them. `resolve(name)` returns the path of
the weights file. Where it looks, in order:
1. `$IMAGEFOLDER_WEIGHTS/<file>` (default `runs/weights/`), where the compendium writes the reference
   networks it retrains on request (`teacher-<profile>`, `evaluator-<profile>`, `make data` with `--force`);
2. for those reference networks, the files shipped with the package (`imagefolder/reference_weights/`, their
   SHA-256 in `SHA256SUMS` there), so every machine measures with the same instrument;
3. the library's standard cache (`$TORCH_HOME/hub/checkpoints/` for torchvision / torch-fidelity files,
   the Hugging Face cache for timm's DINOv2);
4. with `allow_download=True` only, the library's own download (fails on machines without a hub).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import save_tensors


class MissingWeightsError(FileNotFoundError):
    """A pretrained network's file is not on this machine; the message says what to put where."""


@dataclass(frozen=True)
class Known:
    file: str  # file name in $IMAGEFOLDER_WEIGHTS or the torch hub cache
    what: str  # what the network is, for error messages
    origin: str  # where a user obtains it
    torch_hub: bool = False  # also looked up in $TORCH_HOME/hub/checkpoints
    hf_repo: str | None = None  # also looked up in the Hugging Face cache (timm weights)
    shipped: bool = False  # also looked up among the files shipped with the package (SHIPPED_DIR)

    @property
    def timm_arch(self) -> str | None:
        """The timm architecture its weights fit: the Hugging Face repo's model without its pretrained tag."""
        return self.hf_repo.split("/", 1)[1].split(".")[0] if self.hf_repo else None


KNOWN = {
    "dinov2_vitb14": Known("dinov2_vitb14.safetensors", "DINOv2 ViT-B/14 (timm vit_base_patch14_dinov2.lvd142m)",
                           "timm: timm.create_model('vit_base_patch14_dinov2.lvd142m', pretrained=True) on a "
                           "machine with hub access, then save its state_dict with safetensors",
                           hf_repo="timm/vit_base_patch14_dinov2.lvd142m"),
    "dinov2_vits14": Known("dinov2_vits14.safetensors", "DINOv2 ViT-S/14 (timm vit_small_patch14_dinov2.lvd142m)",
                           "timm: vit_small_patch14_dinov2.lvd142m, saved with safetensors",
                           hf_repo="timm/vit_small_patch14_dinov2.lvd142m"),
    "dino_vits16": Known("dino_vits16.safetensors", "DINO-v1 ViT-S/16 (timm vit_small_patch16_224.dino)",
                         "timm: vit_small_patch16_224.dino, saved with safetensors",
                         hf_repo="timm/vit_small_patch16_224.dino"),
    "inception-v3-compat": Known("weights-inception-2015-12-05-6726825d.pth",
                                 "torch-fidelity's Inception-v3 (FID/IS network)",
                                 "torch-fidelity's release v0.2.0 asset of that name", torch_hub=True),
    "vgg16": Known("vgg16-397923af.pth", "torchvision VGG16 (the LPIPS backbone)",
                   "torchvision.models.vgg16(weights='IMAGENET1K_V1') downloads it", torch_hub=True),
}


SHIPPED_DIR = Path(__file__).with_name("reference_weights")


def weights_dir() -> Path:
    return Path(os.environ.get("IMAGEFOLDER_WEIGHTS", "runs/weights"))


def torch_hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _known(name: str) -> Known:
    if name in KNOWN:
        return KNOWN[name]
    role, _, profile = name.partition("-")
    if role in ("teacher", "evaluator") and profile:
        return Known(f"{name}.safetensors", f"the {role} reference network of the {profile} profile",
                     f"`make data PROFILE={profile}` trains it", shipped=True)
    raise MissingWeightsError(f"unknown pretrained network {name!r}; known: {sorted(KNOWN)} or "
                              "teacher-/evaluator-<profile>")


def candidates(name: str) -> list[Path]:
    """Every path the resolver checks for `name`, in order."""
    known = _known(name)
    paths = [weights_dir() / known.file]
    if known.shipped:
        paths.append(SHIPPED_DIR / known.file)
    if known.torch_hub:
        paths.append(torch_hub_dir() / known.file)
    if known.hf_repo:
        hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        snapshots = hf_home / "hub" / f"models--{known.hf_repo.replace('/', '--')}" / "snapshots"
        paths += sorted(snapshots.glob("*/model.safetensors"))
    return paths


def find(name: str) -> Path | None:
    """The first of `candidates(name)` that is a file, or None."""
    return next((path for path in candidates(name) if path.is_file()), None)


def resolve(name: str, allow_download: bool = False) -> Path:
    """Path of the weights of `name`; raises MissingWeightsError saying which file to put where."""
    known = _known(name)
    found = find(name)
    if found is not None:
        return found
    if allow_download:
        return _download(name, known)
    raise MissingWeightsError(
        f"{known.what} is needed but was not found. Put the file `{known.file}` in {weights_dir()}/ "
        f"(or set IMAGEFOLDER_WEIGHTS to its folder)"
        + (f" or in {torch_hub_dir()}/" if known.torch_hub else "")
        + f". Origin: {known.origin}. Looked in: {', '.join(str(p) for p in candidates(name))}.")


def _download(name: str, known: Known) -> Path:
    """The library's own download (only with allow_download); needs hub access."""
    if known.torch_hub:
        if name == "vgg16":
            from torchvision.models import VGG16_Weights
            url = VGG16_Weights.IMAGENET1K_V1.url
        else:
            from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
            url = URL_INCEPTION_V3
        torch.hub.load_state_dict_from_url(url, model_dir=str(torch_hub_dir()))
        return torch_hub_dir() / known.file
    if known.hf_repo:
        import timm
        model = timm.create_model(known.hf_repo.split("/", 1)[1], pretrained=True)
        return save_tensors(model.state_dict(), weights_dir() / known.file)
    raise MissingWeightsError(f"{known.what} cannot be downloaded: {known.origin}")


def sha256(path: str | Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hash(path: str | Path) -> str:
    """Short SHA-256 of a weights file, recorded beside every metric it computes."""
    return sha256(path)[:16]


def shipped_sums() -> dict[str, str]:
    """File name → SHA-256 of the reference networks shipped with the package (`SHA256SUMS`)."""
    path = SHIPPED_DIR / "SHA256SUMS"
    if not path.exists():
        return {}
    return {name: digest for digest, name in (line.split() for line in path.read_text().splitlines() if line.strip())}
