"""``courier store prune|rotate-key|rekey|copy|actions``: the store's retention, its encryption
key, moving it, and what operators did from the console or the CLI (``actions``).

``prune --older-than DAYS`` deletes what was received before then and needs nothing more:
messages whose deliveries are all final and no longer polled (with their deliveries and
events), outbox items sent or given up, and operators' actions recorded before then.
Keep DAYS above every channel's duplicate window (7 days by default): a resend of a pruned
message counts as new. Freed space is reused by new messages; ``--vacuum`` also gives it back
to the file system, locking the store meanwhile.

``rotate-key`` puts a new key in the key file and appends the old one to ``<key file>.old``, so
every value stays readable. A running engine knows only the keys it started with, so restart
it before ``rekey`` re-encrypts the store with the new key (rekeying first would leave it
unable to read what was re-encrypted). When ``rekey`` finds nothing left, delete the old file.

With the key in ``$COURIER_STORE_KEY``, rotate it where it is kept: set the new key there and
the old one in ``$COURIER_STORE_OLD_KEYS``, restart the engine, then run ``rekey``.

``copy --from FILE --to postgresql://…`` moves a stopped installation's SQLite store into an
empty PostgreSQL database (see :mod:`engine.store.copy`): with ``--to-key-file`` the copy is
encrypted with another key. It compares every table by count and digest, and exits 1 if one
differs (the target's transaction has committed by then: empty it before trying again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from engine.commands.store_options import (
    DEFAULT_KEY_FILE,
    add_store_arguments,
    describe_store,
    open_database,
    store_location,
    when,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    prune = actions.add_parser("prune", help="delete what is older than DAYS and needs nothing more")
    prune.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    prune.add_argument("--vacuum", action="store_true", help="then shrink the file (locks the store)")
    add_store_arguments(prune)
    rotate = actions.add_parser("rotate-key", help="a new key in the key file; the old one kept for reading")
    add_store_arguments(rotate)
    rekey = actions.add_parser("rekey", help="re-encrypt with the current key what old keys wrote")
    add_store_arguments(rekey)
    copy = actions.add_parser("copy", help="copy a SQLite store into an empty PostgreSQL database")
    copy.add_argument("--from", dest="source", type=Path, required=True, metavar="SQLITE_FILE")
    copy.add_argument("--to", dest="target", type=store_location, required=True, metavar="URL")
    copy.add_argument(
        "--key-file",
        type=Path,
        default=DEFAULT_KEY_FILE,
        help="the source's key, unless $COURIER_STORE_KEY is set",
    )
    copy.add_argument("--to-key-file", type=Path, help="encrypt the copy with this key (made if missing)")
    listing = actions.add_parser(
        "actions", help="what operators did from the console or the CLI, newest first"
    )
    listing.add_argument("--limit", type=int, default=50)
    add_store_arguments(listing)


def run(args: argparse.Namespace) -> int:
    commands = {"prune": _prune, "rotate-key": _rotate, "rekey": _rekey, "copy": _copy, "actions": _actions}
    return commands[args.action](args)


def _actions(args: argparse.Namespace) -> int:
    from engine.message.display import printable

    db = open_database(args)
    try:
        print(f"{'when':25}  {'operator':16}  {'action':10}  {'what':24}  detail")
        for a in db.list_actions(args.limit):
            who, detail = printable(a.operator), printable(a.detail)
            print(f"{when(a.at):25}  {who:16}  {a.action:10}  {a.subject:24}  {detail}")
    finally:
        db.close()
    return 0


def _prune(args: argparse.Namespace) -> int:
    import sqlite3

    db = open_database(args, readonly=False)
    try:
        done = db.prune(before=time.time() - args.older_than * 86400)
        for table, count in done.items():
            print(f"{table:12} {count:>8} deleted")
        if args.vacuum:
            try:
                db.vacuum()
            except sqlite3.OperationalError as error:
                print(f"courier store: cannot vacuum: {error} (stop the engine first)", file=sys.stderr)
                return 1
    finally:
        db.close()
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from engine.errors import StoreError
    from engine.store.crypto import KEY_ENV, old_keys_file, rotate_key_file

    if os.environ.get(KEY_ENV):
        print(
            f"courier store: the key comes from ${KEY_ENV}; set the new key there and the old one "
            "in $COURIER_STORE_OLD_KEYS, restart the engine, then run `courier store rekey`",
            file=sys.stderr,
        )
        return 2
    if isinstance(args.store, Path) and not args.store.exists():
        print(f"courier store: no store at {args.store}", file=sys.stderr)
        return 2
    try:
        rotate_key_file(args.key_file)
    except StoreError as error:
        print(f"courier store: {error}", file=sys.stderr)
        return 2
    print(f"new key in {args.key_file}; the old one is kept in {old_keys_file(args.key_file)}")
    print("next: restart a running engine, then run `courier store rekey`")
    return 0


def _rekey(args: argparse.Namespace) -> int:
    from engine.errors import StoreError

    db = open_database(args, readonly=False)
    try:
        done = db.reencrypt()
    except StoreError as error:
        print(f"courier store: {error}", file=sys.stderr)
        return 1
    finally:
        db.close()
    for column, count in done.items():
        print(f"{column:28} {count:>8} re-encrypted")
    if not any(done.values()):
        print("every value is under the current key: the old keys are no longer needed")
    return 0


def _copy(args: argparse.Namespace) -> int:
    from engine.errors import StoreError
    from engine.store import Database, load_cipher
    from engine.store.copy import copy_store
    from engine.store.crypto import Cipher, load_or_create_key
    from engine.store.postgres import error_text
    from engine.store.worker import is_driver_error

    if not args.source.exists():
        print(f"courier store: no store at {args.source}", file=sys.stderr)
        return 2
    try:
        source_cipher = load_cipher(key_file=args.key_file)
        target_cipher = (
            source_cipher
            if args.to_key_file is None
            else Cipher(load_or_create_key(env={}, key_file=args.to_key_file))
        )
        source = Database.open(args.source, source_cipher, readonly=True)
    except StoreError as error:
        print(f"courier store: {error}", file=sys.stderr)
        return 2
    try:
        target = Database.open(args.target, target_cipher)
    except StoreError as error:
        source.close()
        print(f"courier store: {error}", file=sys.stderr)
        return 2
    try:
        copied = copy_store(source, target)
    except Exception as error:
        if not isinstance(error, StoreError) and not is_driver_error(error):
            raise
        print(f"courier store: copy failed, nothing was copied: {error_text(error)}", file=sys.stderr)
        return 2
    finally:
        source.close()
        target.close()
    for table in copied:
        print(f"{table.table:14} {table.rows:>9} rows copied, {'same' if table.same else 'DIFFERENT'} there")
    differing = [table for table in copied if not table.same]
    if differing:
        first = differing[0]
        print(
            f"courier store: the copy differs from {args.source} in table {first.table} "
            f"({first.target_rows} rows copied of {first.rows}, or their contents)",
            file=sys.stderr,
        )
        return 1
    print(f"copied {args.source} to {describe_store(args.target)}: every table has the same rows")
    return 0
