import pandas as pd
import pytest

from imagefolder import study
from imagefolder.metrics import MetricNetwork

NET = MetricNetwork(name="evaluator", extractor="evaluator-test", sha256="0")


def _runs() -> pd.DataFrame:
    return pd.DataFrame({"variant": ["a", "a", "a", "b", "b", "b"], "seed": [0, 1, 2] * 2,
                         "gFD_evaluator": [10.0, 12.0, 14.0, 20.0, 21.0, 22.0], "PSNR": [15.0] * 6, "other": [1] * 6})


def test_seed_summary_means_every_numeric_column_with_the_sd_of_metrics():
    out = study.seed_summary(_runs(), NET).set_index("variant")
    assert list(out.columns) == ["gFD_evaluator", "PSNR", "other", "PSNR sd", "gFD_evaluator sd"]
    assert out.loc["a", "gFD_evaluator"] == 12.0 and out.loc["a", "gFD_evaluator sd"] == pytest.approx(2.0)


def test_seed_noise_per_metric():
    noise = study.seed_noise(_runs(), NET).set_index("metric")
    assert noise.loc["gFD_evaluator", "seed sd (mean over variants)"] == pytest.approx(1.5)
    assert noise.loc["gFD_evaluator", "min"] == pytest.approx(1.0)
    assert noise.loc["gFD_evaluator", "max"] == pytest.approx(2.0)
    assert noise.loc["PSNR", "max"] == 0 and noise.loc["PSNR", "seeds"] == 3 and noise.loc["PSNR", "variants"] == 2


def test_seeded_table_writes_the_runs_and_their_summary(tmp_path, monkeypatch):
    from imagefolder import config, results, tables
    cfg = config.apply_overrides(config.profile("smoke"), {"study.seeds": [0, 1, 2]})
    seen = {}

    def fake_run_table(cfg, variants, network, *, generator, seeds):
        seen.update(variants=list(variants), seeds=seeds, generator=generator)
        return pd.DataFrame([{"variant": v, "seed": s, "rFD_evaluator": 10.0 + i + s, "PSNR": 15.0, "N_recon": 32}
                             for s in seeds for i, v in enumerate(variants)])

    monkeypatch.setattr(study, "run_table", fake_run_table)
    report = results.Report("03_quantizer_dropout", "smoke", tmp_path)
    runs, summary = study.seeded_table(report, cfg, tables.TABLE5A, NET)
    assert seen == {"variants": ["1", "3", "5"], "seeds": [0, 1, 2], "generator": False}
    written = pd.read_csv(tmp_path / "smoke" / "tables" / "table5a_n_start_runs.csv")
    assert len(written) == 9 and list(written["paper setting"].astype(str)[:3]) == ["1", "3", "5"]
    assert list(summary["variant"]) == ["1", "3", "5"] and summary["rFD_evaluator"].tolist() == [11.0, 12.0, 13.0]
    assert summary["rFD_evaluator sd"].tolist() == pytest.approx([1.0] * 3)
    assert "paper rFID (Inception, ImageNet)" in summary.columns
    caption = "mean ± sd over seeds [0, 1, 2]"
    assert (tmp_path / "smoke" / "tables" / "table5a_n_start.md").read_text().count(caption) == 1


def test_tokenizer_row_scores_the_generator_under_the_callers_evaluation(monkeypatch):
    """The evaluation settings are the caller's, not those stored with an older model (e.g. its class mix)."""
    from imagefolder import config, pipeline
    from imagefolder.generator import Generator
    cfg = config.profile("smoke")
    stored = config.apply_overrides(cfg, {"evaluation.sample_labels": "balanced"})
    generator = Generator(cfg.generator, cfg.quantizer, num_classes=2)
    seen = {}

    def fake_evaluate_generator(ecfg, gen, tok, network, n, seed):
        seen.update(cfg=ecfg, n=n)
        return {f"{m}_evaluator": 0.5 for m in ("FD", "IS", "precision", "recall", "class_consistency")} | {"N": n}

    monkeypatch.setattr(pipeline, "train_tokenizer", lambda c: "tokenizer")
    monkeypatch.setattr(pipeline, "load_tokenizer", lambda path, device: (None, stored))
    monkeypatch.setattr(pipeline, "evaluate_tokenizer", lambda c, tok, network: {
        "FD_evaluator": 1.0, "PSNR": 20.0, "teacher_feature_perceptual": 0.1, "usage": [0.5, 0.7], "N": 32})
    monkeypatch.setattr(pipeline, "train_generator", lambda c: "generator")
    monkeypatch.setattr(pipeline, "load_generator", lambda path, device, cfg: (generator, None, stored))
    monkeypatch.setattr(pipeline, "evaluate_generator", fake_evaluate_generator)
    row = study.tokenizer_row(cfg, NET, generator=True)
    assert seen["cfg"] is cfg and seen["cfg"].evaluation.sample_labels == "reference"
    assert seen["n"] == cfg.study.num_samples and row["gFD_evaluator"] == 0.5 and row["usage"] == 0.5


def test_metric_columns_name_the_networks_metrics():
    assert study.metric_columns(NET) == ["rFD_evaluator", "PSNR", "gFD_evaluator", "IS_evaluator",
                                         "precision_evaluator", "recall_evaluator", "class_consistency_evaluator"]
    result = {"FD_evaluator": 9.0, "IS_evaluator": 2.0, "KID_evaluator": 0.1, "precision_evaluator": 0.6,
              "recall_evaluator": 0.4, "class_consistency_evaluator": 0.5, "N": 10}
    assert list(study.generation_columns(result, NET).items()) == [
        ("IS_evaluator", 2.0), ("precision_evaluator", 0.6), ("recall_evaluator", 0.4),
        ("class_consistency_evaluator", 0.5)]


def test_paper_pairs_format_the_specs_columns_under_the_network():
    from imagefolder import tables
    assert study.paper_pairs(tables.TABLE4, NET) == {
        "rFD_evaluator": "paper rFID (Inception, ImageNet)", "gFD_evaluator": "paper gFID (Inception, ImageNet)",
        "IS_evaluator": "paper IS (Inception, ImageNet)",
        "precision_evaluator": "paper precision (Inception, ImageNet)",
        "recall_evaluator": "paper recall (Inception, ImageNet)"}
    assert study.paper_pairs(tables.TABLE5C, NET) == {"rFD_evaluator": "paper rFID (Inception, ImageNet)",
                                                      "gFD_evaluator": "paper gFID (Inception, ImageNet)"}


# the names under which losses.build_perceptual's two distances report
@pytest.mark.parametrize("key", ["teacher_feature_perceptual", "lpips_vgg"])
def test_perceptual_key_finds_the_distance_evaluate_tokenizer_reports(key):
    assert study.perceptual_key({"FD_evaluator": 1.0, "PSNR": 20.0, key: 0.1, "usage": [0.5], "N": 32}) == key


def test_perceptual_key_refuses_a_result_without_a_known_distance():
    with pytest.raises(KeyError, match="one perceptual distance"):
        study.perceptual_key({"PSNR": 20.0, "LPIPS": 0.1})
