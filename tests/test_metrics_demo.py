"""``/metrics`` of the README's demo, as Prometheus scrapes it: ``courier run --sandbox --admin …
--log-format json`` in a scratch copy on free ports, every sample sent to every channel, one
destination held. The exposition parses with prometheus_client's own parser, holds every metric
the README documents (and no other), and nowhere a patient value or a control id of the samples;
the engine's log is JSON lines, with no patient value either.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.demo import ROOT, Demo, interrupt
from tests.support.monitoring import documented_metrics
from tests.support.waiting import wait_for

CHANNELS = ("lis-oru-to-conneqt", "ehr-mdm-to-qliq", "ris-oru-to-medallies", "ehr-mdm-to-kpn")
PROMETHEUS_TOKEN = "prometheus-scrape-token-for-this-test"
HELD_CONTROL_ID = "HELD-20240315-0001"
LOG_FIELDS = {"timestamp", "level", "logger", "event", "channel", "destination", "control_id", "message"}


def sample_values() -> tuple[set[str], set[str]]:
    """(control ids, patient values) of every sample file, read line by line so the invalid
    ones count too: each MSH-10, and each PID component and OBX-5 value long enough not to
    match by chance (a sex code, a set id), less what a header names too (a facility's id
    as the assigning authority, which the log may quote; a control id reused as a record number)."""
    control_ids, patient, header = set(), set(), set()
    for path in sorted((ROOT / "sample_messages").rglob("*.hl7")):
        for segment in path.read_bytes().decode("latin-1").replace("\n", "\r").split("\r"):
            fields = segment.split("|")
            if fields[0] == "MSH" and len(fields) > 9:
                control_ids.add(fields[9])
                header.update(part for field in fields for part in _components(field))
            elif fields[0] in ("PID", "OBX"):
                chosen = fields[1:] if fields[0] == "PID" else fields[5:6]
                patient.update(part for field in chosen for part in _components(field) if len(part) >= 5)
    return control_ids - {""}, {p for p in patient if not any(p in h for h in header)}


def _components(field: str) -> list[str]:
    return [
        part
        for repeat in field.split("~")
        for component in repeat.split("^")
        for part in component.split("&")
    ]


def scrape(demo: Demo, token: str | None = PROMETHEUS_TOKEN) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.get(f"http://127.0.0.1:{demo.ports['admin']}/metrics", headers=headers, timeout=10)


def samples_of(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float | None:
    return samples_of(exposition).get((name, tuple(sorted(labels.items()))))


def send(demo: Demo, path: str, channel: str) -> None:
    """``courier send`` (some samples are refused on purpose: its exit code is not checked)."""
    demo.courier("send", path, "--to", f"tcp:host=127.0.0.1:port={demo.ports[channel]}")


def scraped_when(demo: Demo, condition: Callable[[str], bool]) -> str | None:
    """One scrape, if ``condition`` holds for it."""
    exposition = scrape(demo).text
    return exposition if condition(exposition) else None


def test_metrics_of_the_demo_are_documented_and_carry_no_patient_value(tmp_path) -> None:
    demo = Demo(tmp_path)
    demo.env["COURIER_OPERATORS"] = f"prometheus:{PROMETHEUS_TOKEN}"
    engine = demo.run_engine("--admin-operators-env", "COURIER_OPERATORS", "--log-format", "json")
    conneqt = {"channel": CHANNELS[0], "destination": "gp-conneqt"}
    try:
        for channel in CHANNELS:
            send(demo, "sample_messages", channel)
        wait_for(
            lambda: value(scrape(demo).text, "courier_deliveries_sent_total", **conneqt),
            60,
            "a delivery sent",
        )
        faults = f"http://127.0.0.1:{demo.ports['conneqt']}/_sandbox/faults"
        requests.post(faults, json={"status_next": 1000, "status_code": 403}, timeout=10).raise_for_status()
        fresh = (tmp_path / "sample_messages" / "oru_r01_lab_fbc_pdf.hl7").read_bytes()
        (tmp_path / "held.hl7").write_bytes(fresh.replace(b"CL240315-0001", HELD_CONTROL_ID.encode(), 1))
        send(demo, "held.hl7", CHANNELS[0])
        held = {**conneqt, "reason": "forbidden"}

        def held_with_a_queue(exposition: str) -> bool:  # the queue's depth is read every 10 s
            queued = value(exposition, "courier_queue_depth", **conneqt, state="QUEUED") or 0
            return value(exposition, "courier_destination_held", **held) == 1 and queued >= 1

        exposition = wait_for(lambda: scraped_when(demo, held_with_a_queue), 60, "conneQt held")
        assert scrape(demo, token=None).status_code == 401
        assert scrape(demo).headers["content-type"].startswith("text/plain; version=0.0.4")
    finally:
        interrupt(engine)

    families = list(text_string_to_metric_families(exposition))
    exposed = {f.name + "_total" if f.type == "counter" else f.name for f in families}
    assert exposed == documented_metrics()
    assert value(exposition, "courier_messages_accepted_total", channel=CHANNELS[0]) >= 1
    assert value(exposition, "courier_vendor_responses_total", **conneqt, **{"class": "4xx"}) >= 1
    refused = [
        v for (name, _), v in samples_of(exposition).items() if name == "courier_messages_refused_total"
    ]
    assert sum(refused) >= 1

    control_ids, patient = sample_values()
    control_ids.add(HELD_CONTROL_ID)
    assert len(control_ids) > 10 and len(patient) > 20, "the samples were read"
    log = demo.output("run", "err")
    assert [c for c in control_ids if c in exposition] == []
    assert [p for p in patient if p in exposition] == []
    assert [p for p in patient if p in log] == []

    lines = [line for line in log.splitlines() if line and not line.startswith("courier: console at ")]
    records = [json.loads(line) for line in lines]
    assert all(set(r) >= LOG_FIELDS for r in records)
    assert {"listening", "running", "held"} <= {r["event"] for r in records}
    refused = [r for r in records if r["event"] == "refused"]
    assert refused and all(r["channel"] in CHANNELS and r["control_id"] for r in refused)
