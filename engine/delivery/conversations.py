"""Conversation threading: follow-ups about the same patient and order join one thread, for
destination types whose plugin says ``conversations`` (the vendor returns a conversation id).

The *thread key* of a message is its patient id (``PID-3.1``) plus its order number (the first
of ``ORC-2.1``, ``OBR-2.1``, ``TXA-14.1`` that is filled in), scoped to channel and
destination. kv keys are stored in clear and a patient id is PHI, so the key in the store's kv
table (namespace ``<type>-conversation``) is a *keyed* hash of it (``Store.keyed_hash``): a
plain hash of an eight-digit patient id is found by trying them all. The conversation id the vendor
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


def threads_namespace(kind: str) -> str:
    """kv namespace: keyed hash of a thread key → the conversation id."""
    return f"{kind}-conversation"


def openers_namespace(kind: str) -> str:
    """kv namespace: conversation id → {"channel", "message_id"} of the message that opened it."""
    return f"{kind}-conversations"


class Conversations:
    """The conversation id of each thread key, for one destination type, kept in the store."""

    def __init__(self, store: Store, kind: str) -> None:
        self._store = store
        self._namespace = threads_namespace(kind)

    def get(self, key: str) -> Deferred[str | None]:
        d = self._store.kv_get(self._namespace, self._store.keyed_hash(key))
        return d.addCallback(lambda v: v.decode() if v else None)

    def remember(self, key: str, conversation_id: str) -> Deferred[None]:
        return self._store.kv_put(self._namespace, self._store.keyed_hash(key), conversation_id.encode())


def remember_conversation(
    store: Store, kind: str, conversation_id: str, channel: str, message_id: int
) -> Deferred[None]:
    """Note which stored message opened a conversation, so its replies can answer it."""
    value = json.dumps({"channel": channel, "message_id": message_id}).encode()
    return store.kv_put(openers_namespace(kind), conversation_id, value)
