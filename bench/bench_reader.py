"""Reading a 2 KB ORU^R01: Courier's lazy reader next to python-hl7's ``hl7.parse``, same run.

Run from the repository root: ``python bench/bench_reader.py``. The goal: parse + the MSH
shortcuts in microseconds (routing and the ACK need nothing else), not milliseconds.
"""

from __future__ import annotations

import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path as FilePath

sys.path.insert(0, str(FilePath(__file__).resolve().parent.parent))  # run without installing

import hl7  # noqa: E402

from engine.message import ACCEPT, Message, build_ack  # noqa: E402


def oru_r01(target_size: int = 2048) -> bytes:
    """A realistic ORU^R01 (lipid panel plus a text report) grown to about ``target_size`` bytes."""
    segments = [
        "MSH|^~\\&|LAB^2.16.840.1.113883.3.72^ISO|HOSP^1.2.3^ISO|COURIER|CLINIC|20240131142501+0100||"
        "ORU^R01^ORU_R01|MSG00001234|P|2.5.1|||AL|NE||UNICODE UTF-8",
        "PID|1||12345^^^HOSP^MR~9434765919^^^NHS^NH||Smith^John^A^^Dr.||19700101|M|||"
        "1 Main St^^Leeds^^LS1 1AA",
        "PV1|1|O|CLINIC^^^HOSP||||1234^Jones^Mary|||||||||||V0001",
        "ORC|RE|PL1234|FL5678||CM",
        "OBR|1|PL1234|FL5678|24331-1^Lipid panel^LN|||20240131090000|||||||||1234^Jones^Mary||||||"
        "20240131140000|||F",
    ]
    tests = [
        ("2093-3", "Cholesterol", "196", "mg/dL", "<200"),
        ("2571-8", "Triglyceride", "150", "mg/dL", "<150"),
        ("2085-9", "HDL", "45", "mg/dL", ">40"),
        ("13457-7", "LDL calc", "121", "mg/dL", "<130"),
    ]
    n = 0
    while sum(len(s) + 1 for s in segments) < target_size:
        code, name, value, unit, ref = tests[n % len(tests)]
        n += 1
        segments.append(f"OBX|{n}|NM|{code}^{name}^LN||{value}|{unit}|{ref}|N|||F|||20240131140000")
        segments.append(f"NTE|{n}||Result reviewed \\T\\ verified.\\.br\\Fasting sample.")
    return ("\r".join(segments) + "\r").encode("utf-8")


def courier_msh(data: bytes) -> tuple:
    m = Message.parse(data)
    return (
        m.control_id,
        m.message_type,
        m.trigger_event,
        m.message_structure,
        m.processing_id,
        m.version,
        m.sending_application,
        m.sending_facility,
        m.receiving_application,
        m.receiving_facility,
        m.accept_ack_type,
        m.application_ack_type,
        m.character_sets,
    )


def python_hl7_msh(data: bytes) -> tuple:
    msh = hl7.parse(data, encoding="utf-8").segment("MSH")
    message_type = msh[9][0]
    return (
        str(msh[10]),
        str(message_type[0]),
        str(message_type[1]),
        str(message_type[2]),
        str(msh[11]),
        str(msh[12]),
        str(msh[3][0][0]),
        str(msh[4][0][0]),
        str(msh[5]),
        str(msh[6]),
        str(msh[15]),
        str(msh[16]),
        str(msh[18]),
    )


def courier_last_obx_value(data: bytes) -> str:
    m = Message.parse(data)
    return m.all("OBX")[-1].value(5)


def python_hl7_last_obx_value(data: bytes) -> str:
    return str(hl7.parse(data, encoding="utf-8").segments("OBX")[-1][5])


def courier_ack(data: bytes) -> bytes:
    stamp = datetime(2024, 1, 31, 14, 25, 1, tzinfo=UTC)
    return build_ack(Message.parse(data), ACCEPT, control_id="ACK1", timestamp=stamp)


def microseconds(fn, data: bytes) -> float:
    """Best of five runs, each long enough to time reliably, in µs per call."""
    timer = timeit.Timer(lambda: fn(data))
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    data = oru_r01()
    assert courier_msh(data)[:12] == python_hl7_msh(data)[:12]  # same answers
    assert courier_last_obx_value(data) == python_hl7_last_obx_value(data)
    rows = [
        ("plain bytes split on CR (floor)", microseconds(lambda d: d.split(b"\r"), data)),
        ("courier: parse + MSH shortcuts", microseconds(courier_msh, data)),
        ("hl7.parse + MSH fields", microseconds(python_hl7_msh, data)),
        ("courier: parse + last OBX-5", microseconds(courier_last_obx_value, data)),
        ("hl7.parse + last OBX-5", microseconds(python_hl7_last_obx_value, data)),
        ("courier: parse + build_ack", microseconds(courier_ack, data)),
    ]
    segments = data.count(b"\r")
    print(f"ORU^R01 of {len(data)} bytes, {segments} segments")
    print(f"{'operation':<34}{'µs/call':>12}")
    for name, value in rows:
        print(f"{name:<34}{value:>12.1f}")
    ratio = rows[2][1] / rows[1][1]
    print(f"MSH read: courier is {ratio:.0f}x faster than hl7.parse")


if __name__ == "__main__":
    main()
