"""plan: the runs `reproduce` trains, listed once by run name, whether each is trained, and the step cost
estimate (measured once per step shape, or FLOPs over a stated throughput). The notebooks' agreement with
the list is tests/test_notebooks.py's."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from imagefolder import cli, config, cost, pipeline, plan, tables


@pytest.fixture
def cfg(tmp_path):
    return config.profile("smoke", {"run_dir": str(tmp_path)})


def _by_name(cfg) -> dict[tuple[str, str], plan.Run]:
    return {(r.kind, r.name): r for r in plan.runs(cfg)}


def test_each_run_is_listed_once_with_everything_that_needs_it(cfg):
    listed = plan.runs(cfg)
    assert len({(r.kind, r.name) for r in listed}) == len(listed)
    runs = _by_name(cfg)
    # Table 5b's p = 0.1 at seed 0 and Fig. 7's p = 0.1 are the same study-budget tokenizer (smoke: p = 0.1)
    shared = runs["tokenizer", pipeline.tokenizer_name(pipeline.variant(cfg, {"seed": 0, "quantizer.dropout_p": 0.1}))]
    assert {"table5b_dropout_ratio: 0.1, seed 0", "Fig. 7, p = 0.1 (notebook 03)"} <= set(shared.used_by)
    main = runs["generator", pipeline.generator_name(cfg)]
    assert main.used_by == ("main (notebooks 02, 05, 06)",) and main.train.steps == cfg.train_generator.steps
    assert ("tokenizer", pipeline.tokenizer_name(cfg)) in runs


def test_generators_only_where_the_table_trains_them(cfg):
    runs = _by_name(cfg)
    assert not tables.TABLE8.generator and tables.TABLE9.generator
    larger = [v for v in tables.TABLE8.variants(cfg).values() if v["quantizer.codebook_size"] > 64]  # TABLE8 alone
    for seed in cfg.study.seeds:
        for overrides, generator in [(v, False) for v in larger] + [
                (v, True) for v in tables.TABLE9.variants(cfg).values()]:
            v = pipeline.variant(cfg, {"seed": seed} | overrides)
            assert ("tokenizer", pipeline.tokenizer_name(v)) in runs
            assert (("generator", pipeline.generator_name(v)) in runs) == generator
    tokenizers = {r.name for r in runs.values() if r.kind == "tokenizer"}
    assert all(pipeline.tokenizer_name(r.cfg) in tokenizers for r in runs.values() if r.kind == "generator")


def test_a_run_is_trained_once_its_final_weights_file_exists(cfg):
    first, *rest = plan.runs(cfg)
    path = pipeline.model_file(first.cfg, first.kind)
    assert not first.trained
    path.parent.mkdir(parents=True)
    (path.parent / "checkpoints").mkdir()  # a run under way is not trained
    assert not first.trained
    path.write_bytes(b"")
    assert first.trained and not any(r.trained for r in rest)


def test_step_shape_groups_runs_that_differ_only_in_what_a_step_does_not_depend_on(cfg):
    runs = _by_name(cfg)

    def run(overrides: dict) -> plan.Run:
        v = pipeline.variant(cfg, overrides)
        return plan.Run("tokenizer", pipeline.tokenizer_name(v), v, ())

    base = plan.step_shape(run({}))
    assert plan.step_shape(run({"seed": 1, "quantizer.dropout_p": 0.5})) == base
    assert plan.step_shape(run({"quantizer.codebook_size": 128})) != base
    assert plan.step_shape(run({"train_tokenizer.batch_size": 4})) != base
    assert plan.step_shape(run({"tokenizer.encoder_tuning": "linear"})) != base  # fewer trained parameters
    assert len({plan.step_shape(r) for r in runs.values()}) < len(runs)


def test_step_flops_are_counted_at_a_small_batch_and_scaled_to_the_runs(cfg):
    """Against a count at the run's own batch (smoke: 8): equal but for the semantic loss's B × B logits."""
    for kind in ("tokenizer", "generator"):
        r = next(r for r in plan.runs(cfg) if r.kind == kind)
        step = plan._step(r, torch.device("cpu"), dataclasses.replace(r.train, compile=False))
        step()
        direct = cost.count_flops(step)
        assert r.train.batch_size > plan.FLOPS_BATCH
        assert plan.step_flops(r) == pytest.approx(direct, rel=1e-3)


def test_plan_times_each_shape_once_and_multiplies_by_the_steps(cfg, monkeypatch):
    timed = []

    def fake(run, device):
        timed.append(plan.step_shape(run))
        return 0.5

    monkeypatch.setattr(plan, "measured_step_seconds", fake)
    df, how = plan.plan(cfg)
    assert sorted(timed) == sorted(set(df["step shape"])) and "measured" in how
    assert list(df["hours"]) == [s * 0.5 / 3600 for s in df["steps"]]
    assert not df["trained"].any()


def test_plan_from_flops_over_a_stated_throughput(cfg, monkeypatch):
    monkeypatch.setattr(plan, "step_flops", lambda run: 2e9 if run.kind == "tokenizer" else 1e9)
    df, how = plan.plan(cfg, flops_per_second=1e9)
    assert "1e+09 FLOP/s stated" in how
    expected = [steps * (2.0 if kind == "tokenizer" else 1.0) / 3600 for kind, steps in zip(df["kind"], df["steps"])]
    assert list(df["hours"]) == expected


def test_cli_plan_prints_the_runs_and_the_totals(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan, "step_flops", lambda run: 1e9)
    cli.main(["plan", "--profile", "smoke", "--flops-per-second", "1e9", f"run_dir={tmp_path}"])
    out = capsys.readouterr().out
    n = len(plan.runs(config.profile("smoke", {"run_dir": str(tmp_path)})))
    assert f"{n} models" in out and "evaluation (reconstruction and sampling metrics) is not counted" in out
    assert "trained already: 0 of" in out and f"to train: {n} models" in out


def test_a_measured_step_is_the_median_of_the_timed_steps_after_the_warm_up(cfg, monkeypatch):
    durations = iter([0.3, 0.3, 0.01, 0.09, 0.05])  # two warm-up steps (compiling), then three timed ones

    def step():
        time.sleep(next(durations))

    monkeypatch.setattr(plan, "_step", lambda run, device, train: step)
    assert plan.MEASURED_STEPS == (2, 3)
    run = plan.runs(cfg)[0]
    assert plan.measured_step_seconds(run, torch.device("cpu")) == pytest.approx(0.05, abs=0.02)
    with pytest.raises(StopIteration):
        step()  # exactly five steps ran


def test_shards_split_the_runs_whole_tokenizer_groups_at_a_time(cfg):
    """Every run lands in exactly one of the shards, a generator in its tokenizer's, the split is the same in
    every process, and the shards' steps differ by at most the largest group's."""
    listed = plan.runs(cfg)
    shards = [plan.shard(listed, i, 3) for i in (1, 2, 3)]
    names = [(r.kind, r.name) for s in shards for r in s]
    assert sorted(names) == sorted((r.kind, r.name) for r in listed)
    for part in shards:
        tokenizers = {r.name for r in part if r.kind == "tokenizer"}
        assert all(pipeline.tokenizer_name(r.cfg) in tokenizers for r in part if r.kind == "generator")
    assert [r.name for r in plan.shard(list(listed), 2, 3)] == [r.name for r in shards[1]]
    steps = [sum(r.train.steps for r in part) for part in shards]
    group = max(sum(r.train.steps for r in listed if pipeline.tokenizer_name(r.cfg) == t)
                for t in {pipeline.tokenizer_name(r.cfg) for r in listed})
    assert max(steps) - min(steps) <= group
    assert plan.shard(listed, 1, 1) == listed or sorted(r.name for r in plan.shard(listed, 1, 1)) == sorted(
        r.name for r in listed)
    with pytest.raises(ValueError, match="shard 4/3"):
        plan.shard(listed, 4, 3)


def test_the_budget_check_runs_are_planned_four_times_the_study_generator(cfg):
    runs = _by_name(cfg)
    long = [r for r in runs.values() if r.kind == "generator" and any(u.startswith("budget check") for u in r.used_by)]
    assert len(long) == 7 * cfg.study.budget_check_seeds  # seven distinct generators: budget.CHECKED's rows
    assert all(r.train.steps == 4 * cfg.study.generator_steps and r.used_by[0].startswith("budget") for r in long)
    seeds = {r.cfg.seed for r in long}
    assert seeds == set(cfg.study.seeds[:cfg.study.budget_check_seeds])
