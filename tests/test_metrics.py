"""metrics.py: torch-fidelity wiring on a tiny random reference net, reconstruction, probe; the profile's metric
network (pipeline.metric_network); evaluation without the trainer."""
import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from imagefolder import checkpoint, config, pipeline, pretrained, reference
from imagefolder import metrics as M
from imagefolder.data import ImageFolderDataset
from imagefolder.sample_classes import balanced_labels

SIZE = 16


class TinyNet(nn.Module):
    """A random conv net with the reference-network interface (features, classify)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def features(self, x):
        return self.body(x)

    def classify(self, features, label=None):
        return self.head(features)


class ColourNet(nn.Module):
    """Logits we control: class = which of 4 colours the image's mean is closest to (scaled 20×)."""

    COLOURS = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen_labels = []

    def features(self, x):
        return x.mean((2, 3))

    def classify(self, features, label):
        self.seen_labels.append(label)
        return -20 * torch.cdist(features, self.COLOURS)


class ExplodingNet(TinyNet):
    def features(self, x):
        raise AssertionError("the network ran before the inputs were validated")

    def classify(self, features, label=None):
        raise AssertionError("the network ran before the inputs were validated")


class Labelled(torch.utils.data.Dataset):
    """(image, label) items, like data.ImageFolderDataset."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


def structured(n, seed):
    """Smooth random images in [-1,1]: 4×4 noise upsampled bicubically, (n,3,SIZE,SIZE)."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(low, size=SIZE, mode="bicubic", align_corners=False).clamp(-1, 1)


def u8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def net():
    return M.reference_network(TinyNet(), "evaluator", resolution=SIZE)


@pytest.fixture(scope="module")
def sets():
    return structured(96, 0), structured(96, 1)


# ----------------------------------------------------------------------------- generation metrics

def test_fd_zero_on_itself_and_monotone_in_noise_and_blur(net, sets):
    a, b = sets
    same = M.generation_metrics(u8(a), u8(a), net, 96, metrics=("fid",))
    assert abs(same["FD_evaluator"]) < 1e-9
    noise = [M.generation_metrics(u8(a + s * randn(a.shape, 5)), u8(b), net, 96, metrics=("fid",))["FD_evaluator"]
             for s in (0.0, 0.1, 0.3, 0.8)]
    blur = [M.generation_metrics(u8(TF.gaussian_blur(a, k, sigma=k / 3) if k > 1 else a), u8(b), net, 96,
                                 metrics=("fid",))["FD_evaluator"] for k in (1, 3, 5, 7)]
    for curve in (noise, blur):
        assert all(x < y for x, y in zip(curve, curve[1:])), curve
        assert curve[-1] > 5 * curve[0]


def test_result_keys_carry_n_and_network(net, sets):
    a, b = sets
    r = M.generation_metrics(u8(a), u8(b), net, 64, kid_subset_size=1000)
    assert {"FD_evaluator", "IS_evaluator", "precision_evaluator", "recall_evaluator", "KID_evaluator"} <= set(r)
    assert not any("inception" in k for k in r)
    assert r["N"] == 64 and r["N_reference"] == 96 and r["KID_subset_size"] == 64
    assert r["network"] == "evaluator" and r["network_sha256"] == net.sha256 and len(net.sha256) == 16
    assert M.metric_key("FD", "inception") == "FID" and M.metric_key("IS", "inception") == "IS"
    assert M.metric_key("FD", "evaluator") == "FD_evaluator"


def test_inception_score_follows_the_logits():
    colour = ColourNet()
    network = M.reference_network(colour, "colour", label="category", resolution=SIZE)
    labels = balanced_labels(80, 4)
    tint = ColourNet.COLOURS[labels][:, :, None, None] * 0.8  # (80,3,1,1) one colour per image
    confident = u8(tint + 0.05 * randn((80, 3, SIZE, SIZE), 1))
    noise = u8(torch.rand(80, 3, SIZE, SIZE) * 2 - 1)
    is_structured = M.generation_metrics(confident, confident, network, 80, metrics=("isc",), isc_splits=2)
    is_noise = M.generation_metrics(noise, noise, network, 80, metrics=("isc",), isc_splits=2)
    assert 3.5 < is_structured["IS_colour"] <= 4.0 + 1e-6
    assert is_noise["IS_colour"] < 2.0
    assert set(colour.seen_labels) == {"category"}


