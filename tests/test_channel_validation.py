"""hl7apy validation levels, problems as ACK errors without PHI."""

from __future__ import annotations

import sys

from engine.channel.validation import ceiling_refusal, components, validate
from engine.message import Message

ORU = (
    "MSH|^~\\&|LIS|CITYLAB|COURIER|GP|20240101120000||ORU^R01^ORU_R01|MSG1|P|2.5\r"
    "PID|1||9434765919^^^NHS^NH||DOE^JANE||19800101|F\r"
    "OBR|1||ACC1|CBC^Full blood count|||20240101\r"
    "OBX|1|NM|WBC^White cells||7.1|10*9/L|||||F"
)
BAD_DATE = ORU.replace("||19800101|", "||DOE1980|")


def test_off_does_not_even_import_hl7apy():
    sys.modules.pop("hl7apy", None)
    assert validate("not HL7 at all", "off") == []
    assert "hl7apy" not in sys.modules


def test_good_message_passes_every_level():
    assert validate(ORU, "tolerant") == [] and validate(ORU, "strict") == []
    assert validate(ORU.replace("\r", "\n"), "strict") == []


def test_tolerant_rejects_only_the_unparseable():
    assert validate(BAD_DATE, "tolerant") == []
    [problem] = validate("garbage", "tolerant")
    assert problem.code == 100


def test_strict_reports_a_data_type_error_without_the_value():
    [problem] = validate(BAD_DATE, "strict")
    assert problem.code == 102
    assert "DOE" not in problem.text and "strict" in problem.text


def test_version_override_validates_against_another_version():
    assert validate(ORU, "strict", "2.5") == []
    assert validate(ORU, "strict", "9.9") != []


def test_the_ceiling_counts_the_separators_the_message_declares() -> None:
    message = Message.parse(b"MSH|#~\\&|A|B|C|D|20240101||ORU#R01|1|P|2.5\rNTE|1||####^^^")
    assert components(message) == 22  # 14 '|', 6 '#', one '~' and one '&'; '^' is text here
    assert ceiling_refusal(message, 100_000, 22) is None
    refusal = ceiling_refusal(message, 100_000, 21)
    assert (refusal.code, refusal.text) == (207, "message too large to validate: 22 components, limit 21")


def test_the_ceiling_refuses_by_size_before_counting() -> None:
    message = Message.parse(ORU.encode())
    size = len(message.raw)
    refusal = ceiling_refusal(message, size - 1, 10**9)
    assert refusal.text == f"message too large to validate: {size} bytes, limit {size - 1}"
