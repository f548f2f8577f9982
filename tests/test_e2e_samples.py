"""Every sample meant for an example channel goes through that channel into its vendor's
sandbox and is SENT: the examples (samples, channels, mappings) and the sandboxes agree.

"Meant for" is what ``sample_messages/README.md`` says: each row whose channel expects an AA
or CA. A sample the channel ACKs and its vendor then refuses (a Qliq group the sandbox does not
know, a KPN chat it has not registered) fails here, not in front of a new user.
"""

from __future__ import annotations

import re

import pytest

from engine.message.batch import split_file
from engine.store.base import DELIVERED, ERROR, READ, SENT
from tests.support import e2e
from tests.support.e2e import SAMPLES

sandboxes, hospital, store, engine = e2e.sandboxes, e2e.hospital, e2e.store, e2e.engine  # fixtures

ROW = re.compile(r"^\| `(?P<file>[^`/]+\.hl7)` \|[^|]*\| (?P<expected>[^|]+) \|$")
ACCEPTED = re.compile(r"(?P<channel>[a-z-]+) → (?:AA|CA)\b")


def samples_meant_for_channels() -> list[tuple[str, str]]:
    """(sample file, channel) for every channel the samples README says ACKs it AA or CA."""
    pairs = []
    for line in (SAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        row = ROW.match(line)
        if row:
            pairs += [(row["file"], m["channel"]) for m in ACCEPTED.finditer(row["expected"])]
    return pairs


PAIRS = samples_meant_for_channels()


def test_the_samples_readme_names_samples_for_every_example_channel() -> None:
    assert {channel for _, channel in PAIRS} == {
        "lis-oru-to-conneqt",
        "ehr-mdm-to-qliq",
        "ris-oru-to-medallies",
        "ehr-mdm-to-kpn",
    }
    assert ("mdm_t02_escapes_lf.hl7", "ehr-mdm-to-qliq") in PAIRS


@pytest.mark.parametrize(("name", "channel"), PAIRS, ids=[f"{n}->{c}" for n, c in PAIRS])
def test_a_sample_meant_for_a_channel_is_sent_by_its_vendor_sandbox(engine, name, channel) -> None:
    for raw in split_file((SAMPLES / name).read_bytes()):
        ack = engine.send(channel, raw)
        assert ack.segment("MSA").value(1) in ("AA", "CA"), ack.segment("MSA").value(1)
        control_id = ack.segment("MSA").value(2)
        delivery = engine.wait_state(control_id, SENT, DELIVERED, READ, ERROR)
        assert delivery.state != ERROR, f"{channel} refused {name}: {delivery.last_error}"
