"""What every notebook does first and last, one call each: `start` (config, runtime, report, metric network)
and `finish` (provenance); what a study table's columns mean (`column_notes`) and the caveat its generation
verdicts carry (`generation_caveat`)."""
from __future__ import annotations

import json
from typing import Any, NamedTuple

import pandas as pd
import torch

from . import config, metrics, pipeline, pretrained, reference, results, sample_classes
from .data import class_names, resolve_root


class Notebook(NamedTuple):
    """A notebook's run: its config, its report, the profile's metric network and that network's FD / IS keys."""

    cfg: config.Config
    report: results.Report
    network: metrics.MetricNetwork
    FD: str
    IS: str


def start(notebook: str, profile: str, seed: int, device: str, name: str, out_dir: str,
          overrides: dict[str, Any]) -> Notebook:
    """The profile with the notebook's parameters (`seed`, `device`, `overrides`), its runtime applied
    (`pipeline.configure_runtime`), a `results.Report` of the run named `name` under `out_dir`, and the
    profile's metric network; prints one line saying what the run uses."""
    cfg = config.profile(profile, {"seed": seed, "device": device} | overrides)
    pipeline.configure_runtime(cfg)
    report = results.Report(notebook, profile, out_dir, name=name, overrides=overrides)
    network = pipeline.metric_network(cfg)
    print(f"profile {profile}: {cfg.data.resolution} px, scales {cfg.quantizer.scales} "
          f"({cfg.tokens_per_branch} tokens per branch), metrics by {network.describe()}")
    return Notebook(cfg, report, network, metrics.metric_key("FD", network.name),
                    metrics.metric_key("IS", network.name))


def finish(run: Notebook, **extra: Any) -> None:
    """Write the run's provenance (`results.Report.finish`): the study's seeds, the data's fingerprint, the
    metric network and `extra` (e.g. the trained model a notebook used)."""
    network = run.network
    run.report.finish(seeds=run.cfg.study.seeds, data_fingerprint=pipeline.data_fingerprint(run.cfg),
                      metric_networks={"FD/IS/precision/recall": {"name": network.name, "sha256": network.sha256,
                                                                  "file": network.file}}, **extra)


def majority_share(cfg: config.Config) -> float:
    """The share of the most frequent class among the labels the study's samples are drawn for
    (`sample_classes.sample_labels`)."""
    classes = class_names(resolve_root(sample_classes.reference_data(cfg)), "train")
    labels = sample_classes.sample_labels(cfg, cfg.study.num_samples, len(classes))
    return int(torch.bincount(labels).max()) / len(labels)


def evaluator_accuracy(cfg: config.Config) -> float | None:
    """The profile's evaluator's val accuracy on the data label (its weights' JSON), None for Inception."""
    if cfg.evaluation.fid_network != "evaluator":
        return None
    path = pretrained.resolve(reference.weights_name(cfg, "evaluator"))
    return json.loads(path.with_suffix(".json").read_text())["val_accuracy"].get(cfg.data.label)


def generation_caveat(run: Notebook, runs: pd.DataFrame) -> str:
    """A closing bullet for a notebook's generation verdicts at the study budget: the study generators' class
    consistency in `runs` beside that of a generator that ignores its label and always draws the majority
    class (its share of the labels × the evaluator's accuracy)."""
    cc = runs[metrics.metric_key("class_consistency", run.network.name)].dropna()
    accuracy, share = evaluator_accuracy(run.cfg), majority_share(run.cfg)
    if cc.empty or accuracy is None:
        return ""
    floor = share * accuracy
    where = "below" if cc.max() < floor else "not above" if cc.min() < floor else "above"
    return (f"- Caveat on the generation verdicts: the study generators' class consistency ({cc.min():.2f} to "
            f"{cc.max():.2f}) is {where} the ≈ {floor:.2f} of a generator that ignored its label and always drew "
            f"the majority class ({share:.0%} of the sampled labels × the evaluator's {accuracy:.0%} val accuracy): "
            f"they compare generators early in training ({results.budget_note(run.cfg, study=True)}).")


def column_notes(cfg: config.Config) -> str:
    """A Markdown line saying what the study tables' less obvious columns mean under `cfg`."""
    perceptual = {"teacher": f"distance between the frozen teacher's ({cfg.tokenizer.teacher_network}) features of "
                             "reconstruction and original, the small profiles' stand-in for LPIPS",
                  "lpips_vgg": "LPIPS with the VGG backbone"}[cfg.evaluation.perceptual_network]
    return ("*Columns:* `perceptual` is the " + perceptual + "; `usage` is the share of codebook entries used on "
            "the val split, the minimum over branches; `minutes` (in the CSV) is the wall time of building a row: "
            "loading or training its models, then evaluating them, so a model found already trained shows minutes "
            "of evaluation only; `N_recon` / `N_gen` are the val images reconstructed and the samples generated; "
            "`± sd` columns are the seed sd.")