def test_precision_recall_and_kid(net, sets):
    a, b = sets
    real = M.generation_metrics(u8(a), u8(b), net, 96, metrics=("prc", "kid"), kid_subset_size=48)
    noise = M.generation_metrics(u8(torch.rand(96, 3, SIZE, SIZE) * 2 - 1), u8(b), net, 96,
                                 metrics=("prc", "kid"), kid_subset_size=48)
    gray = M.generation_metrics(u8(0.05 * randn((96, 3, SIZE, SIZE), 2)), u8(b), net, 96, metrics=("prc",))
    collapsed = M.generation_metrics(u8(a[:4].repeat(24, 1, 1, 1) + 0.02 * randn((96, 3, SIZE, SIZE), 3)), u8(b),
                                     net, 96, metrics=("prc",))
    assert real["precision_evaluator"] > 0.7 and real["recall_evaluator"] > 0.7
    assert noise["precision_evaluator"] < 0.1
    assert gray["precision_evaluator"] < 0.1 and gray["recall_evaluator"] < 0.1
    # samples are input1: a collapsed generator is precise but does not cover the real set
    assert collapsed["precision_evaluator"] > 0.5 and collapsed["recall_evaluator"] < 0.1
    assert abs(real["KID_evaluator"]) < noise["KID_evaluator"] / 10


def test_folder_input_matches_tensor(net, sets, tmp_path):
    a, b = sets
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, img in enumerate(u8(a[:40])):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    from_tensor = M.generation_metrics(u8(a[:40]), u8(b), net, 40, metrics=("fid",))
    from_folder = M.generation_metrics(folder, u8(b), net, 40, metrics=("fid",))
    assert from_folder["FD_evaluator"] == pytest.approx(from_tensor["FD_evaluator"], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("case", ["empty", "too_few", "float", "float_dataset", "mixed", "mixed_folder",
                                  "wrong_resolution"])
def test_bad_inputs_fail_before_the_network_runs(case, tmp_path):
    network = M.reference_network(ExplodingNet(), "exploding", resolution=SIZE)
    good = u8(structured(8, 0))
    samples, expected = {
        "empty": (torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8), "0 image"),
        "too_few": (good[:4], "need 8"),
        "float": (structured(8, 0), "float32 with values in .* uint8"),
        "float_dataset": (Labelled(structured(8, 0)), "image 0 is torch.float32 .* uint8"),
        "mixed": ([good[0], good[1][:, :8, :8]] * 4, "mixed image sizes"),
        "mixed_folder": (tmp_path, "mixed image sizes"),
        "wrong_resolution": (u8(structured(8, 0)[:, :, :8, :8]), "takes 16x16"),
    }[case]
    if case == "mixed_folder":
        for i in range(8):
            Image.new("RGB", (SIZE, SIZE) if i else (8, 8)).save(tmp_path / f"{i}.png")
    if case == "mixed":
        samples = Labelled(samples)
    with pytest.raises(ValueError, match=expected):
        M.generation_metrics(samples, good, network, 8, isc_splits=2)


def test_registration_is_idempotent_and_per_network():
    first = M.reference_network(TinyNet(0), "evaluator", extractor="evaluator-test")
    again = M.reference_network(TinyNet(0), "evaluator", extractor="evaluator-test")  # a reloaded copy
    assert first == again and FEATURE_EXTRACTORS_REGISTRY["evaluator-test"] is M.ReferenceFeatureExtractor
    other = M.reference_network(TinyNet(1), "evaluator")
    assert other.extractor != first.extractor and other.sha256 != first.sha256
    with pytest.raises(ValueError, match="different network"):
        M.reference_network(TinyNet(1), "evaluator", extractor="evaluator-test")
    with pytest.raises(ValueError, match="taken"):
        M.reference_network(TinyNet(0), "x", extractor="vgg16")
    x, y = u8(structured(24, 4)), u8(structured(24, 5))
    fd = [M.generation_metrics(x, y, n, 24, metrics=("fid",))["FD_evaluator"] for n in (first, other)]
    assert fd[0] != fd[1]


