"""What a destination plugin declares, so that the core never names a vendor.

A plugin is one :class:`DestinationPlugin` object, found through the entry-point group
``courier.destinations`` (:mod:`engine.destinations.registry`); the entry point's name is the
channel's destination ``type`` and the mapping's ``output``. Only ``destination`` is required:
the :class:`~engine.destinations.base.Destination` class builds requests, classifies answers
and declares ``settings_spec``, ``payload_spec`` and ``settings_problems``. Everything else is
optional and asked for by the core only through the hooks below.

A plugin's ``courier <name> …`` commands are entry points of their own, in the group
``courier.commands`` (name → a module with ``SUMMARY``, ``add_arguments(parser)`` and
``run(args) -> int``), so that building the command line imports no plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.destinations.base import Destination, TokenProvider

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from engine.channel.config import Channel
    from engine.channel.config import Destination as DestinationConfig
    from engine.delivery.queue import DeliveryQueue
    from engine.delivery.tokens import StoredTokens
    from engine.delivery.tracker import StatusTracker
    from engine.spec import Spec
    from engine.status.reporter import StatusReporter
    from engine.status.webhooks import Route
    from engine.store.base import Store


@dataclass(frozen=True)
class StatusPolling:
    """How the vendor's status API is polled (:mod:`engine.delivery.polling`)."""

    final_states: frozenset[str]
    """Delivery states after which polling stops."""
    min_interval_s: float = 0.0
    """The shortest interval between two polls the vendor allows; a shorter ``poll_every_s``
    is raised to it."""
    expiry: Callable[[Mapping[str, Any]], float | None] | None = None
    """When the vendor expires a message, read from the mapped payload (epoch seconds): polled
    once just before and once just after it."""


@dataclass(frozen=True)
class WebhookContext:
    """What a plugin's webhook factory gets for one destination of one channel."""

    reactor: Any
    channel: Channel
    config: DestinationConfig
    store: Store
    reporter: StatusReporter
    tracker: StatusTracker
    serve: bool
    """Whether webhooks are served (``courier run --webhooks``); pollers run either way."""
    preloaded: Any = None
    """What the plugin's ``preload`` read for this destination (None without one)."""

    @property
    def base_path(self) -> str:
        """``<type>/<channel>/<destination>``: where this destination's routes live."""
        return f"{self.config.type}/{self.channel.name}/{self.config.name}"


@dataclass(frozen=True)
class Webhooks:
    """A destination's authenticated webhook routes, and services that fetch the same traffic
    by polling (Twisted services the engine starts and stops)."""

    routes: list[Route] = field(default_factory=list)
    pollers: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class SandboxHook:
    """What ``courier run --sandbox`` does for destinations of this type; ``aimed`` says whether
    the destination's base URL is on this type's sandbox (its own package, found by type)."""

    prepare: Callable[[DestinationConfig, bool], DestinationConfig] | None = None
    """Settings completed before the engine is built (a demo key, say)."""
    start: Callable[[Any, DeliveryQueue, bool], Deferred[None] | None] | None = None
    """Run once the stored tokens are loaded and before the queues start (authorise, upload)."""
    webhook_settings: Mapping[type, str] = field(default_factory=dict)
    """Webhook resource class → the sandbox setting that receives its URL."""
    secret_settings: Mapping[str, str] = field(default_factory=dict)
    """Secret setting → the field of :class:`courier_sandbox.credentials.Credentials` its
    sandbox accepts, filled in under ``--sandbox`` when the user left the variable unset."""
    url_setting: str = "base_url"
    """The setting whose URL says whether a destination is aimed at this type's sandbox."""


@dataclass(frozen=True)
class AccountRate:
    """A vendor's limit on a whole account (an API client, a key), shared by every destination
    that uses it, on every node: the queue books each send against it in the store."""

    key: str
    """Names the account, prefixed with the vendor's type so two vendors never share one. It is
    stored only as a keyed hash (it may be a client id)."""
    per_second: float
    burst: int = 1


@dataclass(frozen=True)
class DestinationPlugin:
    """Everything the core knows about one destination type."""

    destination: type[Destination]
    polling: StatusPolling | None = None
    """None: a SENT delivery is never polled."""
    webhooks: Callable[[WebhookContext], Webhooks] | None = None
    preload: Callable[[Channel, DestinationConfig, bool], Any] | None = None
    """Reads from disk what ``webhooks`` will need (a private key, say), given the channel, the
    destination and whether webhooks are served. Called away from the reactor, with the
    channel files (at start, and in a reload's thread), since the reactor must not wait for a
    disk or a passphrase's key derivation; raises ConfigError when it cannot. Its result is
    ``WebhookContext.preloaded``."""
    token: Callable[[Channel, DestinationConfig, StoredTokens], TokenProvider | None] | None = None
    """The stored token a destination reads (:mod:`engine.delivery.tokens`), or None."""
    on_start: Callable[[Any, DeliveryQueue], Deferred[None] | None] | None = None
    """Run for each queue of this type before the engine starts (e.g. exchange a one-time code
    for a token); a failure should be logged, not raised."""
    account_rate: Callable[[Mapping[str, Any]], AccountRate | None] | None = None
    """The account-wide limit a destination's settings put it under, or None."""
    conversations: bool = False
    """The vendor threads follow-ups into conversations (:mod:`engine.delivery.conversations`)."""
    sandbox: SandboxHook | None = None

    @property
    def kind(self) -> str:
        return self.destination.kind

    @property
    def settings_spec(self) -> Spec:
        return self.destination.settings_spec

    @property
    def payload_spec(self) -> Spec | None:
        return self.destination.payload_spec
