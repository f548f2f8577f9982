"""``courier run --sandbox`` for Qliq: a Qliq destination aimed at the sandbox without a reply
key gets the demo key (made once, mode 0600), the sandbox's sender and a fresh secret webhook
path, and its public half is uploaded to the sandbox (never to a real Qliq: that is
``courier qliq keys``, on purpose), so the demo shows a clinician's reply coming back as HL7."""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from engine.channel.config import Destination as DestinationConfig
from engine.destinations.plugin import SandboxHook
from engine.destinations.qliq.replies import ReplyWebhook

log = logging.getLogger(__name__)

DEMO_REPLY_KEY = Path("var/sandbox/qliq_reply_key.pem")
"""The demo key Qliq replies are encrypted with under ``--sandbox``."""

_webhook_tokens: dict[str, str] = {}
"""One fresh secret webhook path per destination for the life of the process: a reload prepares
the channels again, and must find the channel unchanged and the path the sandbox was given."""


def demo_replies(
    destination: DestinationConfig, aimed: bool, key_file: Path = DEMO_REPLY_KEY
) -> DestinationConfig:
    """The destination with the demo reply settings, when aimed at the sandbox without a key."""
    from courier_sandbox.qliq import QliqDirectory
    from engine.destinations.qliq.keys import generate_key_pair, passphrase_from_env

    if not aimed or destination.settings.get("reply_key_file"):
        return destination
    if not key_file.exists():
        generate_key_pair(key_file, passphrase_from_env())
    demo = {
        "reply_key_file": str(key_file),
        "reply_sender": QliqDirectory.point_of_contact,
        "reply_webhook_token": _webhook_tokens.setdefault(destination.name, secrets.token_urlsafe(16)),
    }
    log.warning("destination %s: sandbox replies with the demo key %s", destination.name, key_file)
    return replace(destination, settings={**destination.settings, **demo})


def upload_reply_key(reactor, queue, aimed: bool) -> Deferred[None] | None:
    """The public half of the destination's reply key, uploaded to the sandbox for its sender."""
    if not aimed or not queue.config.settings.get("reply_key_file"):
        return None
    return deferToThreadPool(reactor, reactor.getThreadPool(), _upload, queue.config.settings)


def _upload(settings) -> None:
    import requests

    from engine.destinations.qliq.keys import (
        load_private_key,
        passphrase_from_env,
        public_key_pem,
        upload_public_key,
    )

    public_pem = public_key_pem(load_private_key(settings["reply_key_file"], passphrase_from_env()))
    with requests.Session() as session:
        upload_public_key(
            session,
            settings["base_url"],
            settings["api_key"],
            settings["reply_sender"],
            public_pem,
            timeout_s=10,
        )


SANDBOX = SandboxHook(
    prepare=demo_replies,
    start=upload_reply_key,
    webhook_settings={ReplyWebhook: "reply_url"},
    secret_settings={"api_key": "qliq_api_key"},
)
