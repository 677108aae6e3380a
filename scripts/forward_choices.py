"""Do the official release's two forward functions hurt at a small profile's scale? A measurement, not part of
`make reproduce`: README (Profiles) quotes its output.

Each choice is switched off in a study variant (the study budget, the profile's default otherwise) and
compared, paired by seed, with the study variant that has it on (the one `make reproduce` trains anyway):
- `tokenizer.decoder_code_cls` (the decoder's second cls token): the study tokenizer's rFD and PSNR;
- `generator.attention` (l2_norm against scaled_dot): the study generator's gFD on the same study tokenizer.
Usage: python scripts/forward_choices.py [PROFILE] [SEED ...]   (default: cpu, the profile's study seeds)
"""
import sys

import pandas as pd

from imagefolder import config, metrics, pipeline, stats

CHOICES = {"tokenizer.decoder_code_cls": (True, False), "generator.attention": ("l2_norm", "scaled_dot")}


def scores(cfg: config.Config, network: metrics.MetricNetwork, generator: bool) -> dict[str, float]:
    """rFD and PSNR of the config's tokenizer, or the gFD of its generator (trained on demand)."""
    fd = metrics.metric_key("FD", network.name)
    device = pipeline.device_of(cfg)
    if generator:
        gen, tok, _ = pipeline.load_generator(pipeline.train_generator(cfg), device, cfg)
        return {f"g{fd}": pipeline.evaluate_generator(cfg, gen, tok, network, n=cfg.study.num_samples,
                                                      seed=cfg.seed)[fd]}
    tokenizer, _ = pipeline.load_tokenizer(pipeline.train_tokenizer(cfg), device)
    rec = pipeline.evaluate_tokenizer(cfg, tokenizer, network)
    return {f"r{fd}": rec[fd], "PSNR": rec["PSNR"]}


def main(profile: str = "cpu", seeds: list[int] | None = None) -> pd.DataFrame:
    cfg = config.profile(profile)
    pipeline.configure_runtime(cfg)
    network = pipeline.metric_network(cfg)
    rows = []
    for field, (on, off) in CHOICES.items():
        generator = field.startswith("generator.")
        for seed in seeds or cfg.study.seeds:
            for value in (on, off):
                run = pipeline.variant(cfg, {"seed": seed, field: value})
                rows.append({"field": field, "value": str(value), "seed": seed} | scores(run, network, generator))
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    for field, (on, off) in CHOICES.items():
        part = df[df.field == field]
        for metric in [c for c in part.columns if c not in ("field", "value", "seed") and part[c].notna().all()]:
            a, b = (part[part.value == str(v)].sort_values("seed")[metric].to_numpy() for v in (on, off))
            gain = stats.paired_gain((a - b).tolist())
            print(f"{field}: {metric} {on} − {off} per seed: mean {gain.mean:.4g}, 95 % CI [{gain.low:.4g}, "
                  f"{gain.high:.4g}] over {gain.n} seeds")
    return df


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu", [int(s) for s in sys.argv[2:]] or None)
