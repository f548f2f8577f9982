"""The source filter's verdicts on real parsed messages."""

from __future__ import annotations

import pytest

from engine.channel.config import FILTER
from engine.channel.filter import evaluate
from engine.message.path import Path
from engine.message.reader import Message
from engine.spec import parse

ORU = (
    "MSH|^~\\&|LIS|CITYLAB|COURIER|GP|20240101120000||ORU^R01^ORU_R01|MSG0001|P|2.5\r"
    "PID|1||9434765919^^^NHS^NH||DOE^JANE\r"
    "OBR|1||ACC1|CBC^Full blood count|||20240101||||||||||||||||||F\r"
)


def channel_filter(**table):
    value, problems = parse(FILTER, {"message_types": ["ORU^R01", "MDM^*"], **table}, env={})
    assert problems == []
    return value


def message(text=ORU, **msh):
    fields = text.split("\r")[0].split("|")
    for index, value in msh.items():
        fields[int(index[1:])] = value
    return Message.parse(("|".join(fields) + "\r" + text.split("\r", 1)[1]).encode())


def test_accepted_message():
    verdict = evaluate(channel_filter(conditions=["OBR-25 in F,C"]), message())
    assert verdict.outcome == "accepted" and verdict.ack_error() is None


@pytest.mark.parametrize(
    ("msh", "code", "location"),
    [
        ({"f8": "ADT^A01"}, 200, "MSH-9.1"),
        ({"f8": "ORU^R30"}, 201, "MSH-9.2"),
        ({"f10": "T"}, 202, "MSH-11.1"),
        ({"f11": "2.1"}, 203, "MSH-12.1"),
    ],
)
def test_routing_mismatches_are_rejected_with_their_0357_code(msh, code, location):
    verdict = evaluate(channel_filter(), message(**msh))
    assert (verdict.outcome, verdict.code, verdict.location) == ("rejected", code, location)
    error = verdict.ack_error()
    assert (error.code, error.location) == (code, Path.parse(location))


def test_wildcard_event_accepts_any_event_of_that_type():
    assert evaluate(channel_filter(), message(f8="MDM^T10")).outcome == "accepted"


def test_sender_lists_restrict_application_and_facility():
    only = channel_filter(sending_applications=["LIS"], sending_facilities=["OTHERLAB"])
    verdict = evaluate(only, message())
    assert (verdict.outcome, verdict.code, verdict.location) == ("rejected", 207, "MSH-4.1")
    assert evaluate(channel_filter(sending_applications=["RIS"]), message()).location == "MSH-3.1"


def test_condition_miss_filters_or_rejects_without_quoting_the_message():
    prelim = message(ORU.replace("||F\r", "||P\r"))
    verdict = evaluate(channel_filter(conditions=["OBR-25 = F"]), prelim)
    assert (verdict.outcome, verdict.code, verdict.location) == ("filtered", 207, "OBR-25")
    assert verdict.text == "condition 'OBR-25 = F' does not hold"
    rejecting = channel_filter(conditions=["PID-5.1 = SMITH"], on_condition_miss="reject")
    verdict = evaluate(rejecting, prelim)
    assert verdict.outcome == "rejected" and "DOE" not in verdict.text


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ("OBR-25 = F", True),
        ("OBR-25 != F", False),
        ("OBR-25 in P, F", True),
        ("PID-3.5 exists", True),
        ("PID-8 exists", False),
        ("PID-5.2 = 'JANE'", True),
        ("OBR-25 in C", False),
    ],
)
def test_condition_operators(condition, holds):
    verdict = evaluate(channel_filter(conditions=[condition]), message())
    assert (verdict.outcome == "accepted") is holds
