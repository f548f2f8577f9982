"""Every shipped sample through the shipped example channels, over a real MLLP connection.

The channels, mappings and vendor pre-flight rules are the real ones from ``channels/`` and
``mappings/``; each channel's listener runs on a free loopback port with a real store. Each
sample gets the ACK ``sample_messages/README.md`` documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.channel.check import load_channels
from engine.commands.run import with_sandbox_secrets
from engine.message import Message
from engine.message.batch import split_file
from engine.service import build_source, routes, validation_pool
from tests.conftest import on_reactor
from tests.support.engine import listen, open_store
from tests.support.mllp import BlockingClient
from tests.support.sandbox import TEST_CREDENTIALS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_messages"

# sample → (channel, expected MSA-1, expected ERR-3 or None, expected ERR-2 or None)
EXPECTED = {
    "oru_r01_lab_fbc_pdf.hl7": ("lis-oru-to-conneqt", "CA", None, None),
    "oru_r01_lab_two_orders.hl7": ("lis-oru-to-conneqt", "AA", None, None),
    "oru_r01_microbiology_urine.hl7": ("lis-oru-to-conneqt", "AA", None, None),
    "oru_r01_radiology_mri.hl7": ("ris-oru-to-medallies", "AA", None, None),
    "oru_r01_lab_latin1_name.hl7": ("lis-oru-to-conneqt", "AA", None, None),
    "oru_r01_lab_utf8_name.hl7": ("lis-oru-to-conneqt", "AA", None, None),
    "oru_r01_lab_zsegments_v27.hl7": ("lis-oru-to-conneqt", "CA", None, None),
    "mdm_t01_document_notification.hl7": ("ehr-mdm-to-qliq", "AR", "201", None),
    "mdm_t02_discharge_summary.hl7": ("ehr-mdm-to-qliq", "CA", None, None),
    "mdm_t02_escapes_lf.hl7": ("ehr-mdm-to-kpn", "AA", None, None),
    "mdm_t04_status_change_content.hl7": ("ehr-mdm-to-qliq", "AR", "201", None),
    "mdm_t08_edit_content.hl7": ("ehr-mdm-to-qliq", "AR", "201", None),
    "mdm_t10_replacement_content.hl7": ("ehr-mdm-to-kpn", "AA", None, None),
    "mdm_t11_cancel_notification.hl7": ("ehr-mdm-to-kpn", "AR", "201", None),
    "invalid/none_no_msh.hl7": ("lis-oru-to-conneqt", "AR", "100", None),
    "invalid/adt_a01_unsupported_type.hl7": ("lis-oru-to-conneqt", "AR", "200", "MSH^1^9^1^1"),
    "invalid/oru_r30_unsupported_event.hl7": ("lis-oru-to-conneqt", "AR", "201", "MSH^1^9^1^2"),
    "invalid/oru_r01_unsupported_processing_id.hl7": ("lis-oru-to-conneqt", "AR", "202", "MSH^1^11^1^1"),
    "invalid/oru_r01_unsupported_version.hl7": ("lis-oru-to-conneqt", "AR", "203", "MSH^1^12^1^1"),
    "invalid/oru_r01_missing_nhs_number.hl7": ("lis-oru-to-conneqt", "AR", "101", "PID^1^3^1^1"),
    "invalid/oru_r01_bad_nhs_check_digit.hl7": ("lis-oru-to-conneqt", "AR", "102", "PID^1^3^2^1"),
    "invalid/oru_r01_unknown_practice.hl7": ("lis-oru-to-conneqt", "AR", "103", "PD1^1^3^1^3"),
    "invalid/oru_r01_bad_snomed_code.hl7": ("lis-oru-to-conneqt", "AR", "102", "OBX^1^3^1^1"),
}


@pytest.fixture(scope="module")
def ports(reactor, tmp_path_factory):
    """Each example channel's source on its own free port, sharing one real store."""
    store = open_store(reactor, tmp_path_factory.mktemp("samples") / "courier.sqlite3")
    listening = {}
    secrets = with_sandbox_secrets([ROOT / "channels"], TEST_CREDENTIALS, env={})
    pools = []
    for channel in load_channels([ROOT / "channels"], env=secrets):
        validator = validation_pool(reactor, channel)
        source = build_source(reactor, channel, store, routes(channel, reactor.seconds), validator=validator)
        port, listener, _ = listen(reactor, channel.name, source)
        listening[channel.name] = (port, listener)
        pools += [validator] if validator else []
    yield {name: port for name, (port, _) in listening.items()}
    for _, listener in listening.values():
        on_reactor(listener.stopListening)
    for pool in pools:
        on_reactor(pool.stopService)
    on_reactor(store.close)


def test_every_sample_is_covered() -> None:
    files = {str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*.hl7")}
    assert files - {"oru_r01_batch_file.hl7"} == set(EXPECTED)


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_sample_gets_the_documented_ack(ports, sample) -> None:
    channel, code, err3, err2 = EXPECTED[sample]
    data = (SAMPLES / sample).read_bytes()
    payload = split_file(data)[0] if data.startswith(b"MSH") else data
    with BlockingClient(ports[channel]) as client:
        ack = Message.parse(client.request(payload))
    msa = ack.segment("MSA")
    assert msa.value(1) == code, ack.text
    if data.startswith(b"MSH"):
        assert msa.value(2) == Message.parse(payload).control_id
    err = ack.segment("ERR")
    if err3 is None:
        assert err is None
        return
    if ack.version >= "2.5":
        assert err.value(3, component=1) == err3
        assert err.value(8), "a human-readable reason"
        if err2 is not None:
            assert err.field(2) == err2
    else:  # before v2.5: ERR-1 (segment^sequence^field^code&text&table) and MSA-3
        assert err.value(1, component=4, subcomponent=1) == err3
        assert msa.value(3), "a human-readable reason"


def test_batch_sample_gets_an_acknowledgement_batch(ports) -> None:
    with BlockingClient(ports["lis-oru-to-conneqt"]) as client:
        reply = client.request((SAMPLES / "oru_r01_batch_file.hl7").read_bytes().replace(b"\n", b"\r"))
    lines = reply.decode().split("\r")
    assert lines[0].startswith("FHS|") and any(line.startswith("BTS|") for line in lines)
    assert [line.split("|")[1] for line in lines if line.startswith("MSA|")] == ["AA", "AA"]
