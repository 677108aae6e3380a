"""budget: the long runs of the budget check share their study tokenizers, train 4× the study generator's steps
and keep a checkpoint at each scored budget; the claims it checks are the ledger's."""
from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from imagefolder import budget, config, pipeline, tables

matplotlib.use("Agg")


@pytest.fixture
def cfg(tmp_path):
    return config.profile("smoke", {"run_dir": str(tmp_path)})


def test_a_long_run_shares_the_study_tokenizer_and_keeps_a_checkpoint_per_budget(cfg):
    overrides = tables.BRANCH_SETTINGS["two detail branches"]
    study = pipeline.variant(cfg, {"seed": 1} | overrides)
    long = budget.long_run(cfg, overrides, 1)
    assert pipeline.tokenizer_name(long) == pipeline.tokenizer_name(study)
    assert pipeline.generator_name(long) != pipeline.generator_name(study)
    t = long.train_generator
    assert t.steps == 4 * cfg.study.generator_steps == budget.FACTORS[-1] * cfg.study.generator_steps
    assert t.ckpt_every == cfg.study.generator_steps and t.keep_ckpts == 4
    assert [f * cfg.study.generator_steps for f in budget.FACTORS] == [4, 8, 16]  # each a kept checkpoint
    assert t.warmup_steps == study.train_generator.warmup_steps and long.seed == 1


def test_rows_are_found_by_variant_or_by_the_papers_setting(cfg):
    dropout, = [c for c in budget.checked_claims() if c.table == "table3_rows1-2"]
    assert dropout.row_overrides(cfg, "1")["quantizer.dropout_p"] == 0.0
    assert dropout.row_overrides(cfg, "2")["quantizer.dropout_p"] == 0.1
    first = tables.TABLE1.settings[0]  # Table 1's rows go by the paper's setting
    assert tables.Claim(text="t", table="table1_final_scale", paper="", better=first, worse=first, metric="gFD",
                        by=tables.TABLE1.setting_column).row_overrides(cfg, first) == next(
        iter(tables.TABLE1.variants(cfg).values()))
    with pytest.raises(KeyError, match="no variant 'nope'"):
        dropout.row_overrides(cfg, "nope")


def test_the_checked_claims_are_the_ledgers_generation_comparisons(cfg, monkeypatch):
    found = budget.checked_claims()
    assert [(c.table, c.better, c.worse) for c in found] == list(budget.CHECKED)
    assert all(c.metric == "gFD" and c.spec.generator for c in found)
    runs = budget.runs(cfg)
    assert len({pipeline.generator_name(c) for c in runs.values()}) == 7 * cfg.study.budget_check_seeds
    monkeypatch.setattr(budget, "CHECKED", budget.CHECKED + (("table4_comparison", "ImageFolder", "nothing"),))
    with pytest.raises(KeyError, match="nothing"):
        budget.checked_claims()


def test_the_figure_has_a_panel_per_claim_with_its_interval():
    effects = pd.DataFrame({"claim": ["a"] * 3 + ["b"] * 3, "budget": [1, 2, 4] * 2,
                            "mean": [0.1, 0.0, -0.1, 0.2, 0.2, 0.3], "low": [0.0, -0.1, -0.2, 0.1, 0.1, 0.1],
                            "high": [0.2, 0.1, 0.0, 0.3, 0.3, 0.5], "n": [2] * 6})
    fig = budget.figure(effects)
    axes = fig.axes
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["a", "b"]
    bars = axes[1].collections[0].get_segments()
    assert [tuple(s[:, 1]) for s in bars] == [(0.1, 0.3), (0.1, 0.3), (0.1, 0.5)]
