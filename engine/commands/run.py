"""``courier run``: start every channel's listener and queue from the channel files.

``--webhooks ENDPOINT`` also serves the vendors' webhooks (URL scheme in :mod:`engine.service`),
``--admin ENDPOINT`` the health checks and the web console (:mod:`engine.admin`).
``--sandbox`` runs the four vendor sandboxes and the ``http`` receiver too, and makes the
example channels work as they are: each secret variable left unset of a destination aimed at
a sandbox takes that sandbox's random credential (``var/sandbox/credentials.json``, made
once), each destination type's sandbox hook completes its settings and prepares it
(``SandboxHook``: a token authorised, a demo key uploaded), and the sandboxes' webhook URLs
point at the engine's webhooks.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.defer import inlineCallbacks

from engine import logs
from engine.admin import options as admin_options
from engine.commands.exits import serve
from engine.commands.sandbox import add_ports_argument
from engine.commands.store_options import add_store_arguments
from engine.node import DEFAULT_LEASE_S
from engine.status import webhook_limits

if TYPE_CHECKING:
    from courier_sandbox.credentials import Credentials
    from engine.channel.config import Channel, Destination
    from engine.delivery import DeliveryQueue
    from engine.spec import Problem

log = logging.getLogger("engine.run")

SANDBOX_WEBHOOKS = "tcp:18480:interface=127.0.0.1"
"""Where ``--sandbox`` serves the webhooks when ``--webhooks`` is not given."""
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
        help="also run the vendor sandboxes and the http receiver on loopback (the demo); they "
        "accept only the random credentials kept in var/sandbox/credentials.json (made once, mode "
        "0600), which fill every secret variable left unset of a destination aimed at them (a "
        "variable you set wins). `courier check --skip-env` checks such channels without the variables",
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
    parser.add_argument(
        "--node-name",
        metavar="NAME",
        help="this engine's name among the nodes sharing the store (default: the host name); "
        "give each process its own, and keep it across restarts",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_S,
        metavar="S",
        help="how long a node's claim on a send, an outbox or a job lasts unless renewed: the "
        f"longest another node waits before taking over a dead node's work (default: {DEFAULT_LEASE_S:g})",
    )
    parser.add_argument("--webhook-cert", type=Path, metavar="PEM", help="serve the webhooks over TLS")
    parser.add_argument("--webhook-key", type=Path, metavar="PEM", help="private key of --webhook-cert")
    webhook_limits.add_arguments(parser)
    admin_options.add_arguments(parser)
    logs.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from courier_sandbox import DEFAULT_PORTS, default_base_urls
    from courier_sandbox.credentials import CREDENTIALS_FILE, CredentialsError, load_or_create
    from engine.channel.check import load_each
    from engine.errors import ConfigError
    from engine.node import NodeIdentity
    from engine.service import build_engine
    from engine.spec import SpecError
    from engine.store import load_cipher, open_store
    from engine.tls import TLSSettings

    try:
        credentials = load_or_create(CREDENTIALS_FILE) if args.sandbox else None
    except (ConfigError, CredentialsError) as error:
        print(f"courier run: {error}", file=sys.stderr)
        return 2
    sandbox_ports = {**DEFAULT_PORTS, **args.sandbox_ports}
    base_urls = default_base_urls(sandbox_ports)

    def read_channels() -> tuple[list[Channel], list[Problem]]:
        """The channel files as this run reads them, at start and on every reload."""
        env = None if credentials is None else with_sandbox_secrets(list(args.paths), credentials, base_urls)
        channels, problems = load_each(list(args.paths), env=env)
        return (with_sandbox_settings(channels, base_urls) if args.sandbox else channels), problems

    try:
        channels, problems = read_channels()
        if problems:
            raise SpecError(problems)
    except ConfigError as error:
        print(f"courier run: the channel files have problems:\n{error}", file=sys.stderr)
        return 2
    if not channels:
        print("courier run: no channel files found", file=sys.stderr)
        return 2
    if args.lease_seconds < 1:
        print("courier run: --lease-seconds must be at least 1", file=sys.stderr)
        return 2
    store = open_store(
        args.store,
        reactor=reactor,
        cipher=load_cipher(key_file=args.key_file),
        durability=args.durability,
        node=NodeIdentity.this_process(args.node_name),
        lease_s=args.lease_seconds,
    )
    if bool(args.webhook_cert) != bool(args.webhook_key):
        print("courier run: give both --webhook-cert and --webhook-key", file=sys.stderr)
        return 2
    webhook_tls = TLSSettings(args.webhook_cert, args.webhook_key) if args.webhook_cert else None
    if args.sandbox and args.webhooks is None:
        args.webhooks = SANDBOX_WEBHOOKS
    try:
        admin = _admin_settings(args, channels)
    except ConfigError as error:
        print(f"courier run: {error}", file=sys.stderr)
        return 2
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
            load_channels=read_channels,
            lease_s=args.lease_seconds,
        )
    except ConfigError as error:
        print(f"courier run: {error}", file=sys.stderr)
        return 2
    if args.sandbox:
        engine.queue_setup = lambda queues: start_sandbox_hooks(reactor, queues, base_urls)
    started = reload_on_hangup(reactor, engine)
    console = None
    if admin is not None:
        from engine.admin.service import serve_admin
        from engine.metrics import MetricsResource

        console = serve_admin(
            engine, store, admin, extra={b"metrics": MetricsResource(engine.metrics.registry)}
        )

    def start():
        d = store.start()
        if args.sandbox:
            d.addCallback(lambda _: _with_sandboxes(reactor, engine, credentials, sandbox_ports))
        else:
            d.addCallback(lambda _: engine.start())
        d.addCallback(started)
        if console is not None:
            d.addCallback(lambda _: console.listening)
            d.addCallback(lambda _: _announce_console(admin, console, args.sandbox))
        return d.addCallback(lambda _: _announce(channels, args.log_format))

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
    from courier_sandbox import default_base_urls
    from engine.channel.check import channels_as_written
    from engine.commands.sandbox_secrets import fill_sandbox_secrets

    destinations = [d for channel in channels_as_written(paths) for d in channel.destinations]
    filled = fill_sandbox_secrets(destinations, credentials, base_urls or default_base_urls(), env)
    for name in sorted(filled.keys() - env.keys()):
        log.warning("%s is not set: using the sandbox's own credential", name)
    return filled


def reload_on_hangup(reactor, engine) -> Callable[[object], None]:
    """SIGHUP reloads the channel files (:meth:`Engine.reload`, which logs what it did) once
    the engine has started; returns what to call when it has."""
    running = False

    def started(_: object) -> None:
        nonlocal running
        running = True

    def reload() -> None:
        if not running:
            log.warning("SIGHUP while starting: the channel files are not reloaded")
            return
        engine.reload().addErrback(
            lambda failure: log.error("reload failed, nothing changed: %s", failure.getErrorMessage())
        )

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))
    return started


@inlineCallbacks
def _with_sandboxes(reactor, engine, credentials, ports):
    """Sandboxes up, engine started (running the sandbox hooks: ``Engine.queue_setup``),
    sandbox webhooks at the engine."""
    from courier_sandbox import start_sandboxes

    sandboxes = yield start_sandboxes(reactor, ports=ports, credentials=credentials, state_dir=SANDBOX_STATE)
    reactor.addSystemEventTrigger("during", "shutdown", sandboxes.stop)  # after the engine: saves
    yield engine.start()
    if engine.webhooks is not None:
        point_sandboxes_at_webhooks(sandboxes, engine)


def with_sandbox_settings(channels: Sequence[Channel], base_urls: Mapping[str, str]) -> list[Channel]:
    """Each destination as its type's sandbox hook prepares it (``SandboxHook.prepare``), told
    whether it is aimed at its sandbox (``base_urls`` by type)."""
    from engine.commands.sandbox_secrets import aimed_at_sandbox
    from engine.destinations.registry import plugin

    def prepared(destination: Destination) -> Destination:
        hook = plugin(destination.type).sandbox
        if hook is None or hook.prepare is None:
            return destination
        return hook.prepare(destination, aimed_at_sandbox(destination, base_urls, {}))

    return [
        replace(channel, destinations=tuple(prepared(d) for d in channel.destinations))
        for channel in channels
    ]


@inlineCallbacks
def start_sandbox_hooks(reactor, queues: Iterable[DeliveryQueue], base_urls: Mapping[str, str]):
    """Each queue's ``SandboxHook.start`` (tokens loaded, queues not started yet)."""
    from engine.commands.sandbox_secrets import aimed_at_sandbox
    from engine.destinations.registry import plugin

    for queue in queues:
        hook = plugin(queue.config.type).sandbox
        if hook is not None and hook.start is not None:
            yield hook.start(reactor, queue, aimed_at_sandbox(queue.config, base_urls, {}))


