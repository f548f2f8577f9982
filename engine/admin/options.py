"""The ``courier run`` options of the admin endpoint, and the operators it lets in.

Declared here once, apart from the server, so the CLI can offer them without loading Twisted's
web. Operators come from a file (mode 0600) or an environment variable, one ``name:secret`` per
line; there is no default: outside ``--sandbox``, ``--admin`` without operators is refused, and
``--sandbox`` makes a one-time operator for the run (:func:`one_time_operators`).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

SANDBOX_ADMIN = "tcp:8470:interface=127.0.0.1"
"""Where ``--sandbox`` serves the console when ``--admin`` is not given."""
SANDBOX_OPERATOR = "sandbox"
MIN_SECRET_CHARS = 16
DEFAULT_READY_MAX_HELD_S = 600.0
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


@dataclass(frozen=True)
class Operators:
    """Who may use the console: operator name → secret (a token or a password)."""

    secrets: Mapping[str, str]

    def __repr__(self) -> str:  # never print the secrets
        return f"Operators({sorted(self.secrets)})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        metavar="ENDPOINT",
        help="serve health checks and the web console on this Twisted endpoint, e.g. "
        f"tcp:8470:interface=127.0.0.1 (with --sandbox the default is {SANDBOX_ADMIN})",
    )
    parser.add_argument("--admin-cert", type=Path, metavar="PEM", help="serve the admin endpoint over TLS")
    parser.add_argument("--admin-key", type=Path, metavar="PEM", help="private key of --admin-cert")
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--admin-operators-file",
        type=Path,
        metavar="FILE",
        help="the console's operators, one name:secret per line (mode 0600); "
        f"secrets of at least {MIN_SECRET_CHARS} characters",
    )
    who.add_argument(
        "--admin-operators-env",
        metavar="VAR",
        help="the environment variable holding the operators, one name:secret per line",
    )
    parser.add_argument(
        "--ready-max-held",
        type=float,
        default=DEFAULT_READY_MAX_HELD_S,
        metavar="SECONDS",
        help="/readyz answers 503 once a destination is held longer than this "
        f"(default: {DEFAULT_READY_MAX_HELD_S:g})",
    )


def load_operators(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Operators | None:
    """The operators named by the options; None when none was given. Raises ConfigError for
    a file others can read, a variable not set, or a line that is not ``name:secret``."""
    if args.admin_operators_file is not None:
        path = Path(args.admin_operators_file)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"--admin-operators-file {path}: {error.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"--admin-operators-file {path} can be read by others: chmod 600 it")
        return parse_operators(text, f"--admin-operators-file {path}")
    if args.admin_operators_env is not None:
        name = args.admin_operators_env
        if not env.get(name):
            raise ConfigError(f"--admin-operators-env: {name} is not set")
        return parse_operators(env[name], f"--admin-operators-env {name}")
    return None


def parse_operators(text: str, origin: str) -> Operators:
    """``name:secret`` lines (blank lines and ``#`` comments skipped); errors name the line
    number, never its secret."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, secret = line.partition(":")
        if not colon or not _NAME.fullmatch(name):
            raise ConfigError(f"{origin}: line {number} is not name:secret")
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"{origin}: line {number}: the secret is shorter than {MIN_SECRET_CHARS} characters"
            )
        if name in found:
            raise ConfigError(f"{origin}: line {number}: operator {name} is named twice")
        found[name] = secret
    if not found:
        raise ConfigError(f"{origin}: no operator in it")
    return Operators(found)


def one_time_operators() -> Operators:
    """``--sandbox``'s operator: a random token valid for this run only (printed at start)."""
    return Operators({SANDBOX_OPERATOR: secrets.token_urlsafe(24)})


def endpoint_port(endpoint: str) -> int | None:
    """The TCP port of a ``tcp:``/``ssl:`` endpoint string (positional or ``port=``), else None."""
    match = re.match(r"^(?:tcp6?|ssl):(?:.*?(?<![a-zA-Z])port=)?([0-9]+)(?=:|$)", endpoint)
    return int(match.group(1)) if match else None


def check_own_port(admin: str, others: Mapping[str, str]) -> None:
    """Refuse an admin endpoint on the port of an MLLP listener or the webhooks (``others``:
    what → endpoint string)."""
    port = endpoint_port(admin)
    if not port:
        return
    for what, endpoint in others.items():
        if endpoint_port(endpoint) == port:
            raise ConfigError(f"--admin {admin}: port {port} is the port of {what}; give the console its own")
