"""``courier map``: dry-run a mapping on a message file, without any network.

Prints the payload as JSON (or the refusal the engine would answer with); ``--explain``
shows for every output field the HL7 path and the raw value it came from;
``--update-golden`` rewrites ``tests/golden/`` from ``sample_messages/`` and ``mappings/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mapping", nargs="?", type=Path, help="mapping file (mappings/*.toml)")
    parser.add_argument("message", nargs="?", type=Path, help="HL7 message file (one message or a batch)")
    parser.add_argument("--explain", action="store_true", help="show where every value came from")
    parser.add_argument("--channel", default="dry-run", help="channel name the mapping sees as context")
    parser.add_argument(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ for every sample × matching mapping",
    )
    parser.add_argument("--samples", type=Path, default=Path("sample_messages"))
    parser.add_argument("--mappings", type=Path, default=Path("mappings"))
    parser.add_argument("--golden", type=Path, default=Path("tests/golden"))


def run(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.mapping import load_mapping
    from engine.mapping.golden import update_golden
    from engine.mapping.render import explain_file, map_file_json

    if args.update_golden:
        written = update_golden(args.samples, args.mappings, args.golden)
        print(f"wrote {len(written)} golden files in {args.golden}")
        return 0
    if args.mapping is None or args.message is None:
        print("courier map: give MAPPING and MESSAGE (or --update-golden)", file=sys.stderr)
        return 2
    try:
        mapping = load_mapping(args.mapping)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    render = explain_file if args.explain else map_file_json
    print(render(mapping, args.message, context={"channel": args.channel}))
    return 0
