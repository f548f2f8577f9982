"""The ``courier`` command: one subcommand per module in :mod:`engine.commands`, plus those
each destination plugin adds (entry points ``courier.commands``, e.g. ``courier <type> …``).

Each command module has ``add_arguments(parser)`` and ``run(args) -> int``, and imports what
its work needs inside ``run``, so building the parser stays fast. An error Courier raises on
purpose ends the command with its one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine import logs
from engine.commands.exits import stdout_closed
from engine.errors import ConfigError, CourierError

COMMANDS = {
    "run": "start the listeners and the delivery queue from the channel files",
    "send": "send HL7 files over MLLP and check every ACK",
    "listen": "a small MLLP receiver that prints what it gets and ACKs it",
    "messages": "browse the stored messages (bodies only with --body)",
    "check": "check channel and mapping files",
    "map": "apply a mapping to a message and print the payload",
    "sandbox": "run the four vendor sandboxes and the http receiver on loopback",
    "deliveries": "list, show, requeue or cancel deliveries",
    "status": "the full timeline of one message across destinations",
    "stats": "per channel: messages received, deliveries by state, the outbox (no PHI)",
    "outbox": "list, show or skip the HL7 messages waiting to go back to the hospital",
    "store": "prune old messages; rotate the key that encrypts the store, and re-encrypt with it",
}


def commands() -> dict[str, tuple[str | None, str]]:
    """Every subcommand: name → (summary, module); a plugin's summary is its module's
    ``SUMMARY`` (None here: read once the module is imported)."""
    from engine.destinations.registry import commands as plugin_commands

    found = {name: (summary, f"engine.commands.{name}") for name, summary in COMMANDS.items()}
    for name, module in plugin_commands().items():
        found.setdefault(name, (None, module))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courier", description="Courier: HL7 v2 over MLLP in, secure clinical messaging out."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, module_name) in commands().items():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a plugin's command: one line naming it
            raise ConfigError(
                f"command {name!r} ({module_name}) cannot be loaded: {type(exc).__name__}"
            ) from None
        text = summary or module.SUMMARY
        sub = subparsers.add_parser(name, help=text, description=text)
        sub.set_defaults(module=module_name)
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # a plugin's command module can fail to import
    except CourierError as error:
        print(f"courier: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logs.configure(args.verbose, getattr(args, "log_format", "text"))  # --log-format: long-running commands
    try:
        exit_code = importlib.import_module(args.module).run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return exit_code
    except CourierError as error:  # raised on purpose, with a message meant for the operator
        print(f"courier {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return stdout_closed()
