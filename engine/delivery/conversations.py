"""Qliq conversation threading: follow-ups about the same patient and order join one thread.

The *thread key* of a message is its patient id (``PID-3.1``) plus its order number (the first
of ``ORC-2.1``, ``OBR-2.1``, ``TXA-14.1`` that is filled in), scoped to channel and
destination. kv keys are stored in clear and a patient id is PHI, so the key in the store's kv
table (namespace ``qliq-conversation``) is a *keyed* hash of it (``Store.keyed_hash``): a
plain hash of an eight-digit patient id is found by trying them all. The conversation id Qliq
returned is the (encrypted) value. A message without a patient id or an
order number starts a new conversation. With ``concurrency`` above 1, two messages of one
thread sent at the same moment can each open a conversation; the later one wins the key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.internet.defer import Deferred

from engine.message import Message
from engine.store.base import Store

NAMESPACE = "qliq-conversation"
CONVERSATIONS = "qliq-conversations"  # kv: conversation id → {"channel", "message_id"}
PATIENT_PATH = "PID-3.1"
ORDER_PATHS = ("ORC-2.1", "OBR-2.1", "TXA-14.1")


def thread_key(
    message: Message,
    channel: str,
    destination: str,
    patient_path: str = PATIENT_PATH,
    order_paths: Sequence[str] = ORDER_PATHS,
) -> str | None:
    """The thread key of a message, or None when it names no patient and order. It holds the
    patient id: keep it in memory, and let :class:`Conversations` hash it for the store."""
    patient = message.get(patient_path)
    order = next((value for path in order_paths if (value := message.get(path))), "")
    if not patient or not order:
        return None
    return "\x1f".join((channel, destination, patient, order))


class Conversations:
    """The Qliq conversation id of each thread key, kept in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> Deferred[str | None]:
        d = self._store.kv_get(NAMESPACE, self._store.keyed_hash(key))
        return d.addCallback(lambda v: v.decode() if v else None)

    def remember(self, key: str, conversation_id: str) -> Deferred[None]:
        return self._store.kv_put(NAMESPACE, self._store.keyed_hash(key), conversation_id.encode())


def remember_conversation(
    store: Store, conversation_id: str, channel: str, message_id: int
) -> Deferred[None]:
    """Note which stored message opened a Qliq conversation, so its replies can answer it."""
    value = json.dumps({"channel": channel, "message_id": message_id}).encode()
    return store.kv_put(CONVERSATIONS, conversation_id, value)
