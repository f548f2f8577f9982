"""``courier run --sandbox`` stopped and started again over the same ``var/``: the restarted
sandboxes know the tokens they issued (conneQt, KPN), the conversations and messages they
accepted (Qliq follow-ups, status queries), so every delivery of both runs is SENT and none
waits QUEUED on a 401 or ends in ERROR on a 404.
"""

from __future__ import annotations

import re
import stat

from engine.message.batch import split_file
from tests.support.demo import Demo, interrupt
from tests.support.waiting import wait_for

SAMPLES = {
    "lis-oru-to-conneqt": "oru_r01_lab_fbc_pdf.hl7",
    "ehr-mdm-to-qliq": "mdm_t02_discharge_summary.hl7",
    "ris-oru-to-medallies": "oru_r01_radiology_mri.hl7",
    "ehr-mdm-to-kpn": "mdm_t10_replacement_content.hl7",
}
PER_CHANNEL = 3
STATES = ("QUEUED", "SENDING", "SENT", "DELIVERED", "READ", "ERROR", "CANCELLED")


def write_copies(demo: Demo, run: int) -> None:
    """PER_CHANNEL copies of each channel's sample with new control ids, in one folder per
    channel: same patients and orders, so Qliq follow-ups go to the stored conversations."""
    for channel, name in SAMPLES.items():
        folder = demo.workdir / f"run{run}" / channel
        folder.mkdir(parents=True)
        raw = split_file((demo.workdir / "sample_messages" / name).read_bytes())[0]
        header, rest = raw.split(b"\r", 1)
        fields = header.split(b"|")
        for i in range(PER_CHANNEL):
            fields[9] = f"R{run}-{channel[:8]}-{i}".encode()
            (folder / f"{i}.hl7").write_bytes(b"|".join(fields) + b"\r" + rest)


def send_run(demo: Demo, run: int) -> None:
    write_copies(demo, run)
    for channel in SAMPLES:
        demo.send_path(f"run{run}/{channel}", channel)


def delivery_counts(demo: Demo) -> dict[str, dict[str, int]]:
    """``courier stats``' deliveries table: destination → state → count."""
    shown = demo.courier("stats").stdout
    table = shown.split("deliveries", 1)[1].split("\n\n", 1)[0].splitlines()
    counts = {}
    for line in table[1:]:
        destination, numbers = re.match(r"\S+ → (\S+)\s+([\d\s]+)$", line).groups()
        counts[destination] = dict(zip(STATES, map(int, numbers.split()), strict=True))
    return counts


def all_sent(demo: Demo, expected: int) -> dict | None:
    """The counts once each destination has ``expected`` deliveries, none QUEUED or SENDING."""
    counts = delivery_counts(demo)
    settled = len(counts) == len(SAMPLES) and all(
        sum(c.values()) == expected and c["QUEUED"] == c["SENDING"] == 0 for c in counts.values()
    )
    return counts if settled else None


def test_deliveries_after_a_restart_of_the_sandboxed_demo_are_all_sent(tmp_path) -> None:
    demo = Demo(tmp_path)
    engine = demo.run_engine()
    try:
        send_run(demo, 1)
        wait_for(lambda: all_sent(demo, PER_CHANNEL), 90, "the first run's deliveries")
    finally:
        interrupt(engine)
    assert engine.returncode == 0, demo.output("run", "err")
    saved = sorted((tmp_path / "var" / "sandbox" / "state").iterdir())
    assert [p.name for p in saved] == ["conneqt.json", "http.json", "kpn.json", "medallies.json", "qliq.json"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in saved)

    engine = demo.run_engine()
    try:
        send_run(demo, 2)
        counts = wait_for(lambda: all_sent(demo, 2 * PER_CHANNEL), 90, "both runs' deliveries")
    finally:
        interrupt(engine)
    assert all(c["ERROR"] == 0 for c in counts.values()), counts
    assert engine.returncode == 0, demo.output("run", "err")
