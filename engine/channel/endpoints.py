"""Check Twisted endpoint strings without binding or connecting anything.

``serverFromString``/``clientFromString`` are run against a ``MemoryReactor``, so a typo in
``listen`` or ``to`` is found by ``courier check`` instead of at start-up.
"""

from __future__ import annotations

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.testing import MemoryReactor

_ANY_INTERFACE = ("", "0.0.0.0", "::")


def server_endpoint_problem(description: str) -> str | None:
    """Why ``description`` is not a usable server endpoint string, or None."""
    try:
        serverFromString(MemoryReactor(), description)
    except Exception as exc:  # Twisted raises ValueError, KeyError, OSError... for bad strings
        return f"not a valid server endpoint string ({_reason(exc)})"
    return None


def client_endpoint_problem(description: str) -> str | None:
    """Why ``description`` is not a usable client endpoint string, or None."""
    try:
        clientFromString(MemoryReactor(), description)
    except Exception as exc:  # as above: the parser's errors have no common base class
        return f"not a valid client endpoint string ({_reason(exc)})"
    return None


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def connect_host(endpoint: object) -> str | None:
    """The host a parsed TCP client endpoint connects to, however the string named it
    (``tcp:host=h:port=p`` or ``tcp:h:p``); None for other kinds."""
    host = getattr(endpoint, "_host", None)
    return host if isinstance(host, str) else None


def listen_address(description: str) -> tuple[str, int] | None:
    """(interface, port) a TCP/SSL server string binds, or None (unix sockets, bad strings)."""
    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except Exception:  # reported by server_endpoint_problem
        return None
    port = getattr(endpoint, "_port", None)
    if not isinstance(port, int):
        return None
    return getattr(endpoint, "_interface", ""), port


def addresses_clash(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether two listeners would fight over a port (port 0 means "any free port")."""
    (a_interface, a_port), (b_interface, b_port) = a, b
    if a_port != b_port or a_port == 0:
        return False
    return a_interface == b_interface or a_interface in _ANY_INTERFACE or b_interface in _ANY_INTERFACE
