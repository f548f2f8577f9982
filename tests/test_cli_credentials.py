"""``courier conneqt exchange`` against the conneQt sandbox, storing the token as the engine reads it."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from courier_sandbox import DEFAULT_PORTS, start_sandboxes
from engine.delivery.tokens import NAMESPACE
from engine.destinations.conneqt.tokens import token_key as conneqt_token_key
from engine.store import Cipher, Database
from tests.conftest import on_reactor
from tests.support.sandbox import TEST_CREDENTIALS

ROOT = Path(__file__).resolve().parent.parent
KEY = base64.b64encode(b"credentials-test-key-32-bytes-ok").decode()


@pytest.fixture(scope="module")
def conneqt(reactor):
    sandboxes = on_reactor(
        start_sandboxes,
        reactor,
        credentials=TEST_CREDENTIALS,
        ports=dict.fromkeys(DEFAULT_PORTS, 0),
    )
    yield sandboxes.conneqt
    on_reactor(sandboxes.stop)


def exchange(conneqt, store: Path, code: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        COURIER_STORE_KEY=KEY,
        CONNEQT_BASE_URL=conneqt.base_url,
        CONNEQT_API_KEY=TEST_CREDENTIALS.conneqt_api_key,
        CONNEQT_ACCESS_CODE=code,
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "conneqt",
            "exchange",
            str(ROOT / "channels" / "lis_oru_to_conneqt.toml"),
            "gp-conneqt",
            "--store",
            str(store),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def stored_token(store: Path) -> str | None:
    db = Database.open(store, Cipher(base64.b64decode(KEY)), readonly=True)
    try:
        value = db.kv_get(NAMESPACE, conneqt_token_key("lis-oru-to-conneqt", "gp-conneqt"))
    finally:
        db.close()
    return value.decode() if value else None


def test_a_new_access_code_replaces_the_stored_token(conneqt, tmp_path) -> None:
    store = tmp_path / "courier.sqlite3"
    result = exchange(conneqt, store, TEST_CREDENTIALS.conneqt_access_code)
    assert result.returncode == 0, result.stderr
    token = stored_token(store)
    assert token in conneqt.tokens, "the token conneQt issued is the one stored"
    assert token not in result.stdout + result.stderr, "a token is never printed"


def test_a_refused_access_code_stores_nothing(conneqt, tmp_path) -> None:
    store = tmp_path / "courier.sqlite3"
    Database.open(store, Cipher(base64.b64decode(KEY))).close()
    result = exchange(conneqt, store, "WRONG-CODE")
    assert result.returncode == 1
    assert "refused the access code" in result.stderr
    assert stored_token(store) is None


def test_verbose_logging_never_shows_urllib3_request_urls(tmp_path) -> None:
    """Qliq's status query carries the api_key in its URL; urllib3 logs URLs at DEBUG."""
    script = (
        "import logging, sys\n"
        "from engine.cli import main\n"
        "main(['-vv', 'check', '--skip-env', sys.argv[1]])\n"
        "print(logging.getLogger('urllib3').getEffectiveLevel())\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert int(shown.stdout.split()[-1]) >= logging.WARNING, shown.stderr
