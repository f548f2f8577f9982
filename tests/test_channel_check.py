"""``courier check``: broken channel files in tests/broken_config/, the shipped examples, and
rules spanning files. Each broken file is broken in exactly one way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from courier_sandbox.credentials import Credentials
from engine.channel.check import channel_files, check, load_channels
from engine.commands.run import with_sandbox_secrets
from engine.spec import SpecError

BROKEN = Path(__file__).parent / "broken_config"
REPO = Path(__file__).parent.parent
BROKEN_ENV = {"BROKEN_QLIQ_KEY": "broken-test-key"}


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        (
            "unknown_key.toml",
            "20: destinations[0].retry.max_attempt: unknown key; did you mean 'max_attempts'?",
        ),
        ("wrong_type.toml", "5: source.max_connections: expected a whole number, got text '64'"),
        (
            "missing_mapping.toml",
            f"13: destinations[0].mapping: mapping file {BROKEN}/mappings/absent.toml not found",
        ),
        (
            "literal_secret.toml",
            "17: destinations[0].settings.api_key: looks like a literal secret; use ${ENV_VAR} or "
            'api_key_file = "/run/secrets/..." instead',
        ),
        (
            "secret_default.toml",
            "17: destinations[0].settings.api_key: a secret cannot have a default: "
            "write ${BROKEN_QLIQ_KEY} and set BROKEN_QLIQ_KEY",
        ),
        (
            "bad_endpoint.toml",
            "4: source.listen: not a valid server endpoint string "
            "(ValueError: invalid literal for int() with base 10: '26o5')",
        ),
        (
            "unknown_transform.toml",
            f"13: destinations[0].mapping: mapping does not load: "
            f"{BROKEN}/mappings/unknown_transform.toml:6: fields.text.transforms[0]: "
            "unknown transform 'upperr' (did you mean 'upper'?)",
        ),
        (
            "bad_hl7_path.toml",
            "8: source.filter.conditions[0]: bad condition: invalid HL7 path 'TXA17' at character 4: "
            "expected '-' and a field number after the segment",
        ),
    ],
)
def test_each_broken_file_gives_exactly_its_problem_with_file_line_and_key(file, expected):
    problems = check([BROKEN / file], skip_env=False, env=BROKEN_ENV)
    assert [str(p) for p in problems] == [f"{BROKEN / file}:{expected}"]


def test_the_literal_secret_is_not_printed():
    [problem] = check([BROKEN / "literal_secret.toml"], skip_env=False, env=BROKEN_ENV)
    assert "qK7vP2xR9tL4mZ8wB3nH6jD1" not in str(problem)


def test_two_channels_on_one_port_clash_on_the_later_file():
    problems = check([BROKEN / "clash"], skip_env=False, env=BROKEN_ENV)
    assert [str(p) for p in problems] == [
        f"{BROKEN}/clash/b.toml:4: source.listen: port 2608 is already used by channel "
        f"'clash-a' ({BROKEN}/clash/a.toml)"
    ]


def test_all_problems_across_files_are_collected():
    problems = check([BROKEN, BROKEN / "clash"], skip_env=False, env=BROKEN_ENV)
    assert {p.file.name for p in problems} == {
        "unknown_key.toml",
        "wrong_type.toml",
        "missing_mapping.toml",
        "literal_secret.toml",
        "secret_default.toml",
        "bad_endpoint.toml",
        "unknown_transform.toml",
        "bad_hl7_path.toml",
        "b.toml",
    }


def write_channel(directory: Path, name: str, body: str) -> Path:
    file = directory / f"{name}.toml"
    file.write_text(f'name = "{name}"\n' + body)
    return file


QLIQ_MAPPING = f"{BROKEN}/mappings/mdm_to_qliq.toml"
CHANNEL = f"""
[source]
listen = "tcp:0:interface=127.0.0.1"
[source.filter]
message_types = ["MDM^T02"]
[[destinations]]
name = "care-team"
type = "qliq"
mapping = "{QLIQ_MAPPING}"
  [destinations.settings]
  base_url = "http://127.0.0.1:8081"
  api_key = "${{QLIQ_TEST_KEY}}"