def test_missing_inception_file_names_file_and_folder(tmp_path, monkeypatch):
    weights, hub = tmp_path / "weights", tmp_path / "torch_home"
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(weights))
    monkeypatch.setenv("TORCH_HOME", str(hub))
    file = "weights-inception-2015-12-05-6726825d.pth"
    for call in (M.inception_weights_path, M.inception_network,
                 lambda: pipeline.metric_network(config.profile("paper"))):
        with pytest.raises(M.MissingWeightsError) as err:
            call()
        assert file in str(err.value) and str(weights) in str(err.value)
        assert str(hub / "hub" / "checkpoints") in str(err.value)
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    (hub / "hub" / "checkpoints" / file).write_bytes(b"stand-in")
    assert M.inception_weights_path() == hub / "hub" / "checkpoints" / file
    with pytest.raises(ValueError, match="not a plain state dict"):  # never handed to torch-fidelity's unpickler
        M.inception_network()
    torch.save({"fc.weight": torch.zeros(2, 2)}, hub / "hub" / "checkpoints" / file)
    network = M.inception_network()
    assert network.extractor == "inception-v3-compat" and network.sha256 == pretrained.file_hash(network.file)


def test_metric_network_of_a_small_profile_is_its_evaluator(smoke_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEFOLDER_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(M, "_NETWORKS", dict(M._NETWORKS))  # its random evaluator-smoke leaves with the test
    with pytest.raises(M.MissingWeightsError, match="evaluator-gpu"):  # the smoke and cpu evaluators ship
        pipeline.metric_network(dataclasses.replace(smoke_cfg, profile="gpu"))
    res = smoke_cfg.data.resolution
    net = reference.ReferenceNet(smoke_cfg.evaluator, res, {"category": 3, "subcategory": 5})
    record = {"reference": config.to_dict(smoke_cfg)["evaluator"], "data": config.to_dict(smoke_cfg)["data"]}
    checkpoint.save_model(net.state_dict(), tmp_path / "evaluator-smoke.safetensors", record)
    network = pipeline.metric_network(smoke_cfg)
    assert (network.name, network.extractor, network.resolution) == ("evaluator", "evaluator-smoke", res)
    assert network.sha256 == pretrained.file_hash(tmp_path / "evaluator-smoke.safetensors")
    images = u8(F.interpolate(structured(12, 0), size=res))
    r = M.generation_metrics(images, images, network, 12, kid_subset_size=6, isc_splits=2)
    assert abs(r["FD_evaluator"]) < 1e-6 and 1 <= r["IS_evaluator"] <= 3 and r["network_file"] == network.file


# ----------------------------------------------------------------------------- reconstruction

def test_psnr_cap_and_gaussian_noise():
    x = structured(16, 0) * 0.5  # inside [-0.5, 0.5]: noise of σ=0.02 is never clamped
    assert torch.all(M.psnr(x, x.clone()) == M.PSNR_CAP_DB)
    sigma = 0.02
    noisy = x + sigma * randn(x.shape, 1)
    expected = 10 * math.log10(4 / sigma ** 2)
    assert M.psnr(x, noisy).mean().item() == pytest.approx(expected, abs=0.15)
    with pytest.raises(ValueError, match="float"):
        M.psnr(u8(x), u8(noisy))


def test_reconstruction_metrics_uses_the_given_perceptual_distance():
    x = structured(10, 0)
    y = x + 0.1
    l1 = lambda a, b: (a - b).abs().mean((1, 2, 3))  # noqa: E731
    r = M.reconstruction_metrics(x, y, perceptual=l1, perceptual_name="L1", batch_size=3)
    assert r["N"] == 10 and r["L1"] == pytest.approx(l1(x.clamp(-1, 1), y).mean().item(), rel=1e-5)
    assert r["PSNR"] == pytest.approx(M.psnr(x, y).mean().item(), rel=1e-6)


def test_codebook_usage_per_branch():
    usage = M.CodebookUsage(codebook_size=8, branches=2)
    usage.update([torch.tensor([[[[0]], [[1]]]]),
                  torch.stack([torch.zeros(2, 2), torch.arange(4).view(2, 2)])[None].long()])
    usage.update([torch.tensor([[[[7]], [[7]]]])])
    assert usage.fractions() == [2 / 8, 5 / 8]
    with pytest.raises(ValueError, match="outside"):
        usage.update([torch.full((1, 2, 1, 1), 8)])
    one_batch = M.CodebookUsage(codebook_size=8, branches=2)  # two scales of one batch
    one_batch.update([torch.tensor([[[[0]], [[1]]]]), torch.tensor([[[[0, 1], [2, 3]], [[1, 1], [1, 1]]]])])
    assert one_batch.fractions() == [4 / 8, 1 / 8]


# ----------------------------------------------------------------------------- linear probe

def _gaussian_classes(n, d, k, spread, seed):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=torch.Generator().manual_seed(99)) * spread
    y = torch.arange(n) % k
    return means[y] + torch.randn(n, d, generator=g), y


