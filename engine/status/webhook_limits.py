"""What the webhook server accepts from anyone, and the ``courier run`` options that set it.

Kept apart from the server so the CLI can offer the options without loading Twisted's web.
Per-route bounds (body size, source networks) are destination settings instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServerLimits:
    """Server-wide bounds, applied before a caller is authenticated."""

    max_connections: int = 64
    max_header_bytes: int = 16 * 1024  # request line and headers together
    max_headers: int = 40
    header_timeout_s: float = 10.0  # from the connection (or the previous answer) to the last header
    body_timeout_s: float = 120.0  # from the last header to the last byte of the body


_HELP = {
    "max_connections": "open webhook connections at once; more are answered 503",
    "max_header_bytes": "bytes of request line and headers; more is answered 400",
    "max_headers": "headers per request; more is answered 400",
    "header_timeout_s": "seconds a request's headers may take, however slowly they trickle; then 408",
    "body_timeout_s": "seconds a request's body may take once the headers are in; then 408",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--webhook-max-connections`` and the other :class:`ServerLimits`, with their defaults."""
    for f in fields(ServerLimits):
        parser.add_argument(
            "--webhook-" + f.name.removesuffix("_s").replace("_", "-"),
            dest=f"webhook_{f.name}",
            type=_positive(type(f.default)),
            default=f.default,
            metavar="N",
            help=f"{_HELP[f.name]} (default: {f.default:g})",
        )


def _positive(kind: type) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def from_arguments(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(**{f.name: getattr(args, f"webhook_{f.name}") for f in fields(ServerLimits)})