"""


def test_destination_names_are_unique_across_channels(tmp_path):
    """The store queues deliveries by destination name: two queues of one name would take
    each other's deliveries, and ``courier run`` would refuse the second."""
    first = write_channel(tmp_path, "a", CHANNEL)
    second = write_channel(tmp_path, "b", CHANNEL.replace('name = "care-team"', 'name = "other"'))
    second_destination = CHANNEL[CHANNEL.index("[[destinations]]") :].replace("care", "ward")
    write_channel(tmp_path, "c", CHANNEL + second_destination)
    assert check([first, second], skip_env=True) == []
    problems = check([tmp_path], skip_env=True)
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'c.toml'}:8: destinations[0].name: destination 'care-team' is also defined in "
        f"channel 'a' ({first}); destination names must be unique across channels"
    ]


def test_env_vars_must_be_set_unless_skipped(tmp_path):
    file = write_channel(tmp_path, "env", CHANNEL)
    problems = check([tmp_path], skip_env=False, env={})
    assert [str(p) for p in problems] == [
        f"{file}:13: destinations[0].settings.api_key: environment variable QLIQ_TEST_KEY is not set"
    ]
    assert check([tmp_path], skip_env=True) == []
    [channel] = load_channels([tmp_path], env={"QLIQ_TEST_KEY": "k"})
    assert channel.destinations[0].settings["api_key"] == "k"


def test_load_channels_raises_with_every_problem(tmp_path):
    write_channel(tmp_path, "a", CHANNEL.replace("MDM^T02", "MDM-T02"))
    with pytest.raises(SpecError) as caught:
        load_channels([tmp_path], env={})
    assert [p.key for p in caught.value.problems] == [
        "source.filter.message_types[0]",
        "destinations[0].settings.api_key",
    ]


def test_mapping_for_another_destination_type_or_message_is_refused(tmp_path):
    write_channel(
        tmp_path,
        "kpn",
        CHANNEL.replace('type = "qliq"', 'type = "kpn"').replace(
            'api_key = "${QLIQ_TEST_KEY}"', 'client_id = "c"'
        ),
    )
    write_channel(tmp_path, "oru", CHANNEL.replace("MDM^T02", "ORU^R01").replace("care-team", "oru-team"))
    problems = {p.file.name: p.message for p in check([tmp_path], skip_env=True)}
    assert problems == {
        "kpn.toml": "the mapping produces 'qliq' payloads but the destination type is 'kpn'",
        "oru.toml": "the mapping handles MDM^T02 but the channel accepts only ORU^R01",
    }


def test_mapping_output_keys_must_fit_the_payload_spec(tmp_path):
    mapping = tmp_path / "m.toml"
    mapping.write_text('input = ["MDM"]\noutput = "qliq"\n[fields]\ntext = "TXA-12"\nsubjet = "TXA-2"\n')
    write_channel(tmp_path, "fit", CHANNEL.replace(QLIQ_MAPPING, "m.toml"))
    messages = [p.message for p in check([tmp_path / "fit.toml"], skip_env=True)]
    assert "output key subjet is not a qliq payload field; did you mean 'subject'?" in messages
    assert "the mapping does not produce required qliq payload field to" in messages


def test_unreadable_path_and_bad_toml_are_problems_not_crashes(tmp_path):
    (tmp_path / "bad.toml").write_text('name = "x"\n[source\n')
    problems = check([tmp_path / "bad.toml", tmp_path / "absent.toml"], skip_env=True)
    assert problems[0].line == 2 and "not valid TOML" in problems[0].message
    assert problems[1].file == tmp_path / "absent.toml"
    assert "cannot read channel file" in problems[1].message


EXAMPLES = sorted((REPO / "channels").glob("*.toml"))


def test_examples_are_one_per_vendor_on_distinct_loopback_ports():
    env = with_sandbox_secrets([REPO / "channels"], Credentials.generate(), env={})
    channels = load_channels([REPO / "channels"], env=env) if _mappings_shipped() else None
    if channels is None:
        pytest.skip("waiting for the shipped mappings/ (another engineer's piece)")
    assert sorted(d.type for c in channels for d in c.destinations) == ["conneqt", "kpn", "medallies", "qliq"]
    assert sorted(c.source.listen for c in channels) == [
        f"tcp:{port}:interface=127.0.0.1" for port in range(2575, 2579)
    ]
    assert {c.status_reports.to for c in channels} == {"tcp:host=127.0.0.1:port=2590"}


