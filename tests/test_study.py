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
    assert noise.loc["gFD_evaluator", "min"] == pytest.approx(1.0) and noise.loc["gFD_evaluator", "max"] == pytest.approx(2.0)
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
    assert (tmp_path / "smoke" / "tables" / "table5a_n_start.md").read_text().count("mean ± sd over seeds [0, 1, 2]") == 1
