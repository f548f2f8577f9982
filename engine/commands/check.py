"""``courier check``: every channel and mapping file, before anything runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path("channels")],
        help="channel files or directories (default: channels/); mappings are "
        "checked through the channels that use them, or given directly",
    )
    parser.add_argument(
        "--skip-env",
        action="store_true",
        help="do not require ${VAR} environment variables or *_file secrets",
    )


def run(args: argparse.Namespace) -> int:
    from engine.channel.check import check, warnings

    problems = check(list(args.paths), skip_env=args.skip_env)
    for warning in warnings(list(args.paths)):
        print(warning)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)")
        return 1
    print("all channel and mapping files are fine")
    return 0