def test_linear_probe_separable_vs_random_labels():
    tx, ty = _gaussian_classes(400, 16, 4, 3.0, 0)
    vx, vy = _gaussian_classes(400, 16, 4, 3.0, 1)
    sep = M.linear_probe(tx, ty, vx, vy, epochs=30, lr=1e-2)
    assert sep["top1"] > 0.9 and sep["chance"] == 0.25
    g = torch.Generator().manual_seed(3)  # labels independent of the features, in both splits
    rand = M.linear_probe(tx, torch.randint(0, 4, (400,), generator=g), vx, torch.randint(0, 4, (400,), generator=g),
                          epochs=30, lr=1e-2)
    assert rand["train_top1"] > rand["top1"] and rand["top1"] < rand["chance"] + 0.07  # 3σ of 400 draws
    assert M.linear_probe(tx, ty, vx, vy, epochs=5, seed=7) == M.linear_probe(tx, ty, vx, vy, epochs=5, seed=7)


def test_samples_are_scored_against_a_capped_class_spread_train_set(image_folder, net, tmp_path):
    cfg = config.profile("smoke", {"run_dir": str(tmp_path / "runs"), "data.name": "folder",
                                   "data.root": str(image_folder), "data.in_memory": False,
                                   "evaluation.num_reference": 6})
    samples = ImageFolderDataset(cfg.data, "val").uint8_images()
    result = pipeline.score_against_train(cfg, samples, net)
    assert result["N"] == 12 and result["N_reference"] == 6
    spread = ImageFolderDataset(dataclasses.replace(cfg.data, max_per_split=6), "train")
    assert set(spread.labels.tolist()) == {0, 1}



def test_train_features_are_cached_and_score_as_computed_anew(image_folder, net, tmp_path):
    cfg = config.profile("smoke", {"run_dir": str(tmp_path / "runs"), "data.name": "folder",
                                   "data.root": str(image_folder), "data.in_memory": False})
    samples = ImageFolderDataset(cfg.data, "val").uint8_images()
    cache = tmp_path / "runs" / "smoke" / "cache"
    fresh = pipeline.score_against_train(cfg, samples, net, train_images=pipeline.reference_set(cfg))
    assert not cache.exists()  # given the images, nothing is cached
    first = pipeline.score_against_train(cfg, samples, net)
    (entry,) = cache.iterdir()
    assert first == fresh == pipeline.score_against_train(cfg, samples, net)  # computed, then read: equal
    # one train image changes: a new entry, and the scores move
    image = image_folder / "train" / "a" / "0.png"
    original = image.read_bytes()
    Image.new("RGB", (20, 20), (0, 0, 0)).save(image)
    changed = pipeline.score_against_train(cfg, samples, net)
    assert len(list(cache.iterdir())) == 2 and changed["FD_evaluator"] != first["FD_evaluator"]
    assert changed == pipeline.score_against_train(cfg, samples, net, train_images=pipeline.reference_set(cfg))
    image.write_bytes(original)  # back to the first entry, now damaged
    entry.write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match=f"{entry.name}.*delete it"):
        pipeline.score_against_train(cfg, samples, net)
    skipping = config.apply_overrides(cfg, {"data.skip_corrupt": True, "run_dir": str(tmp_path / "other")})
    assert pipeline.score_against_train(skipping, samples, net) == first  # recomputed, so skips are reported
    assert not (tmp_path / "other").exists()


def test_val_originals_are_kept_until_a_file_or_the_teacher_changes(image_folder, tmp_path):
    cfg = config.profile("smoke", {"run_dir": str(tmp_path / "runs"), "data.name": "folder",
                                   "data.root": str(image_folder)})
    perceptual = pipeline.build_perceptual(cfg.evaluation.perceptual_network, pipeline.frozen_vit(cfg, "reference"))
    first = pipeline.val_originals(cfg, perceptual)
    assert pipeline.val_originals(cfg, perceptual) is first  # kept
    fresh = pipeline.val_originals(cfg, perceptual, cached=False)
    assert fresh is not first and torch.equal(fresh.images, first.images)
    assert all(torch.equal(a, b) for fa, fb in zip(fresh.features, first.features) for a, b in zip(fa, fb))
    image = sorted((image_folder / "val").rglob("*.png"))[0]
    Image.new("RGB", (20, 20), (0, 0, 0)).save(image)  # one val image changes: read anew
    changed = pipeline.val_originals(cfg, perceptual)
    assert changed is not first and not torch.equal(changed.images, first.images)
    random_teacher = pipeline.frozen_vit(cfg, "reference", trained=False)
    other = pipeline.build_perceptual(cfg.evaluation.perceptual_network, random_teacher)
    assert pipeline.val_originals(cfg, other) is not changed  # another teacher: its own features


