"""``courier listen`` plays the hospital: it prints what it receives and ACKs it."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.mllp import BlockingClient
from tests.support.subprocess_engine import free_port

ORU = b"MSH|^~\\&|LAB|HOSP|EPR|WARD|20260101||ORU^R01|LISTEN1|P|2.5\rPID|1||P1\r"
STATUS = (
    b"MSH|^~\\&|QLIQ|WARDS|LAB|HOSP|20260101||ACK^R01^ACK|ST1|P|2.5|||AL|NE\rMSA|AA|LISTEN1\rZDS|delivered\r"
)
PLAIN_ACK = b"MSH|^~\\&|QLIQ|WARDS|LAB|HOSP|20260101||ACK^R01^ACK|ST2|P|2.5\rMSA|AA|LISTEN1\r"


def test_listen_prints_and_acks_and_answers_a_status_ack_only_when_asked() -> None:
    port = free_port()
    listener = subprocess.Popen(
        [sys.executable, "-m", "engine", "listen", f"tcp:{port}:interface=127.0.0.1", "--summary"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = BlockingClient(port, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "courier listen did not start"
                time.sleep(0.05)
        with client:
            assert b"MSA|AA|LISTEN1" in client.request(ORU)
            assert b"MSA|CA|ST1" in client.request(STATUS), "MSH-15 AL asks for a commit ACK"
            assert b"MSA|AR|" in client.request(b"not HL7 at all"), "a NAK, not a silent drop"
            client.send(PLAIN_ACK)
            assert b"MSA|AA|LISTEN2" in client.request(ORU.replace(b"LISTEN1", b"LISTEN2")), (
                "an original-mode ACK gets no answer, so the next reply is the next message's"
            )
    finally:
        listener.terminate()
        out, _ = listener.communicate(timeout=10)
    assert "ORU^R01 LISTEN1" in out and "ACK^R01 ST1 MSA AA LISTEN1" in out
