"""The checks a message passes *before* it is stored and ACKed.

In order: the channel's accept filter, optional hl7apy validation, then every destination's
mapping and the vendor's pre-flight rules. Anything that fails becomes an HL7 refusal
(:class:`engine.source.Refused`) naming the HL7 location and the table-0357 code, so a
message the vendor would reject never enters the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from engine.channel.config import Channel
from engine.channel.filter import evaluate
from engine.channel.order import OrderBy
from engine.destinations.base import Destination
from engine.errors import PathError
from engine.mapping import Mapping, MappingFailure
from engine.message import Message
from engine.message.ack import ERROR, AckError
from engine.message.path import Path
from engine.source import Accepted, Refused
from engine.validation_pool import ValidationUnavailable


@dataclass(frozen=True)
class Route:
    """One destination of a channel with what it takes to dry-run it."""

    name: str
    mapping: Mapping
    destination: Destination


Validator = Callable[[Message], "defer.Deferred[list[AckError]]"]
"""hl7apy validation, in a worker process (:mod:`engine.validation_pool`); an empty list means valid."""


def mapping_context(channel: str, destination: str) -> dict[str, str]:
    """Values a mapping reads that are not in the message (for uuid5 ids and templates)."""
    return {"channel": channel, "destination": destination}


def source_location(mapping: Mapping, message: Message, key: str, context: dict[str, str]) -> Path | None:
    """The HL7 field a payload key was read from, for ERR-2 of a vendor pre-flight refusal.

    Explaining the mapping costs a second run, so it is done only for a refused message.
    None when the key came from a template, a constant or the context.
    """
    for trace in mapping.explain(message, context=context):
        if trace.key == key:
            try:
                return Path.parse(trace.source)
            except PathError:
                return None
    return None


class Screen:
    """``check(message)`` for :class:`engine.source.Source`."""

    def __init__(self, channel: Channel, routes: Sequence[Route], validator: Validator | None = None):
        self.channel = channel
        self.routes = tuple(routes)
        self.validator = validator
        self.order_by = {d.name: OrderBy.parse(d.order_by) for d in channel.destinations if d.order_by}

    def __call__(self, message: Message) -> Accepted | defer.Deferred[Accepted]:
        verdict = evaluate(self.channel.source.filter, message)
        if verdict.outcome == "rejected":
            raise Refused(verdict.ack_error())
        if verdict.outcome == "filtered":
            return Accepted((), "FILTERED")
        if self.validator is None:
            return self._dry_run(message)
        d = self.validator(message)
        d.addCallbacks(self._validated, _not_validated, callbackArgs=(message,))
        return d

    def _validated(self, problems: list[AckError], message: Message) -> Accepted:
        if problems:
            raise Refused(problems[0])
        return self._dry_run(message)

    def _dry_run(self, message: Message) -> Accepted:
        names = []
        for route in self.routes:
            if not route.mapping.accepts(message):
                continue
            payload = self.payload(route, message)
            problems = route.destination.validate(payload)
            if problems:
                problem = problems[0]
                context = mapping_context(self.channel.name, route.name)
                location = source_location(route.mapping, message, problem.key, context)
                raise Refused(AckError(problem.code, f"{route.name}: {problem.text}", location))
            names.append(route.name)
        if not names:
            raise Refused(AckError(207, "no destination of this channel takes this message type"))
        keys = tuple((name, self.order_by[name].key(message)) for name in names if name in self.order_by)
        return Accepted(tuple(names), order_keys=keys)

    def payload(self, route: Route, message: Message) -> dict[str, Any]:
        """The mapped payload; a mapping failure is a refusal naming the HL7 location."""
        try:
            return route.mapping.apply(message, context=mapping_context(self.channel.name, route.name))
        except MappingFailure as failure:
            raise Refused(AckError(failure.code, f"{route.name}: {failure.text}", failure.location)) from None


def _not_validated(failure: Failure) -> None:
    """No worker could validate now (the engine is stopping, none could start): AE, so the
    sender keeps the message and sends it again, rather than AR for a fault of the data."""
    failure.trap(ValidationUnavailable)
    text = f"message not validated: {failure.getErrorMessage()}; resend later"
    raise Refused(AckError(207, text), outcome=ERROR)