@pytest.mark.slow  # ≈ 10 s: a 2-step smoke tokenizer, evaluated three times
def test_val_features_are_cached_and_score_as_computed_anew(tmp_path):
    cfg = config.profile("smoke", {"run_dir": str(tmp_path), "train_tokenizer.steps": 2})
    tokenizer, _ = pipeline.load_tokenizer(pipeline.train_tokenizer(cfg))
    network = pipeline.metric_network(cfg)
    cache = tmp_path / "smoke" / "cache"
    fresh = pipeline.evaluate_tokenizer(cfg, tokenizer, network, cached=False)
    assert not list(cache.glob("val-*"))
    first = pipeline.evaluate_tokenizer(cfg, tokenizer, network)
    (entry,) = cache.glob("val-*.safetensors")
    assert first == fresh == pipeline.evaluate_tokenizer(cfg, tokenizer, network)  # computed, then read: equal
    entry.write_bytes(b"not safetensors")
    with pytest.raises(checkpoint.CheckpointError, match=f"{entry.name}.*delete it"):
        pipeline.evaluate_tokenizer(cfg, tokenizer, network)


def test_class_consistency_is_the_evaluators_accuracy_from_the_is_pass(monkeypatch):
    cfg = config.profile("smoke")
    path = pretrained.resolve(reference.weights_name(cfg, "evaluator"))
    evaluator = reference.load_from(path)
    network = M.reference_network(evaluator, "evaluator", label=cfg.data.label, file=path,
                                  extractor="evaluator-consistency-test")  # not the name other tests register
    val = pipeline.val_subset(cfg, 32)
    images = val.uint8_images()
    key = M.metric_key("class_consistency", "evaluator")

    def consistency(labels, label):
        return M.generation_metrics(images, images, network, 32, metrics=("fid",), batch_size=7, labels=labels,
                                    label=label)[key]

    got = consistency(val.labels, cfg.data.label)
    assert got == pytest.approx(reference.accuracy(reference.load(cfg, "evaluator"), val, cfg.data.label))
    assert consistency(val.labels, "no such head") is None
    shifted = (val.labels + 1) % int(val.labels.max() + 1)
    assert consistency(shifted, cfg.data.label) < got
    with pytest.raises(ValueError, match="labels: 31 for 32 samples"):
        consistency(val.labels[:31], cfg.data.label)
    passes, features = [], evaluator.features
    monkeypatch.setattr(evaluator, "features", lambda x: passes.append(len(x)) or features(x))
    with_is = M.generation_metrics(images, images, network, 32, metrics=("fid", "isc"), isc_splits=2, batch_size=7,
                                   labels=val.labels, label=cfg.data.label)
    assert passes == [7, 7, 7, 7, 4] * 2  # samples, then reference: features and logits from one pass per batch
    assert with_is[key] == got


def test_patch_edge_ratio_finds_a_patch_grid():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 5, 5), size=32, mode="bicubic", align_corners=True)
    ramps = smooth + torch.linspace(0, 0.5, 4).repeat(8)  # the same ramp in every 4-px patch: steps at its borders
    assert M.patch_edge_ratio(smooth, 4) == pytest.approx(1, abs=0.1)
    assert M.patch_edge_ratio(ramps, 4) > 2 and M.patch_edge_ratio(ramps.transpose(-1, -2), 4) > 2
    with pytest.raises(ValueError, match="multiples of 4"):
        M.patch_edge_ratio(torch.rand(2, 3, 30, 30), 4)


def test_evaluation_does_not_import_the_trainer():
    """The metrics (and the pieces the evaluation reads: the configs, data, checkpoints) import without
    the trainer: evaluation code never reaches train.py (nor its DDP or optimiser machinery)."""
    code = "import json, sys, imagefolder.metrics; print(json.dumps([m for m in sys.modules if 'imagefolder' in m]))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "imagefolder.metrics" in loaded and "imagefolder.train" not in loaded, loaded
