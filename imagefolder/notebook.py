"""What every notebook does first and last, one call each: `start` (config, runtime, report, metric network)
and `finish` (provenance)."""
from __future__ import annotations

from typing import Any, NamedTuple

from . import config, metrics, pipeline, results


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
