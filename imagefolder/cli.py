"""`python -m imagefolder <command> --profile P [key=value ...]`: the compendium's command line."""
from __future__ import annotations

import argparse
import sys

from . import config as config_lib


def _cfg(args: argparse.Namespace) -> config_lib.Config:
    return config_lib.profile(args.profile, config_lib.parse_overrides(args.overrides))


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
    if cfg.profile == "paper":
        print("paper profile: uses DINOv2 and Inception through the resolver; no reference networks to train")
        return
    for role in ("teacher", "evaluator"):
        reference.train_reference(cfg, role, force=args.force)


COMMANDS = {"config": cmd_config, "data": cmd_data}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="imagefolder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.__doc__)
        p.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES))
        p.add_argument("--force", action="store_true", help="redo work whose output already exists")
        p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. quantizer.dropout_p=0.5")
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except config_lib.ConfigError as err:
        sys.exit(f"config error: {err}")


if __name__ == "__main__":
    main()
