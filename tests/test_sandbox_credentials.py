"""The sandboxes' credentials: random, kept 0600 in var/sandbox/credentials.json and reused,
and filled by ``courier run --sandbox`` only into the secret variables the user left unset of
destinations aimed at a sandbox (issue 9: no credential has a public default)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from courier_sandbox import default_base_urls
from courier_sandbox.credentials import Credentials, CredentialsError, load_or_create
from engine.channel.check import load_channels
from engine.commands.run import with_sandbox_secrets
from engine.commands.sandbox_secrets import secret_settings
from engine.spec import SpecError

REPO = Path(__file__).resolve().parent.parent
OLD_PUBLIC_SECRETS = {
    "sandbox-qliq-key",
    "sandbox-conneqt-key",
    "sandbox-conneqt-unauthorised",
    "SANDBOX-ACCESS",
    "sandbox-medallies-password",
    "sandbox-readonly-password",
    "sandbox-inbound-secret",
    "sandbox-kpn-secret",
}


def secrets_of(credentials: Credentials) -> list[str]:
    """The values of the fields that have no declared default: the secrets."""
    return [getattr(credentials, f.name) for f in fields(credentials) if f.default is MISSING]


def test_the_file_is_made_0600_with_random_secrets_and_reused(tmp_path):
    path = tmp_path / "var" / "sandbox" / "credentials.json"
    made = load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create(path) == made  # the next start: the same values, the tokens stay valid
    elsewhere = load_or_create(tmp_path / "other.json")
    secrets = secrets_of(made)
    assert len(secrets) == 12 and len(set(secrets)) == 12 and all(len(s) >= 32 for s in secrets)
    assert not set(secrets) & (set(secrets_of(elsewhere)) | OLD_PUBLIC_SECRETS)


def test_courier_run_sandbox_makes_the_file_in_var_sandbox_once(tmp_path):
    """Through the command: ``run --sandbox`` with no channel files stops before any port."""
    (tmp_path / "channels").mkdir()
    file = tmp_path / "var" / "sandbox" / "credentials.json"
    contents = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "engine", "run", "--sandbox", "channels"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr) == (2, "courier run: no channel files found\n")
        assert file.stat().st_mode & 0o777 == 0o600
        contents.append(json.loads(file.read_text()))
    assert contents[0] == contents[1]


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        (0o644, None, "can be read by others: chmod 600 it"),
        (0o600, "{not json", "are not in the expected form: delete the file to make new ones"),
        (0o600, '{"qliq_api_key": "x"}', "are not in the expected form: delete the file to make new ones"),
    ],
)
def test_a_file_others_can_read_or_that_is_not_ours_is_refused_in_one_line(tmp_path, mode, text, expected):
    path = tmp_path / "credentials.json"
    load_or_create(path)
    if text is not None:
        path.write_text(text)
    path.chmod(mode)
    with pytest.raises(CredentialsError) as refused:
        load_or_create(path)
    assert str(refused.value) == f"sandbox credentials {path} {expected}"


def test_a_file_from_before_the_http_sandbox_keeps_its_secrets_and_gains_the_new_ones(tmp_path):
    path = tmp_path / "credentials.json"
    made = load_or_create(path)
    old = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("http_")}
    path.write_text(json.dumps(old))
    upgraded = load_or_create(path)
    assert {k: getattr(upgraded, k) for k in old} == old
    assert (
        upgraded.http_signing_secret not in (made.http_signing_secret, "")
        and path.stat().st_mode & 0o777 == 0o600
    )
    assert load_or_create(path) == upgraded  # written back: the next start finds the same


def test_every_secret_setting_maps_to_a_generated_secret():
    generated = Credentials.generate()
    secrets = set(secrets_of(generated))
    declared = secret_settings()
    assert set(declared) == {"qliq", "conneqt", "medallies", "kpn", "http"}
    for settings in declared.values():
        for credential in settings.values():
            assert getattr(generated, credential) in secrets


def test_run_sandbox_fills_only_unset_secrets_of_destinations_aimed_at_a_sandbox():
    credentials = Credentials.generate()
    channels = [REPO / "channels"]
    given = {"MEDALLIES_PASSWORD": "set-by-the-user", "QLIQ_BASE_URL": "https://capi.qliqsoft.com"}
    filled = with_sandbox_secrets(channels, credentials, default_base_urls(), given)
    assert filled == {
        **given,
        "CONNEQT_API_KEY": credentials.conneqt_api_key,
        "CONNEQT_ACCESS_CODE": credentials.conneqt_access_code,
        "MEDALLIES_WEBHOOK_SECRET": credentials.medallies_webhook_secret,
        "KPN_CLIENT_SECRET": credentials.kpn_client_secret,
    }
    with pytest.raises(SpecError) as refused:  # the real Qliq gets no sandbox key
        load_channels(channels, env=filled)
    assert [p.message for p in refused.value.problems] == ["environment variable QLIQ_API_KEY is not set"]


def test_a_sandbox_on_another_port_is_not_the_sandbox():
    moved = {**default_base_urls(), "medallies": "http://127.0.0.1:1"}
    filled = with_sandbox_secrets([REPO / "channels"], Credentials.generate(), moved, {})
    assert "MEDALLIES_PASSWORD" not in filled and "MEDALLIES_WEBHOOK_SECRET" not in filled


HTTP_CHANNEL = """
name = "hook"
[source]
listen = "tcp:1:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "hook"
type = "http"
mapping = "hook.toml"
  [destinations.settings]
  url = "http://127.0.0.1:{port}/in"
  auth = "bearer"
  token = "${{HOOK_TOKEN}}"
"""


@pytest.mark.parametrize(("port", "filled"), [(18445, True), (18446, False)])
def test_an_http_destination_counts_as_aimed_by_its_url(tmp_path, port, filled):
    """The ``http`` type has no ``base_url``: its plugin names ``url`` (``SandboxHook.url_setting``)."""
    (tmp_path / "hook.toml").write_text('input = ["ORU^R01"]\noutput = "http"\n[fields]\nid = "MSH-10"\n')
    (tmp_path / "channel.toml").write_text(HTTP_CHANNEL.format(port=port))
    credentials = Credentials.generate()
    got = with_sandbox_secrets([tmp_path / "channel.toml"], credentials, default_base_urls(), {})
    assert got == ({"HOOK_TOKEN": credentials.http_token} if filled else {})


def test_a_variable_a_real_destination_also_reads_is_never_filled(tmp_path):
    """One ${HOOK_TOKEN} for the sandbox and for a real receiver: the sandbox's value would go to
    the real one, so it stays unset and courier run names it."""
    (tmp_path / "hook.toml").write_text('input = ["ORU^R01"]\noutput = "http"\n[fields]\nid = "MSH-10"\n')
    real = """
[[destinations]]
name = "real-hook"
type = "http"
mapping = "hook.toml"
  [destinations.settings]
  url = "https://receiver.example/in"
  auth = "bearer"
  token = "${HOOK_TOKEN}"
"""
    (tmp_path / "channel.toml").write_text(HTTP_CHANNEL.format(port=18445) + real)
    got = with_sandbox_secrets([tmp_path / "channel.toml"], Credentials.generate(), default_base_urls(), {})
    assert "HOOK_TOKEN" not in got
