"""``courier send``: replay HL7 files over MLLP and check every ACK.

Unlike python-hl7's ``mllp_send`` (one ``recv(4096)``, issue #44) this reads the whole ACK
frame, checks that MSA-2 is the control id of the message it answers, and exits non-zero
when any message was not accepted.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="FILE|DIR|-", help="HL7 files, directories, or - for stdin"
    )
    parser.add_argument("--to", required=True, metavar="ENDPOINT", help="e.g. tcp:host=127.0.0.1:port=2575")
    parser.add_argument("--connections", type=int, default=1, help="parallel connections (default 1)")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second overall (0 = no limit)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def run(args: argparse.Namespace) -> int:
    from twisted.internet import task

    from engine.replay import Replay, read_messages

    messages = read_messages(args.inputs, stdin=sys.stdin.buffer)
    if not messages:
        print("courier send: no HL7 messages found", file=sys.stderr)
        return 2
    progress = sys.stdout.isatty() and not args.quiet

    def main(reactor):
        replay = Replay(reactor, args.to, connections=args.connections, rate=args.rate, timeout=args.timeout)
        d = replay.run(messages, on_result=_progress_printer(len(messages)) if progress else None)
        d.addCallback(_report, args.quiet)
        d.addCallback(_exit)
        return d

    task.react(main)
    return 0


def _exit(code: int) -> None:
    """``task.react`` ends the process; a non-zero status travels as a SystemExit failure."""
    if code:
        raise SystemExit(code)


def _progress_printer(total: int):
    done = {"n": 0, "bad": 0}

    def show(result) -> None:
        done["n"] += 1
        done["bad"] += not result.accepted
        print(f"\r{done['n']}/{total} sent, {done['bad']} not accepted", end="", flush=True)
        if done["n"] == total:
            print()

    return show


def _report(summary, quiet: bool) -> int:
    if not quiet:
        for result in summary.failures:
            print(f"NOT ACCEPTED {result.describe()}")
    print(summary.describe())
    return 0 if not summary.failures else 1
