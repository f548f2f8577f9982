"""Webhook settings that would let anyone in are configuration errors, for `courier check`,
`courier run` and the engine alike.

The Qliq reply is encrypted with our *public* key, so a reply webhook without a path token or a
Basic password takes a reply forged by anyone; a short token can be guessed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from engine.channel.check import check, load_channels
from engine.destinations.qliq.keys import generate_key_pair
from engine.errors import ConfigError
from engine.service import build_engine
from tests.conftest import on_reactor
from tests.support.engine import open_store
from tests.test_channel_check import CHANNEL, write_channel

STRONG_TOKEN = "Pz4Wq8Lm2Tv6Xr9Kc3Nb7D"
REPLY_SETTINGS = '  reply_key_file = "reply_key.pem"\n  reply_sender = "poc@sandbox.qliq"\n'


def qliq_channel(directory: Path, settings: str, replies: str = REPLY_SETTINGS) -> Path:
    """A Qliq channel with status reports, and ``replies`` and ``settings`` (by default a
    reply key and its sender) added to the destination's."""
    reports = '[status_reports]\nto = "tcp:host=127.0.0.1:port=9"\n'
    return write_channel(directory, "replies", f"{CHANNEL}{replies}{settings}\n{reports}")


def courier(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "QLIQ_TEST_KEY": "k", "REPLY_TOKEN": STRONG_TOKEN}


def test_a_reply_webhook_without_token_or_password_fails_check_and_run(tmp_path, env):
    generate_key_pair(tmp_path / "reply_key.pem")
    file = qliq_channel(tmp_path, "")
    checked = courier("check", str(file), env=env)
    assert checked.returncode == 1
    assert (
        "destinations[0].settings.reply_key_file: the reply webhook would take anyone's POST"
        in checked.stdout
    )
    assert courier("check", "--skip-env", str(file), env=env).returncode == 1
    ran = courier("run", str(file), "--store", str(tmp_path / "s.sqlite3"), env=env)
    assert ran.returncode == 2 and "reply_webhook_token" in ran.stderr and "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    "settings",
    [
        '  reply_webhook_token = "${REPLY_TOKEN}"',
        '  reply_webhook_token_file = "token.txt"',
        '  reply_webhook_password = "${REPLY_TOKEN}"',
    ],
)
def test_a_token_or_a_password_satisfies_check_even_with_skip_env(tmp_path, settings):
    (tmp_path / "token.txt").write_text(STRONG_TOKEN + "\n")
    file = qliq_channel(tmp_path, settings)
    assert check([file], skip_env=False, env={"QLIQ_TEST_KEY": "k", "REPLY_TOKEN": STRONG_TOKEN}) == []
    assert check([file], skip_env=True) == []


@pytest.mark.parametrize(
    "token", ["reply-path-token", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa", "Pz4Wq8Lm2Tv6/r9Kc3Nb7D"]
)
def test_a_guessable_or_unsafe_path_token_fails_check_without_being_printed(tmp_path, token):
    (tmp_path / "token.txt").write_text(token)
    file = qliq_channel(tmp_path, '  reply_webhook_token_file = "token.txt"')
    problems = [str(p) for p in check([file], skip_env=False, env={"QLIQ_TEST_KEY": "k"})]
    assert (
        len(problems) == 1 and "destinations[0].settings.reply_webhook_token: the path token" in problems[0]
    )
    assert token not in problems[0]


def test_allow_from_must_name_networks(tmp_path):
    file = qliq_channel(
        tmp_path,
        '  reply_webhook_token = "${REPLY_TOKEN}"\n  webhook_allow_from = ["203.0.113.0/24", "qliq.com"]',
    )
    problems = [str(p) for p in check([file], skip_env=True)]
    assert len(problems) == 1 and "webhook_allow_from[1]: 'qliq.com' is not a network" in problems[0]


def test_the_engine_refuses_to_build_a_reply_webhook_without_token_or_password(reactor, tmp_path):
    """Settings made in code (as --sandbox does) meet the same rule as channel files."""
    generate_key_pair(tmp_path / "reply_key.pem")
    file = qliq_channel(tmp_path, '  reply_webhook_token = "${REPLY_TOKEN}"')
    [channel] = load_channels([file], env={"QLIQ_TEST_KEY": "k", "REPLY_TOKEN": STRONG_TOKEN})
    [destination] = channel.destinations
    settings = {**destination.settings, "reply_webhook_token": None}
    forged_open = replace(channel, destinations=(replace(destination, settings=settings),))
    store = open_store(reactor, tmp_path / "s.sqlite3")
    try:
        with pytest.raises(ConfigError, match="reply_key_file: the reply webhook would take anyone's POST"):
            build_engine(reactor, [forged_open], store, webhook_endpoint="tcp:0:interface=127.0.0.1")
        short = {**destination.settings, "reply_webhook_token": "reply-path-token"}
        guessable = replace(channel, destinations=(replace(destination, settings=short),))
        with pytest.raises(ConfigError, match="path token is guessable"):
            build_engine(reactor, [guessable], store, webhook_endpoint="tcp:0:interface=127.0.0.1")
    finally:
        on_reactor(store.close)


@pytest.mark.parametrize(
    "replies",
    [
        '  reply_key_file = "reply_key.pem"\n  reply_webhook_token = "${REPLY_TOKEN}"\n',
        "  poll_replies_s = 60\n",
        '  poll_replies_s = 60\n  reply_sender = "poc"\n',
    ],
)
def test_replies_need_an_e_mail_reply_sender_the_mandatory_sender_of_update_message_status(
    tmp_path, env, replies
):
    file = qliq_channel(tmp_path, "", replies=replies)
    checked = courier("check", str(file), env=env)
    assert checked.returncode == 1
    assert "destinations[0].settings.reply_sender: replies are marked read with update_message_status" in (
        checked.stdout
    )
    sender = '  reply_sender = "${QLIQ_REPLY_SENDER}"\n'
    fixed = qliq_channel(tmp_path, sender, replies=replies.replace('  reply_sender = "poc"\n', ""))
    assert check([fixed], skip_env=True) == []
    assert check([fixed], skip_env=False, env={**env, "QLIQ_REPLY_SENDER": "poc@sandbox.qliq"}) == []


def test_without_replies_no_reply_sender_is_needed(tmp_path):
    assert check([qliq_channel(tmp_path, "", replies="")], skip_env=True) == []
