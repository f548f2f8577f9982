"""Endpoint strings are checked without binding; port clashes are judged per interface."""

from __future__ import annotations

import socket

import pytest

from engine.channel.endpoints import (
    addresses_clash,
    client_endpoint_problem,
    connect_host,
    listen_address,
    server_endpoint_problem,
)


def test_server_strings():
    assert server_endpoint_problem("tcp:2575:interface=127.0.0.1") is None
    assert "Unknown endpoint type" in server_endpoint_problem("mllp:2575")
    assert server_endpoint_problem("tcp:port=abc") is not None


def test_checking_binds_nothing():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert server_endpoint_problem(f"tcp:{port}:interface=127.0.0.1") is None
    with socket.socket() as again:  # the port is still free: the check did not listen on it
        again.bind(("127.0.0.1", port))


def test_client_strings():
    assert client_endpoint_problem("tcp:host=127.0.0.1:port=2590") is None
    assert "missing 1 required positional argument" in client_endpoint_problem("tcp:host=x")


def test_listen_address():
    assert listen_address("tcp:2575:interface=127.0.0.1") == ("127.0.0.1", 2575)
    assert listen_address("tcp:port=2576") == ("", 2576)
    assert listen_address("unix:/tmp/courier.sock") is None
    assert listen_address("nonsense") is None


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        (("127.0.0.1", 2575), ("127.0.0.1", 2575), True),
        (("127.0.0.1", 2575), ("127.0.0.2", 2575), False),
        (("", 2575), ("127.0.0.2", 2575), True),
        (("127.0.0.1", 2575), ("0.0.0.0", 2575), True),
        (("127.0.0.1", 2575), ("127.0.0.1", 2576), False),
        (("127.0.0.1", 0), ("127.0.0.1", 0), False),
    ],
)
def test_addresses_clash(a, b, clash):
    assert addresses_clash(a, b) is clash


def test_connect_host_reads_both_spellings_of_a_tcp_client_string():
    """The status reports' TLS checks the hospital's certificate against this name."""
    from twisted.internet.endpoints import clientFromString
    from twisted.internet.testing import MemoryReactor

    def host(description: str) -> str | None:
        return connect_host(clientFromString(MemoryReactor(), description))

    assert host("tcp:host=hospital.example:port=2590:timeout=5") == "hospital.example"
    assert host("tcp:hospital.example:2590") == "hospital.example"
