"""``courier send``: replay HL7 files over MLLP and check every ACK.

Unlike python-hl7's ``mllp_send`` (one ``recv(4096)``, issue #44) this reads the whole ACK
frame, checks that MSA-2 is the control id of the message it answers, and exits non-zero
when any message was not accepted or any file could not be read as HL7 (one line each on
stderr; the other files are still sent).
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

    inputs = read_messages(args.inputs, stdin=sys.stdin.buffer)
    for problem in inputs.problems:
        print(f"courier send: {problem}", file=sys.stderr)
    messages = inputs.messages
    if not messages:
        print("courier send: no HL7 messages found", file=sys.stderr)
        return 2
    progress = sys.stdout.isatty() and not args.quiet

    def main(reactor):
        replay = Replay(reactor, args.to, connections=args.connections, rate=args.rate, timeout=args.timeout)
        d = replay.run(messages, on_result=_progress_printer(len(messages)) if progress else None)
        d.addCallback(_report, args.quiet, len(inputs.problems))
        d.addErrback(_closed_stdout)
        d.addCallback(_exit)
        return d

    task.react(main)
    return 0


def _closed_stdout(failure):
    """Nobody reads the report any more (``| head``): end quietly, not with a traceback."""
    from engine.commands.exits import stdout_closed

    failure.trap(BrokenPipeError)
    return stdout_closed()


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


def _report(summary, quiet: bool, unread_files: int) -> int:
    if not quiet:
        for result in summary.failures:
            print(f"NOT ACCEPTED {result.describe()}")
    skipped = f"; {unread_files} file(s) not sent (see above)" if unread_files else ""
    print(summary.describe() + skipped, flush=True)  # a closed pipe shows here, not at exit
    return 0 if not summary.failures and not unread_files else 1
