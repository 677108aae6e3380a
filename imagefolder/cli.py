"""`python -m imagefolder <command> --profile P [key=value ...]`: the compendium's command line.

Trailing `key=value` words are dotted config overrides (values parsed as YAML), e.g.
`python -m imagefolder train-tokenizer --profile cpu quantizer.dropout_p=0.5 seed=1`.
Training commands run under `torchrun` as they are: `torchrun --nproc_per_node=N -m imagefolder train-…`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import config as config_lib


def _cfg(args: argparse.Namespace) -> config_lib.Config:
    cfg = config_lib.profile(args.profile, config_lib.parse_overrides(args.overrides))
    from .pipeline import configure_runtime
    configure_runtime(cfg)
    return cfg


def cmd_config(args: argparse.Namespace) -> None:
    """Print the resolved config as YAML."""
    import yaml
    print(yaml.safe_dump(config_lib.to_dict(_cfg(args)), sort_keys=False))


def cmd_data(args: argparse.Namespace) -> None:
    """Build the emoji data set (idempotent) and train the profile's teacher and evaluator."""
    from . import emoji, reference
    from .data import resolve_root
    cfg = _cfg(args)
    if cfg.data.name == "emoji":
        emoji.build(resolve_root(cfg.data))
    if cfg.tokenizer.teacher_network != "reference":
        print(f"profile {cfg.profile}: pretrained networks come from the resolver; no reference networks to train")
        return
    for role in ("teacher", "evaluator"):
        reference.train_reference(cfg, role, force=args.force)


def _print_on_rank0(text: object) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(text)


def cmd_train_tokenizer(args: argparse.Namespace) -> None:
    """Train the tokenizer of the config (resumes from its last checkpoint)."""
    from . import pipeline
    _print_on_rank0(pipeline.train_tokenizer(_cfg(args)))


def cmd_train_generator(args: argparse.Namespace) -> None:
    """Train the generator of the config on its tokenizer's tokens (trains the tokenizer first if needed)."""
    from . import pipeline
    _print_on_rank0(pipeline.train_generator(_cfg(args)))


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Reconstruction metrics of the config's trained tokenizer, and generation metrics of its generator if
    trained, with the paper's (Table 4, ImageFolder) beside them where the metric network is Inception; trains
    nothing."""
    from . import pipeline
    from .results import paper_value
    cfg = _cfg(args)
    tok_path = pipeline.model_file(cfg, "tokenizer")
    if not tok_path.exists():
        sys.exit(f"evaluate: no trained tokenizer at {tok_path}: run train-tokenizer (or import-official) first")
    network = pipeline.metric_network(cfg)
    tokenizer, _ = pipeline.load_tokenizer(tok_path, pipeline.device_of(cfg))
    report = {"tokenizer": pipeline.evaluate_tokenizer(cfg, tokenizer, network)}
    gen_path = pipeline.model_file(cfg, "generator")
    if gen_path.exists():
        generator, tokenizer, _ = pipeline.load_generator(gen_path, pipeline.device_of(cfg), cfg)
        report["generator"] = pipeline.evaluate_generator(cfg, generator, tokenizer, network,
                                                          n=cfg.evaluation.num_samples, seed=cfg.seed)
    if cfg.evaluation.fid_network == "inception":
        report["paper (Table 4, ImageFolder)"] = {c: paper_value("table4", "ImageFolder", c)
                                                  for c in ("rFID", "gFID", "IS", "Pre", "Rec")}
    print(json.dumps(report, indent=1, default=str))


def cmd_sample(args: argparse.Namespace) -> None:
    """Sample class-conditional images from the config's trained generator into a PNG grid."""
    import torch
    from torchvision.utils import save_image

    from . import pipeline
    cfg = _cfg(args)
    generator, tokenizer, _ = pipeline.load_generator(pipeline.train_generator(cfg), pipeline.device_of(cfg), cfg)
    labels = torch.tensor(args.classes or list(range(generator.num_classes))).repeat_interleave(args.per_class)
    images = pipeline.sample_images(generator, tokenizer, labels, cfg, seed=cfg.seed)
    save_image(images.float() / 255, args.out, nrow=args.per_class)
    print(f"{len(images)} samples → {args.out}")


