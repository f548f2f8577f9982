"""``courier qliq keys`` against the Qliq sandbox over a real socket."""

from __future__ import annotations

import os
import stat

import pytest

from courier_sandbox.qliq import QliqSandbox
from engine.cli import build_parser
from engine.destinations.qliq import commands as qliq
from engine.destinations.qliq.keys import load_private_key, public_key_pem
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS


@pytest.fixture
def sandbox(reactor):
    sandbox = QliqSandbox(reactor, credentials=TEST_CREDENTIALS)
    on_reactor(sandbox.listen)
    yield sandbox
    on_reactor(sandbox.stop)


def keys(sandbox, tmp_path, *extra):
    argv = [
        "qliq",
        "keys",
        "--sender",
        "courier@sandbox.qliq",
        "--key-file",
        str(tmp_path / "k.pem"),
        "--base-url",
        sandbox.base_url,
        *extra,
    ]
    return qliq.run(build_parser().parse_args(argv))


def test_creates_the_key_and_uploads_its_public_half(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("QLIQ_API_KEY", TEST_CREDENTIALS.qliq_api_key)
    monkeypatch.setenv("COURIER_QLIQ_KEY_PASSPHRASE", "pass phrase")
    assert keys(sandbox, tmp_path) == 0
    key_file = tmp_path / "k.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    private = load_private_key(key_file, b"pass phrase")
    uploaded = sandbox.public_keys["courier@sandbox.qliq"]
    assert uploaded.public_numbers() == private.public_key().public_numbers()
    assert keys(sandbox, tmp_path) == 0  # a second run reuses the key
    assert public_key_pem(load_private_key(key_file, b"pass phrase")) == public_key_pem(private)


def test_refused_upload_and_missing_api_key(sandbox, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COURIER_QLIQ_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("QLIQ_API_KEY", raising=False)
    assert keys(sandbox, tmp_path) == 2
    monkeypatch.setenv("QLIQ_API_KEY", "wrong-key")
    assert keys(sandbox, tmp_path) == 1
    assert "wrong-key" not in capsys.readouterr().err
