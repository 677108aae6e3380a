import pytest
import torch

from imagefolder import config, pretrained, reference
from imagefolder.pretrained import MissingWeightsError


def test_missing_weights_error_says_which_file_where(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError) as err:
        pretrained.resolve("inception-v3-compat")
    msg = str(err.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in msg and str(tmp_path / "w") in msg
    assert str(tmp_path / "th" / "hub" / "checkpoints") in msg
    with pytest.raises(MissingWeightsError, match="dinov2_vitb14.safetensors"):
        pretrained.resolve("dinov2_vitb14")
    with pytest.raises(MissingWeightsError, match="make data PROFILE=gpu"):  # cpu and smoke ship theirs
        pretrained.resolve("teacher-gpu")
    with pytest.raises(MissingWeightsError, match="unknown pretrained network"):
        pretrained.resolve("resnet50")


def test_resolver_finds_local_files_first(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path))
    (tmp_path / "vgg16-397923af.pth").write_bytes(b"x")
    assert pretrained.resolve("vgg16") == tmp_path / "vgg16-397923af.pth"
    assert len(pretrained.file_hash(tmp_path / "vgg16-397923af.pth")) == 16


def test_reference_networks_train_save_and_load_frozen(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path / "w"))
    cfg = config.profile("smoke", {"run_dir": str(tmp_path / "runs")})
    for role in ("teacher", "evaluator"):
        path = reference.train_reference(cfg, role)
        info = __import__("json").loads(path.with_suffix(".json").read_text())
        assert set(info["val_accuracy"]) == set(getattr(cfg, role).labels)
        net = reference.load(cfg, role)
        assert not any(p.requires_grad for p in net.parameters()) and not net.training
        x = torch.zeros(2, 3, cfg.data.resolution, cfg.data.resolution)
        assert net.features(x).ndim == 2 and net.logits(x, getattr(cfg, role).labels[0]).shape[0] == 2
    assert isinstance(reference.load(cfg, "teacher").vit, torch.nn.Module)  # same layout as the encoder


def test_every_pretrained_vit_a_profile_names_is_known_with_its_timm_architecture():
    from typing import get_args

    import timm
    hints = config._hints(config.TokenizerConfig)
    named = {n for field in ("teacher_network", "disc_backbone") for n in get_args(hints[field])} - {"reference"}
    assert named <= set(pretrained.KNOWN)
    assert {name: pretrained.KNOWN[name].timm_arch for name in sorted(named)} == {
        "dino_vits16": "vit_small_patch16_224", "dinov2_vitb14": "vit_base_patch14_dinov2",
        "dinov2_vits14": "vit_small_patch14_dinov2"}
    assert all(timm.is_model(pretrained.KNOWN[name].timm_arch) for name in named)
    assert pretrained.KNOWN["vgg16"].timm_arch is None
