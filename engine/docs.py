"""README sections generated from the declared specs, so the documentation cannot drift.

``python -m engine.docs`` rewrites every generated section of README.md in place; the test
suite fails when a section is out of date.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path


def _channel_reference() -> str:
    from engine.channel.docs import channel_reference_markdown

    return channel_reference_markdown()


def _mapping_reference() -> str:
    from engine.mapping.grammar import render_markdown

    return render_markdown()


def _status_samples() -> str:
    """One status message per event, built by the real code from a shipped sample message."""
    from datetime import UTC, datetime

    from engine.delivery.transitions import Transition
    from engine.destinations.base import InvalidParameter
    from engine.message import Message
    from engine.status.messages import build_status_message

    sample = Path(__file__).resolve().parent.parent / "sample_messages" / "mdm_t02_discharge_summary.hl7"
    original = Message.parse(sample.read_bytes())
    at = datetime(2026, 3, 15, 14, 25, 1, tzinfo=UTC)
    cases = [
        ("accepted", "SENT", "", ()),
        ("delivered", "DELIVERED", "", ()),
        ("read", "READ", "", ()),
        ("failed", "ERROR", "9002: ERROR=NoTrustedRecipients", ()),
        ("expired", "ERROR", "", ()),
        (
            "rejected",
            "ERROR",
            "400 Bad Request",
            (InvalidParameter("attachments[0].fileName", "not a valid Windows file name"),),
        ),
        ("dead_letter", "ERROR", "gave up after 20 attempts over 72 hours", ()),
    ]
    blocks = []
    for number, (event, state, detail, invalid) in enumerate(cases, 1):
        transition = Transition(
            delivery_id=7,
            message_id=3,
            channel="ehr-mdm-to-qliq",
            destination="ward-qliq",
            control_id=original.control_id,
            state=state,
            event=event,
            at=at.timestamp(),
            remote_id="6f1c2a9e04b34d0f",
            recipient="dr.jones@cityhospital.example",
            detail=detail,
            invalid_parameters=invalid,
        )
        payload = build_status_message(
            original, transition, vendor="qliq", control_id=f"CST{number:04d}", now=at
        )
        text = payload.decode(original.charset).strip("\r").replace("\r", "\n")
        blocks.append(f"`{event}`:\n\n```\n{text}\n```\n")
    return "\n".join(blocks)


def _destination_notes() -> str:
    """Each destination type shipped with Courier documents itself in a README.md beside its
    code; this README gathers them (a third-party plugin's notes stay in its own package)."""
    import inspect

    from engine.destinations.registry import plugins

    shipped = Path(__file__).resolve().parent / "destinations"
    notes = []
    for plugin in plugins().values():
        folder = Path(inspect.getfile(plugin.destination)).resolve().parent
        readme = folder / "README.md"
        if folder.parent == shipped and readme.exists():
            notes.append(readme.read_text(encoding="utf-8").rstrip("\n") + "\n")
    return "\n".join(notes)


SECTIONS: dict[str, Callable[[], str]] = {
    "channel-reference": _channel_reference,
    "mapping-reference": _mapping_reference,
    "status-samples": _status_samples,
    "destination-notes": _destination_notes,
}

_SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL
)


def render(readme: str) -> str:
    """``readme`` with every generated section replaced by its current text."""

    def replace(match: re.Match[str]) -> str:
        body = SECTIONS[match["name"]]().rstrip("\n") + "\n"
        return match.group(1) + body + match.group(4)

    return _SECTION.sub(replace, readme)


def main(path: str = "README.md") -> int:
    readme = Path(path)
    text = readme.read_text(encoding="utf-8")
    readme.write_text(render(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
