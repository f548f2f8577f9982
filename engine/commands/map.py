"""``courier map``: dry-run a mapping on a message file, without any network.

Prints the payload as JSON (or the refusal the engine would answer with, and exits 1);
``--explain`` shows for every output field the HL7 path and the raw value it came from;
a file that is not HL7, or holds no message the mapping's ``input`` takes, is one line on
stderr and a non-zero exit;
``--update-golden`` rewrites ``tests/golden/`` from ``sample_messages/`` and ``mappings/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.message import Message


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
    from engine.mapping.render import explain, payload_json

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
    messages = _read(args.message)
    if messages is None:
        return 2
    accepted = [message for message in messages if mapping.accepts(message)]
    if not accepted:
        held = sorted({f"{m.message_type}^{m.trigger_event}" for m in messages})
        print(
            f"courier map: nothing to map: {args.mapping} takes {', '.join(mapping.input)} "
            f"and {args.message} holds {', '.join(held)}",
            file=sys.stderr,
        )
        return 1
    render = explain if args.explain else payload_json
    text, refused = render(mapping, accepted, {"channel": args.channel})
    print(text, end="")
    if refused:
        print("courier map: the mapping refuses this message (see above)", file=sys.stderr)
        return 1
    return 0


def _read(file: Path) -> list[Message] | None:
    """The messages in ``file``; None, after one line on stderr, when it holds no HL7."""
    from engine.errors import MessageError
    from engine.message import Message, split_file

    try:
        messages = [Message.parse(raw) for raw in split_file(file.read_bytes())]
    except OSError as error:
        print(f"courier map: {file}: cannot read it: {error.strerror or error}", file=sys.stderr)
        return None
    except MessageError as error:
        print(f"courier map: {file}: not HL7: {error}", file=sys.stderr)
        return None
    if not messages:
        print(f"courier map: {file}: not HL7: no MSH segment", file=sys.stderr)
        return None
    return messages