def cmd_bench(args: argparse.Namespace) -> None:
    """The adopted fast path vs float32 eager (interleaved), latency / FLOPs of the four generator set-ups, and
    tokenizer throughput."""
    from . import bench
    bench.main(_cfg(args), quick=args.quick)


def cmd_claims(args: argparse.Namespace) -> None:
    """Write results/<profile>/claims.md from the profile's tables (paper claim, numbers, verdict)."""
    from .claims import write_ledger
    print(write_ledger(args.profile, args.results))


def cmd_html(args: argparse.Namespace) -> None:
    """Render results/<profile>/executed/*.ipynb as reports/*.html and write index.html (runs nothing)."""
    from .reports import render
    for path in render(args.profile, args.results):
        print(path)


def cmd_import_official(args: argparse.Namespace) -> None:
    """Write the released official checkpoints (lxa9867/ImageFolder) as the paper profile's runs, no training."""
    from . import official
    try:
        paths = official.import_official(args.tokenizer, args.generator, args.weights, _cfg(args), args.force)
    except official.OfficialCheckpointError as err:
        sys.exit(f"import-official: {err}")
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def cmd_plan(args: argparse.Namespace) -> None:
    """List every model the profile's `make reproduce` trains, which are trained already, and an estimate of
    their training time (measured step times, or FLOPs over --flops-per-second); trains nothing."""
    from . import plan
    print(plan.report(_cfg(args), args.flops_per_second))


def cmd_train_all(args: argparse.Namespace) -> None:
    """Train every model the profile's notebooks need (the plan's runs) that is not trained yet; with
    --shard I/N only the I-th of N shards, so that N processes share the work (`make train`)."""
    from . import plan
    index, count = (int(v) for v in args.shard.split("/"))
    plan.train_all(_cfg(args), index, count)


COMMANDS = {"config": cmd_config, "data": cmd_data, "train-tokenizer": cmd_train_tokenizer,
            "train-generator": cmd_train_generator, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "bench": cmd_bench, "claims": cmd_claims, "html": cmd_html, "import-official": cmd_import_official,
            "plan": cmd_plan, "train-all": cmd_train_all}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="imagefolder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.__doc__, description=fn.__doc__)
        p.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES),
                       help="the named config to use (default: %(default)s)")
        if name == "data":
            p.add_argument("--force", action="store_true", help="retrain the reference networks")
        if name == "bench":
            p.add_argument("--quick", action="store_true", help="one timed round, no warm-up (tests)")
        if name == "sample":
            p.add_argument("--out", default="samples.png")
            p.add_argument("--per-class", type=int, default=8)
            p.add_argument("--classes", type=int, nargs="*", help="class indices (default: all)")
        if name == "import-official":
            p.add_argument("--tokenizer", required=True, help="the official MSVR10P2-4096/best_ckpt.pt")
            p.add_argument("--generator", help="the official VAR-d17-MSVR10P2-4096/ar-ckpt-last.pth")
            p.add_argument("--weights", default="ema",
                           help="the tokenizer file's state dict to import: ema or model (default: %(default)s)")
            p.add_argument("--force", action="store_true", help="replace runs that exist already")
            p.set_defaults(profile="paper")
        if name == "plan":
            p.add_argument("--flops-per-second", type=float, metavar="X",
                           help="estimate each step as its FLOPs / X (a stated throughput) instead of timing it")
        if name == "train-all":
            p.add_argument("--shard", default="1/1", metavar="I/N",
                           help="train only the I-th of N shards of the runs (default: %(default)s, all)")
        if name in ("claims", "html"):
            p.add_argument("--results", default="results", help="the results root (tables under <root>/<profile>/)")
            p.set_defaults(overrides=[])
        else:
            p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. quantizer.dropout_p=0.5")
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except config_lib.ConfigError as err:
        sys.exit(f"config error: {err}")


if __name__ == "__main__":
    main()
