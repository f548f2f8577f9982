"""``courier run``: start every channel's listener and queue from the channel files.

``--webhooks ENDPOINT`` also serves the vendors' webhooks (URL scheme in :mod:`engine.service`).
``--sandbox`` runs the four vendor sandboxes too and makes the example channels work as
they are: each secret variable left unset of a destination aimed at a sandbox takes that
sandbox's random credential (``var/sandbox/credentials.json``, made once), KPN destinations
without a token are authorised against the sandbox, Qliq
destinations without a reply key get a demo one (``var/sandbox/``) uploaded to the sandbox,
and the sandboxes' webhook URLs point at the engine's webhooks.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.defer import inlineCallbacks

from engine.commands.exits import serve
from engine.commands.sandbox import add_ports_argument
from engine.commands.store_options import add_store_arguments
from engine.status import webhook_limits

if TYPE_CHECKING:
    from engine.channel.config import Channel, Destination
    from engine.sandbox.credentials import Credentials

log = logging.getLogger("engine.run")

SANDBOX_WEBHOOKS = "tcp:18480:interface=127.0.0.1"
"""Where ``--sandbox`` serves the webhooks when ``--webhooks`` is not given."""
SANDBOX_REPLY_KEY = Path("var/sandbox/qliq_reply_key.pem")
"""The demo key Qliq replies are encrypted with under ``--sandbox`` (made once, mode 0600)."""
SANDBOX_STATE = Path("var/sandbox/state")
"""Where the sandboxes of ``--sandbox`` keep what a restarted engine relies on (tokens, messages)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path("channels")],
        help="channel files or directories (default: channels/)",
    )
    add_store_arguments(parser)
    parser.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="full: fsync every commit (default); normal: survives a killed process, not a power cut",
    )
    parser.add_argument(
        "--hold-deliveries",
        action="store_true",
        help="receive, store and ACK, but keep every delivery QUEUED (maintenance, benchmarks)",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="also run the four vendor sandboxes on loopback (the demo); they accept only the random "
        "credentials kept in var/sandbox/credentials.json (made once, mode 0600), which fill every "
        "secret variable left unset of a destination aimed at them (a variable you set wins). "
        "`courier check --skip-env` checks such channels without the variables",
    )
    add_ports_argument(parser, "--sandbox-ports")
    parser.add_argument(
        "--webhooks",
        metavar="ENDPOINT",
        help="serve the vendor webhooks on this Twisted endpoint, e.g. tcp:8480:interface=127.0.0.1 "
        f"(with --sandbox the default is {SANDBOX_WEBHOOKS})",
    )
    parser.add_argument(
        "--prune-after-days",
        type=float,
        metavar="DAYS",
        help="every hour, delete messages older than DAYS whose deliveries are all final, and the "
        "outbox items sent or given up (default: keep everything); keep DAYS above every duplicate window",
    )
    parser.add_argument("--webhook-cert", type=Path, metavar="PEM", help="serve the webhooks over TLS")
    parser.add_argument("--webhook-key", type=Path, metavar="PEM", help="private key of --webhook-cert")
    webhook_limits.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from engine.channel.check import load_channels
    from engine.errors import ConfigError
    from engine.sandbox import DEFAULT_PORTS, default_base_urls
    from engine.sandbox.credentials import CREDENTIALS_FILE, load_or_create
    from engine.service import build_engine
    from engine.store import SQLiteStore, load_cipher
    from engine.tls import TLSSettings

    try:
        credentials = load_or_create(CREDENTIALS_FILE) if args.sandbox else None
    except ConfigError as error:
        print(f"courier run: {error}", file=sys.stderr)
        return 2
    sandbox_ports = {**DEFAULT_PORTS, **args.sandbox_ports}
    try:
        base_urls = default_base_urls(sandbox_ports)
        env = None if credentials is None else with_sandbox_secrets(list(args.paths), credentials, base_urls)
        channels = load_channels(list(args.paths), env=env)
    except ConfigError as error:
        print(f"courier run: the channel files have problems:\n{error}", file=sys.stderr)
        return 2
    if not channels:
        print("courier run: no channel files found", file=sys.stderr)
        return 2
    if args.sandbox:
        channels = with_sandbox_replies(channels, SANDBOX_REPLY_KEY, sandbox_ports["qliq"])
    store = SQLiteStore(
        args.store,
        reactor=reactor,
        cipher=load_cipher(key_file=args.key_file),
        durability=args.durability,
    )
    if bool(args.webhook_cert) != bool(args.webhook_key):
        print("courier run: give both --webhook-cert and --webhook-key", file=sys.stderr)
        return 2
    webhook_tls = TLSSettings(args.webhook_cert, args.webhook_key) if args.webhook_cert else None
    if args.sandbox and args.webhooks is None:
        args.webhooks = SANDBOX_WEBHOOKS
    try:
        engine = build_engine(
            reactor,
            channels,
            store,
            hold_deliveries=args.hold_deliveries,
            webhook_endpoint=args.webhooks,
            webhook_tls=webhook_tls,
            webhook_limits=webhook_limits.from_arguments(args),
            prune_after_s=None if args.prune_after_days is None else args.prune_after_days * 86400,
        )
    except ConfigError as error:
        print(f"courier run: {error}", file=sys.stderr)
        return 2

    def start():
        d = store.start()
        if args.sandbox:
            d.addCallback(lambda _: _with_sandboxes(reactor, engine, credentials, sandbox_ports))
        else:
            d.addCallback(lambda _: engine.start())
        return d.addCallback(lambda _: _announce(channels))

    def stop():
        d = engine.stop()
        d.addBoth(lambda _: store.close())
        return d

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    return serve(reactor, start, "run")


