"""The paper's FID protocol on a synthetic npz laid out as the ADM suite's VIRTUAL_imagenet256_labeled.npz."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from imagefolder import adm_reference, metrics, pretrained


def hadamard_features(mu: np.ndarray, var: np.ndarray) -> torch.Tensor:
    """8 rows whose sample mean is `mu` and unbiased sample covariance exactly diag(var) (D ≤ 7): Hadamard
    columns are ±1, mean 0 and orthogonal, so each has unbiased variance 8/7."""
    h = np.array([[1]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])  # 8 × 8 Sylvester-Hadamard
    cols = h[:, 1:1 + len(mu)]
    return torch.tensor(mu + cols * np.sqrt(var * 7 / 8), dtype=torch.float64)


def write_npz(path, mu, sigma, **extra):
    np.savez(path, mu=mu, sigma=sigma, mu_s=np.zeros(3), sigma_s=np.eye(3), **extra)  # the ADM layout
    return path


def test_fid_against_a_synthetic_reference(tmp_path, monkeypatch):
    mu, var = np.array([0.5, -1.0, 2.0, 0.0]), np.array([4.0, 1.0, 0.25, 9.0])
    mu_r, var_r = np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0])
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path))
    write_npz(tmp_path / adm_reference.ADM_FILE, mu_r, np.diag(var_r), arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    ref = adm_reference.load_reference()
    # diagonal covariances: FID = |μ − μr|² + Σ (√v − √vr)², by hand: (0.25 + 1 + 1 + 1) + (1 + 0 + 0.25 + 4) = 8.5
    assert adm_reference.fid_against(hadamard_features(mu, var), ref) == pytest.approx(8.5, rel=1e-9)
    same = metrics.SetFeatures({"2048": hadamard_features(mu_r, var_r)}, (256, 256), "x")
    assert adm_reference.fid_against(same, ref) == pytest.approx(0.0, abs=1e-9)


def test_a_full_covariance_matches_the_closed_form(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    sigma_r = a @ a.T + np.eye(3)
    ref = adm_reference.load_reference(write_npz(tmp_path / "ref.npz", np.zeros(3), sigma_r))
    feats = hadamard_features(np.ones(3), np.ones(3))  # mean 1, covariance I
    # with Σ = I: tr(Σ + Σr − 2 (Σ Σr)^½) = 3 + tr Σr − 2 tr Σr^½, the square root from Σr's eigenvalues
    expected = 3 + 3 + np.trace(sigma_r) - 2 * np.sqrt(np.linalg.eigvalsh(sigma_r)).sum()
    assert adm_reference.fid_against(feats, ref) == pytest.approx(expected, rel=1e-9)


def test_a_missing_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path / "w"))
    with pytest.raises(pretrained.MissingWeightsError, match=str(tmp_path / "w" / adm_reference.ADM_FILE)):
        adm_reference.load_reference()


@pytest.mark.parametrize("arrays, match", [
    ({"mu": np.zeros(3)}, "no sigma array"),
    ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"mu \(3,\) and sigma \(4, 4\)"),
    ({"mu": np.array([0, np.nan, 0]), "sigma": np.eye(3)}, "non-finite"),
])
def test_a_bad_file_names_it(tmp_path, arrays, match):
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"{path}.*{match}"):
        adm_reference.load_reference(path)


def test_features_of_another_width_are_refused(tmp_path):
    ref = adm_reference.load_reference(write_npz(tmp_path / "ref.npz", np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match=r"features \(8, 4\) do not match .*3-d"):
        adm_reference.fid_against(torch.zeros(8, 4), ref)


def test_the_paper_profile_checks_the_file_before_sampling(tmp_path, monkeypatch):
    from imagefolder import config, pipeline
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path))
    cfg = config.profile("paper", {"run_dir": str(tmp_path / "runs")})
    assert cfg.evaluation.fid_reference == "adm"
    with pytest.raises(pretrained.MissingWeightsError, match=adm_reference.ADM_FILE):  # nothing sampled: no models
        pipeline.evaluate_generator(cfg, None, None, None, n=2, seed=0)