def _mappings_shipped() -> bool:
    return all(
        (REPO / "mappings" / name).is_file()
        for name in (
            "oru_r01_to_conneqt.toml",
            "mdm_t02_to_qliq.toml",
            "oru_r01_to_medallies.toml",
            "mdm_to_kpn.toml",
        )
    )


def test_examples_pass_check_as_run_sandbox_loads_them_apart_from_mappings_not_yet_shipped():
    env = with_sandbox_secrets([REPO / "channels"], Credentials.generate(), env={})
    for skip_env in (False, True):
        problems = check([REPO / "channels"], skip_env=skip_env, env=env)
        assert [str(p) for p in problems if not _missing_mapping(p.message)] == []
    assert len(channel_files([REPO / "channels"])) == 4


EXAMPLE_SECRETS = (
    ("ehr_mdm_to_kpn.toml", "client_secret", "KPN_CLIENT_SECRET"),
    ("ehr_mdm_to_qliq.toml", "api_key", "QLIQ_API_KEY"),
    ("lis_oru_to_conneqt.toml", "api_key", "CONNEQT_API_KEY"),
    ("lis_oru_to_conneqt.toml", "access_code", "CONNEQT_ACCESS_CODE"),
    ("ris_oru_to_medallies.toml", "password", "MEDALLIES_PASSWORD"),
    ("ris_oru_to_medallies.toml", "webhook_secret", "MEDALLIES_WEBHOOK_SECRET"),
)


def _unset_problem(file: str, key: str, name: str) -> str:
    """What check prints for the example's ``key = "${NAME}"`` when NAME is unset."""
    lines = (REPO / "channels" / file).read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith(f'{key} = "${{{name}}}"'))
    return f"channels/{file}:{line}: destinations[0].settings.{key}: environment variable {name} is not set"


def test_examples_without_their_secret_variables_fail_check_and_run_naming_each_one(tmp_path):
    """No public fallback: the example channels need every secret set (issue 9)."""
    env = {k: v for k, v in os.environ.items() if k not in {name for *_, name in EXAMPLE_SECRETS}}
    expected = [_unset_problem(*secret) for secret in EXAMPLE_SECRETS]

    def courier(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "engine", *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    checked = courier("check", "channels/")
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [*expected, f"{len(expected)} problem(s)"]
    ran = courier("run", "channels/", "--store", str(tmp_path / "courier.sqlite3"))
    assert ran.returncode == 2
    assert ran.stderr.splitlines() == ["courier run: the channel files have problems:", *expected]
    assert not (tmp_path / "courier.sqlite3").exists()


def _missing_mapping(message: str) -> bool:
    return message.startswith("mapping file") and message.endswith("not found") and not (_mappings_shipped())


def test_check_warns_which_status_poll_interval_really_applies(tmp_path):
    """conneQt asks for at most four polls a day: 300 s is allowed but is not what runs."""
    example = (REPO / "channels" / "lis_oru_to_conneqt.toml").read_text(encoding="utf-8")
    assert "poll_every_s = 21600" in example, "the example says what really applies"
    (tmp_path / "channels").mkdir()
    channel = tmp_path / "channels" / "conneqt.toml"
    channel.write_text(example.replace("poll_every_s = 21600", "poll_every_s = 300"), encoding="utf-8")
    (tmp_path / "mappings").mkdir()
    mapping = REPO / "mappings" / "oru_r01_to_conneqt.toml"
    (tmp_path / "mappings" / mapping.name).write_text(mapping.read_text(encoding="utf-8"), encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "engine", "check", "--skip-env", str(channel)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    line = checked.stdout.splitlines()[0]
    assert line.startswith(f"{channel}:")
    assert "poll_every_s: warning:" in line and "21600 s apart, not 300 s" in line
    clean = subprocess.run(
        [sys.executable, "-m", "engine", "check", "--skip-env", str(REPO / "channels")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "warning" not in clean.stdout
