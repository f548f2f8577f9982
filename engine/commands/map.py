"""``courier map``: dry-run a mapping on message files, without any network.

Prints the payload as JSON (or the refusal the engine would answer with, and exits 1);
``--explain`` shows for every output field the HL7 path and the raw value it came from;
a file that is not HL7 is one line on stderr (the other files are still mapped) and exit 2;
messages none of which the mapping's ``input`` takes are explained in one line and exit 1;
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
    parser.add_argument(
        "messages",
        nargs="*",
        metavar="MESSAGE",
        help="HL7 message files or directories (one message or a batch per file), or - for stdin",
    )
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


BAD_FILE = 2
"""Exit code when a file given could not be read or held no HL7 (the others are still mapped)."""
REFUSED = 1
"""Exit code when the mapping refuses a message, or takes none of those given."""


def run(args: argparse.Namespace) -> int:
    from engine.errors import ConfigError
    from engine.mapping import load_mapping
    from engine.mapping.golden import update_golden
    from engine.mapping.render import explain, payload_json

    if args.update_golden:
        written = update_golden(args.samples, args.mappings, args.golden)
        print(f"wrote {len(written)} golden files in {args.golden}")
        return 0
    if args.mapping is None or not args.messages:
        print("courier map: give MAPPING and MESSAGE… (or --update-golden)", file=sys.stderr)
        return 2
    try:
        mapping = load_mapping(args.mapping)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    messages, bad_files = _read(args.messages)
    exit_code = BAD_FILE if bad_files else 0
    if not messages:
        return exit_code
    accepted = [message for message in messages if mapping.accepts(message)]
    if not accepted:
        held = sorted({f"{m.message_type}^{m.trigger_event}" for m in messages})
        print(
            f"courier map: nothing to map: {args.mapping} takes {', '.join(mapping.input)} "
            f"and {', '.join(args.messages)} {'holds' if len(args.messages) == 1 else 'hold'} "
            f"{', '.join(held)}",
            file=sys.stderr,
        )
        return exit_code or REFUSED
    render = explain if args.explain else payload_json
    text, refused = render(mapping, accepted, {"channel": args.channel})
    print(text, end="")
    if refused:
        print("courier map: the mapping refuses this message (see above)", file=sys.stderr)
        return exit_code or REFUSED
    return exit_code


def _read(names: list[str]) -> tuple[list[Message], int]:
    """The messages in the files, directories or stdin named, and how many files held none:
    one line on stderr for each of those, the others still read (as ``courier send`` does)."""
    from engine.errors import MessageError
    from engine.message import Message
    from engine.replay import read_messages

    found = read_messages(names)
    messages: list[Message] = []
    for outgoing in found.messages:
        try:
            messages.append(Message.parse(outgoing.payload))
        except MessageError as error:
            found.problems.append(f"{outgoing.origin}: not HL7: {error}")
    for problem in found.problems:
        print(f"courier map: {problem}", file=sys.stderr)
    return messages, len(found.problems)