def point_sandboxes_at_webhooks(sandboxes, engine) -> None:
    """Each sandbox setting a plugin names for a webhook resource (``SandboxHook.webhook_settings``)
    gets the URL of the engine's first such webhook."""
    from engine.destinations.registry import plugins

    base = f"{engine.webhook_scheme}://127.0.0.1:{engine.webhook_port()}"
    by_type = {sandbox.name: sandbox for sandbox in sandboxes}
    targets = {
        resource: (type_, setting)
        for type_, found in plugins().items()
        if found.sandbox is not None
        for resource, setting in found.sandbox.webhook_settings.items()
    }
    configured = set()
    for path, resource in sorted(engine.webhook_resources.items()):
        type_, setting = targets.get(type(resource), (None, None))
        sandbox = by_type.get(type_)
        if sandbox is not None and (type_, setting) not in configured:
            sandbox.configure({setting: f"{base}/{path}"})
            configured.add((type_, setting))


def _admin_settings(args: argparse.Namespace, channels: Sequence[Channel]):
    """The admin endpoint's settings from the options (None without ``--admin``); under
    ``--sandbox`` it is served by default, to a one-time operator unless operators are given."""
    from engine.admin.service import AdminSettings
    from engine.errors import ConfigError
    from engine.tls import TLSSettings

    if args.sandbox and args.admin is None:
        args.admin = admin_options.SANDBOX_ADMIN
    if args.admin is None:
        return None
    operators = admin_options.load_operators(args)
    if operators is None:
        if not args.sandbox:
            raise ConfigError(
                "--admin needs its operators: give --admin-operators-file or --admin-operators-env"
            )
        operators = admin_options.one_time_operators()
    if bool(args.admin_cert) != bool(args.admin_key):
        raise ConfigError("give both --admin-cert and --admin-key")
    others = {f"channel {c.name}'s listener": c.source.listen for c in channels if c.enabled}
    if args.webhooks:
        others["the webhooks"] = args.webhooks
    admin_options.check_own_port(args.admin, others)
    tls = TLSSettings(args.admin_cert, args.admin_key) if args.admin_cert else None
    return AdminSettings(args.admin, operators, tls, args.ready_max_held)


def _announce_console(admin, listener, sandbox: bool) -> None:
    """Where the console is; under ``--sandbox`` with its one-time operator, the token too
    (printed once, on the terminal, never logged)."""
    scheme = "https" if admin.tls is not None or admin.endpoint.startswith("ssl:") else "http"
    url = f"{scheme}://127.0.0.1:{listener.port.getHost().port}/"
    one_time = admin.operators.secrets.get(admin_options.SANDBOX_OPERATOR) if sandbox else None
    if one_time is not None:
        print(
            f"courier: console at {url} (operator {admin_options.SANDBOX_OPERATOR}, "
            f"token for this run only: {one_time})",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"courier: console at {url}", file=sys.stderr, flush=True)


def _announce(channels, log_format: str) -> None:
    for channel in channels:
        if channel.enabled:
            log.warning(
                "channel %s listening on %s",
                channel.name,
                channel.source.listen,
                extra={"channel": channel.name, "event": "listening"},
            )
    if log_format == "json":  # stderr stays JSON lines only
        log.warning("courier: running", extra={"event": "running"})
    else:
        print("courier: running; Ctrl-C to stop", file=sys.stderr, flush=True)