def with_sandbox_secrets(
    paths: list[Path],
    credentials: Credentials,
    base_urls: Mapping[str, str] | None = None,
    env: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The environment the channels load with under ``--sandbox``: ``env`` plus, for every
    destination aimed at a sandbox (``base_urls``, default: the sandboxes' fixed ports), the
    sandbox's credential for each of its secret variables left unset."""
    from engine.channel.check import channels_as_written
    from engine.sandbox import default_base_urls
    from engine.sandbox.credentials import fill_sandbox_secrets

    destinations = [d for channel in channels_as_written(paths) for d in channel.destinations]
    filled = fill_sandbox_secrets(destinations, credentials, base_urls or default_base_urls(), env)
    for name in sorted(filled.keys() - env.keys()):
        log.warning("%s is not set: using the sandbox's own credential", name)
    return filled


@inlineCallbacks
def _with_sandboxes(reactor, engine, credentials, ports):
    """Sandboxes up, KPN authorised against them, engine started, sandbox webhooks at the engine."""
    from engine.sandbox import start_sandboxes

    sandboxes = yield start_sandboxes(reactor, ports=ports, credentials=credentials, state_dir=SANDBOX_STATE)
    reactor.addSystemEventTrigger("during", "shutdown", sandboxes.stop)  # after the engine: saves
    yield engine.tokens.load()
    yield authorize_kpn_in_sandbox(reactor, engine)
    yield upload_reply_keys_to_sandbox(reactor, engine, sandboxes.qliq.port)
    yield engine.start()
    if engine.webhooks is not None:
        point_sandboxes_at_webhooks(sandboxes, engine)


@inlineCallbacks
def authorize_kpn_in_sandbox(reactor, engine):
    """Every KPN destination without a token: authorise it (the sandbox approves at once)."""
    from twisted.internet.threads import deferToThreadPool

    from engine.destinations.kpn.commands import authorize
    from engine.service import missing_token

    for queue in engine.deliveries.queues.values():
        stored = missing_token(queue, "kpn")
        if stored is None:
            continue
        token = yield deferToThreadPool(
            reactor,
            reactor.getThreadPool(),
            authorize,
            queue.destination,
            auto=True,
            timeout_s=10.0,
            show=log.info,
        )
        yield stored.save(token)
        log.warning("queue %s: authorised with the KPN sandbox", queue.name)


def with_sandbox_replies(channels: Sequence[Channel], key_file: Path, qliq_port: int) -> list[Channel]:
    """Qliq destinations aimed at the Qliq sandbox without a reply key get the demo key (made
    here once), the sandbox's sender and a fresh secret webhook path, so the demo shows a
    clinician's reply coming back to the hospital as HL7. Other destinations are left alone."""
    from engine.destinations.qliq.keys import generate_key_pair, passphrase_from_env
    from engine.sandbox.qliq import QliqDirectory

    def demo_replies(destination):
        if not _aimed_at_qliq_sandbox(destination, qliq_port) or destination.settings.get("reply_key_file"):
            return destination
        if not key_file.exists():
            generate_key_pair(key_file, passphrase_from_env())
        demo = {
            "reply_key_file": str(key_file),
            "reply_sender": QliqDirectory.point_of_contact,
            "reply_webhook_token": secrets.token_urlsafe(16),
        }
        log.warning("destination %s: sandbox replies with the demo key %s", destination.name, key_file)
        return replace(destination, settings={**destination.settings, **demo})

    return [
        replace(channel, destinations=tuple(demo_replies(d) for d in channel.destinations))
        for channel in channels
    ]


@inlineCallbacks
def upload_reply_keys_to_sandbox(reactor, engine, qliq_port: int):
    """The public half of the reply key of each Qliq destination aimed at the sandbox, uploaded
    for its sender (never to a real Qliq: that is `courier qliq keys`, on purpose)."""
    import requests
    from twisted.internet.threads import deferToThreadPool

    from engine.destinations.qliq.keys import (
        load_private_key,
        passphrase_from_env,
        public_key_pem,
        upload_public_key,
    )

    def upload(settings) -> None:
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

    for queue in engine.deliveries.queues.values():
        if _aimed_at_qliq_sandbox(queue.config, qliq_port) and queue.config.settings.get("reply_key_file"):
            yield deferToThreadPool(reactor, reactor.getThreadPool(), upload, queue.config.settings)


def _aimed_at_qliq_sandbox(destination: Destination, qliq_port: int) -> bool:
    from engine.sandbox import default_base_urls
    from engine.sandbox.credentials import aimed_at_sandbox

    sandbox = default_base_urls({"qliq": qliq_port})
    return destination.type == "qliq" and aimed_at_sandbox(destination, sandbox, {})


def point_sandboxes_at_webhooks(sandboxes, engine) -> None:
    """The Qliq reply URL and MedAllies DSN and inbound URLs: the engine's first such webhooks."""
    from engine.destinations.medallies.inbound import DSNResource, InboundResource
    from engine.destinations.qliq.replies import ReplyWebhook

    base = f"{engine.webhook_scheme}://127.0.0.1:{engine.webhook_port()}"
    targets = {
        ReplyWebhook: (sandboxes.qliq, "reply_url"),
        DSNResource: (sandboxes.medallies, "dsn_url"),
        InboundResource: (sandboxes.medallies, "inbound_url"),
    }
    configured = set()
    for path, resource in sorted(engine.webhook_resources.items()):
        sandbox, setting = targets[type(resource)]
        if setting not in configured:
            sandbox.configure({setting: f"{base}/{path}"})
            configured.add(setting)


def _announce(channels) -> None:
    for channel in channels:
        if channel.enabled:
            log.warning("channel %s listening on %s", channel.name, channel.source.listen)
    print("courier: running; Ctrl-C to stop", file=sys.stderr, flush=True)
