import pandas as pd
import pytest

from imagefolder import study
from imagefolder.metrics import MetricNetwork

NET = MetricNetwork(name="evaluator", extractor="evaluator-test", sha256="0")


def _runs() -> pd.DataFrame:
    return pd.DataFrame({"variant": ["a", "a", "a", "b", "b", "b"], "seed": [0, 1, 2] * 2,
                         "gFD_evaluator": [10.0, 12.0, 14.0, 20.0, 21.0, 22.0], "PSNR": [15.0] * 6, "other": [1] * 6})


def test_seed_summary_keeps_the_metric_columns_with_their_sd():
    out = study.seed_summary(_runs(), NET).set_index("variant")
    assert list(out.columns) == ["PSNR", "gFD_evaluator", "PSNR sd", "gFD_evaluator sd"]
    assert out.loc["a", "gFD_evaluator"] == 12.0 and out.loc["a", "gFD_evaluator sd"] == pytest.approx(2.0)


def test_seed_noise_per_metric():
    noise = study.seed_noise(_runs(), NET).set_index("metric")
    assert noise.loc["gFD_evaluator", "seed sd (mean over variants)"] == pytest.approx(1.5)
    assert noise.loc["gFD_evaluator", "min"] == pytest.approx(1.0) and noise.loc["gFD_evaluator", "max"] == pytest.approx(2.0)
    assert noise.loc["PSNR", "max"] == 0 and noise.loc["PSNR", "seeds"] == 3 and noise.loc["PSNR", "variants"] == 2
