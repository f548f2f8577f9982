"""The store options every command that reads or changes the store shares."""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

DEFAULT_STORE = Path("var/courier.sqlite3")
DEFAULT_KEY_FILE = Path("var/store.key")
STORE_URL_ENV = "COURIER_STORE_URL"
_POSTGRES = ("postgresql://", "postgres://")


def store_location(text: str) -> Path | str:
    """A ``--store`` value: a ``postgresql://`` URL stays text; ``sqlite:PATH`` or a plain path is a file."""
    if text.startswith(_POSTGRES):
        return text
    return Path(text.removeprefix("sqlite:"))


def describe_store(location: Path | str) -> str:
    """The store for messages: a URL without its password."""
    if isinstance(location, Path):
        return str(location)
    from engine.store.postgres import redacted

    return redacted(location)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=store_location,
        default=store_location(os.environ.get(STORE_URL_ENV) or str(DEFAULT_STORE)),
        help=f"SQLite file or postgresql:// URL (default: ${STORE_URL_ENV}, else {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=DEFAULT_KEY_FILE,
        help=f"encryption key file, unless $COURIER_STORE_KEY is set (default: {DEFAULT_KEY_FILE})",
    )


def add_list_action(actions: argparse._SubParsersAction, help: str, states: str) -> argparse.ArgumentParser:
    """The ``list`` action of a store command: newest first, by channel and state, no PHI."""
    listing = actions.add_parser("list", help=help)
    listing.add_argument("--channel")
    listing.add_argument("--state", help=states)
    listing.add_argument("--limit", type=int, default=50)
    add_store_arguments(listing)
    return listing


def open_database(args: argparse.Namespace, *, readonly: bool = True):
    """The synchronous store (:class:`engine.store.Database`) for one command's work."""
    from engine.errors import StoreError
    from engine.store import Database, load_cipher

    if isinstance(args.store, Path) and not args.store.exists():
        raise SystemExit(f"courier: no store at {args.store} (run `courier run` first, or pass --store)")
    try:
        return Database.open(args.store, load_cipher(key_file=args.key_file), readonly=readonly)
    except StoreError as error:
        raise SystemExit(f"courier: {error}") from None


def cli_operator() -> str:
    """Who runs this command, as the operators' audit trail names them: ``cli:`` and the login
    name, or the uid when the system has no name for it (a container's bare uid)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry (OSError from 3.13 on)
        return f"cli:{os.getuid()}"


def when(epoch: float | None) -> str:
    """Local time, to the second, for tables."""
    return "-" if epoch is None else datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def print_held(held: Iterable[tuple[str, str, float]]) -> None:
    """One line per destination held by a set-up error: the queue waits for it to be fixed."""
    for destination, reason, at in held:
        print(f"destination {destination} HELD ({reason}), last tried {when(at)}: deliveries wait")


def hl7_lines(raw: bytes) -> str:
    """A stored HL7 message for the terminal: decoded as its MSH-18 says, one segment a line."""
    from engine.message import Message

    return Message.parse(raw, default_charset="latin-1").text.replace("\r", "\n")
