"""The reference networks shipped with the package are the instrument every machine measures with."""
from __future__ import annotations

import json

import pytest
import torch

from imagefolder import checkpoint, config, pretrained, reference


def test_shipped_files_match_their_recorded_hashes():
    sums = pretrained.shipped_sums()
    shipped = sorted(p.name for p in pretrained.SHIPPED_DIR.glob("*.safetensors"))
    assert shipped and sorted(sums) == shipped
    for name, digest in sums.items():
        path = pretrained.SHIPPED_DIR / name
        assert pretrained.sha256(path) == digest, f"{path} is not the file SHA256SUMS records"
        assert json.loads(path.with_suffix(".json").read_text())["file_hash"] == digest[:16]


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_small_profiles_ship_both_networks(profile):
    for role in ("teacher", "evaluator"):
        assert f"{reference.weights_name(config.profile(profile), role)}.safetensors" in pretrained.shipped_sums()


def test_shipped_network_is_used_without_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path / "empty"))
    cfg = config.profile("smoke", {"run_dir": str(tmp_path / "runs")})
    path = reference.train_reference(cfg, "evaluator")
    assert path == pretrained.SHIPPED_DIR / "evaluator-smoke.safetensors" == pretrained.resolve("evaluator-smoke")
    assert "shipped with the package" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    net = reference.load(cfg, "evaluator")  # a frozen network holding the shipped file's weights
    shipped, _, _ = checkpoint.load_model(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.state_dict().keys() == shipped.keys()
    assert all(torch.equal(t, shipped[k]) for k, t in net.state_dict().items())
    res = cfg.data.resolution
    assert net.features(torch.zeros(2, 3, res, res)).shape[0] == 2


def test_a_local_file_that_differs_from_the_shipped_one_is_named(tmp_path, monkeypatch, capsys):
    local = tmp_path / "weights"
    local.mkdir()
    for suffix in (".safetensors", ".json"):
        (local / f"teacher-smoke{suffix}").write_bytes((pretrained.SHIPPED_DIR / f"teacher-smoke{suffix}").read_bytes())
    (local / "teacher-smoke.safetensors").write_bytes((local / "teacher-smoke.safetensors").read_bytes() + b" ")
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(local))
    assert reference.train_reference(config.profile("smoke"), "teacher") == local / "teacher-smoke.safetensors"
    assert "NOT the shipped file" in capsys.readouterr().out
