"""Requeue generations and Qliq conversation memory, against the sandboxes with a real store.

A requeued delivery is a new message for the vendor (a new idempotency key, so a new
``messageId``), while the retries of one generation keep theirs; and a Qliq delivery that
was accepted leaves the link conversation → message that replies are answered with.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from engine.delivery import idempotency_key
from engine.delivery.conversations import openers_namespace
from engine.destinations.base import message_uuid
from engine.store import DeliverySelection
from engine.store.base import ERROR, SENT
from tests import test_delivery_queue as queue_tests
from tests.conftest import on_reactor
from tests.test_delivery_queue import oru, sent_bodies

# The queue tests' fixtures: sandboxes on free ports, a store file, a listener, a harness.
sandboxes = queue_tests.sandboxes
store = queue_tests.store
listener = queue_tests.listener
harness = queue_tests.harness

REPO = Path(__file__).resolve().parents[1]


def test_idempotency_key_is_stable_per_stored_delivery_and_names_the_generation_after_a_requeue(harness):
    harness.receive(oru("KEY1"), "conneqt")
    (delivery,) = harness.deliveries("conneqt")
    key = idempotency_key(delivery)
    assert key == idempotency_key(on_reactor(harness.store.get_delivery, delivery.id))
    assert key.startswith(f"lab:conneqt:{delivery.message_id}:")
    assert idempotency_key(dataclasses.replace(delivery, requeues=2)) == f"{key}:2"


def test_requeue_counts_generations_and_cancel_does_not(harness):
    message_id = harness.receive(oru("GEN1"), "conneqt")
    (delivery,) = harness.deliveries("conneqt")
    assert delivery.requeues == 0
    on_reactor(harness.store.mark_error, delivery.id, "mapping was wrong")
    assert on_reactor(harness.store.requeue, DeliverySelection(ids=(delivery.id,))) == 1
    on_reactor(harness.store.mark_error, delivery.id, "still wrong")
    on_reactor(harness.store.requeue, DeliverySelection(ids=(delivery.id,)))
    on_reactor(harness.store.cancel, DeliverySelection(ids=(delivery.id,)))
    again = on_reactor(harness.store.get_delivery, delivery.id)
    assert (again.message_id, again.requeues, again.attempts) == (message_id, 2, 0)


def test_a_requeued_delivery_reaches_conneqt_under_a_new_message_id(harness, sandboxes):
    harness.queue("conneqt")
    harness.receive(oru("GEN2"), "conneqt")
    (first,) = harness.wait_states("conneqt", SENT, 1)
    assert first.remote_id == str(message_uuid(idempotency_key(first)))

    # An operator requeues it (say, after fixing the mapping): conneQt would answer 400 to new
    # content under the old messageId; the new generation is a new message instead.
    assert on_reactor(harness.store.requeue, DeliverySelection(ids=(first.id,))) == 1
    harness.queues[0].wake()
    (second,) = harness.wait_states("conneqt", SENT, 1)
    assert second.requeues == 1
    assert second.remote_id == str(message_uuid(idempotency_key(second)))
    assert second.remote_id != first.remote_id
    ids = [body["messageId"] for body in sent_bodies(sandboxes.conneqt, "/messages/instant")]
    assert ids == [first.remote_id, second.remote_id]
    assert not harness.deliveries("conneqt", ERROR)


def test_retries_of_one_generation_share_the_message_id(harness, sandboxes):
    on_reactor(sandboxes.medallies.set_faults, outage="refuse", restore_after_s=1.5)
    harness.queue("medallies")
    harness.receive(oru("GEN3"), "medallies")
    (sent,) = harness.wait_states("medallies", SENT, 1)
    assert sent.attempts > 1
    expected = f"urn:uuid:{message_uuid(idempotency_key(sent))}"
    assert sent.remote_id == expected


def test_an_accepted_qliq_message_is_remembered_for_its_replies(harness, sandboxes):
    harness.queue("qliq", conversations=True)
    message_id = harness.receive(oru("QREPLY", order="ORD42"), "qliq")
    harness.wait_states("qliq", SENT, 1)
    conversation = next(iter(sandboxes.qliq.state.messages.values()))["conversation_id"]
    link = on_reactor(harness.store.kv_get, openers_namespace("qliq"), conversation)
    assert json.loads(link) == {"channel": "lab", "message_id": message_id}
