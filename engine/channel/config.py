"""A channel file (``channels/*.toml``) as frozen dataclasses, declared once in :data:`CHANNEL`.

One file is one channel: a **source** (an MLLP listener with its accept **filter**), the
**ack** policy, one or more **destinations** (each with its mapping, settings, retry queue)
and where **status reports** go back. Everything here is pure: reading the file and the
``*_file`` secrets happens in :func:`load_channel`, and no socket is opened.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.channel.conditions import Condition, condition_problem, parse_condition
from engine.channel.endpoints import client_endpoint_problem, server_endpoint_problem
from engine.channel.order import order_by_problem
from engine.destinations.registry import destination_types, settings_problems, settings_specs
from engine.message.charsets import lookup
from engine.spec import (
    Problem,
    Spec,
    boolean,
    integer,
    number,
    obj,
    objects,
    parse,
    path,
    string,
    string_list,
    table,
)

MESSAGE_TYPE = re.compile(r"^[A-Z][A-Z0-9]{2}\^([A-Z][A-Z0-9]{2}|\*)$")
DEFAULT_VERSIONS = (
    "2.3",
    "2.3.1",
    "2.4",
    "2.5",
    "2.5.1",
    "2.6",
    "2.7",
    "2.7.1",
    "2.8",
    "2.8.1",
    "2.8.2",
)
STATUS_EVENTS = ("accepted", "delivered", "read", "failed")
DESTINATION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _message_type_problem(text: str) -> str | None:
    if MESSAGE_TYPE.match(text):
        return None
    return f"{text!r} is not a message type such as 'ORU^R01' or 'MDM^*'"


def _charset_problem(name: str) -> str | None:
    if lookup(name) is None:
        return f"unknown character set {name!r} (use a Python codec name such as 'cp1252')"
    return None


def _destination_name_problem(name: str) -> str | None:
    if DESTINATION_NAME.match(name):
        return None
    return "use lower-case letters, digits, '-' and '_' (it names the queue)"


# -- source ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """Server TLS for the MLLP listener; a ``ca_file`` plus ``require_client_cert`` is mutual TLS."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None
    require_client_cert: bool


TLS = Spec(
    "tls",
    "TLS on the listener (the `listen` string stays `tcp:`).",
    (
        path("cert_file", "PEM certificate (chain) the listener presents.", required=True),
        path("key_file", "PEM private key of that certificate.", required=True),
        path("ca_file", "PEM CA certificates that client certificates must chain to."),
        boolean("require_client_cert", "Refuse clients without a certificate from `ca_file`.", default=False),
    ),
    build=Tls,
)


@dataclass(frozen=True)
class ChannelFilter:
    """Which messages this channel accepts; see :mod:`engine.channel.filter` for the verdicts."""

    message_types: tuple[str, ...]
    sending_applications: tuple[str, ...]
    sending_facilities: tuple[str, ...]
    processing_ids: tuple[str, ...]
    versions: tuple[str, ...]
    conditions: tuple[Condition, ...]
    on_condition_miss: str

    events_by_type: Mapping[str, frozenset[str] | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        conditions = tuple(c if isinstance(c, Condition) else parse_condition(c) for c in self.conditions)
        object.__setattr__(self, "conditions", conditions)
        object.__setattr__(self, "events_by_type", _events_by_type(self.message_types))


def _events_by_type(message_types: tuple[str, ...]) -> Mapping[str, frozenset[str] | None]:
    """``("ORU^R01", "MDM^*")`` → ``{"ORU": {"R01"}, "MDM": None}``: None accepts any event."""
    events: dict[str, set[str] | None] = {}
    for message_type in message_types:
        type_, event = message_type.split("^")
        if event == "*" or events.get(type_, set()) is None:
            events[type_] = None
        else:
            events.setdefault(type_, set()).add(event)
    return MappingProxyType({t: None if e is None else frozenset(e) for t, e in events.items()})


FILTER = Spec(
    "filter",
    (
        "The accept filter. A message whose type, event, processing id, version or sender is not "
        "listed is rejected (AR, ERR-3 200/201/202/203/207). A message that fails a `conditions` "
        "entry is handled by `on_condition_miss`."
    ),
    (
        string_list(
            "message_types",
            "MSH-9.1^MSH-9.2 values accepted; `*` accepts any event.",
            required=True,
            check=_message_type_problem,
            example=("ORU^R01", "MDM^*"),
        ),
        string_list("sending_applications", "MSH-3.1 values accepted; empty accepts any.", default=()),
        string_list("sending_facilities", "MSH-4.1 values accepted; empty accepts any.", default=()),
        string_list(
            "processing_ids",
            "MSH-11.1 values accepted (P production, T training, D debugging).",
            default=("P",),
            choices=("P", "T", "D"),
        ),
        string_list("versions", "MSH-12.1 values accepted.", default=DEFAULT_VERSIONS),
        string_list(
            "conditions",
            "Field conditions, all of which must hold: "
            "`<HL7 path> <op> <value>` with op `=`, `!=`, `in` (comma list) or `exists`.",
            default=(),
            check=condition_problem,
            example=("OBR-25 in F,C",),
        ),
        string(
            "on_condition_miss",
            "`filter`: ACK AA, store as FILTERED, deliver nothing (so "
            "preliminary results do not alarm the sender). `reject`: AR with ERR-3 207.",
            default="filter",
            choices=("filter", "reject"),
        ),
    ),
    build=ChannelFilter,
)


@dataclass(frozen=True)
class Validation:
    level: str
    version: str | None
    max_bytes: int
    max_components: int
    timeout_s: float
    memory_mb: int
    workers: int


VALIDATION = Spec(
    "validation",
    (
        "Structure validation with hl7apy, in worker processes the engine can kill. Above a "
        "ceiling, or past its time or memory limit, a message is refused (AR, ERR-3 207)."
    ),
    (
        string(
            "level",
            "`off`; `tolerant`: reject what hl7apy cannot parse at all; `strict`: also "
            "cardinality, data types and lengths (AR with the first problem found).",
            default="off",
            choices=("off", "tolerant", "strict"),
        ),
        string("version", "Validate against this HL7 version instead of MSH-12.", example="2.5"),
        integer(
            "max_bytes",
            "Larger messages are refused unvalidated (text costs ~0.01 ms per KB).",
            default=16 * 1024 * 1024,
            min=1024,
        ),
        integer(
            "max_components",
            "Messages with more separators (field, component, repetition, subcomponent) are "
            "refused unvalidated: 20,000 take ~2 s and ~30 MB.",
            default=20_000,
            min=100,
        ),
        number(
            "timeout_s",
            "A validation still running after this long is refused and its worker killed.",
            default=10.0,
            min=0.1,
        ),
        integer(
            "memory_mb",
            "Address-space limit of a worker (RLIMIT_AS); a validation that reaches it is refused.",
            default=512,
            min=128,
        ),
        integer("workers", "Worker processes that validate at once for this channel.", default=2, min=1),
    ),
    build=Validation,
)


@dataclass(frozen=True)
class Source:
    listen: str
    tls: Tls | None
    max_message_bytes: int
    idle_timeout_s: float
    frame_timeout_s: float
    max_connections: int
    max_pending_frames: int
    charset: str
    force_charset: bool
    strict_charset: bool
    mllp_release2: bool
    filter: ChannelFilter
    validation: Validation


SOURCE = Spec(
    "source",
    "The MLLP listener that receives messages from the sending system.",
    (
        string(
            "listen",
            "Twisted server endpoint string.",
            required=True,
            check=server_endpoint_problem,
            example="tcp:2575:interface=127.0.0.1",
        ),
        obj("tls", TLS, default=None),
        integer(
            "max_message_bytes",
            "Larger frames are refused and the connection closed.",
            default=16 * 1024 * 1024,
            min=1024,
        ),
        number("idle_timeout_s", "Close a connection silent for this long.", default=300.0, min=1),
        number(
            "frame_timeout_s",
            "Close a connection whose started frame is not finished in time.",
            default=30.0,
            min=1,
        ),
        integer("max_connections", "Refuse connections beyond this many.", default=64, min=1),
        integer(
            "max_pending_frames",
            "Pause reading a connection with this many frames waiting.",
            default=16,
            min=1,
        ),
        string(
            "charset",
            "Character set when MSH-18 is empty (HL7's default is ASCII).",
            default="ascii",
            check=_charset_problem,
            example="cp1252",
        ),
        boolean("force_charset", "Always use `charset`, whatever MSH-18 says.", default=False),
        boolean(
            "strict_charset",
            "Refuse (AR, ERR-3 207) a message whose MSH-18 names a character set Courier cannot "
            "read, or whose bytes are not valid in it, instead of reading it with `charset` "
            "and a warning.",
            default=False,
        ),
        boolean(
            "mllp_release2",
            "MLLP release 2: answer each frame with a commit byte (0x06 / 0x15) before the ACK.",
            default=False,
        ),
        obj("filter", FILTER),
        obj("validation", VALIDATION),
    ),
    build=Source,
)


# -- ack ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    mode: str
    duplicates: str
    duplicate_window_s: float


ACK = Spec(
    "ack",
    "How the channel acknowledges; an AA/CA is sent only once the message is stored.",
    (
        string(
            "mode",
            "`auto`: enhanced (CA/CE/CR) when MSH-15 or MSH-16 is set, else original (AA/AE/AR).",
            default="auto",
            choices=("auto", "original", "enhanced"),
        ),
        string(
            "duplicates",
            "A resend (same sender, control id and body): `ack` answers with the "
            "same ACK and delivers nothing again; `reject` answers AR with ERR-3 205.",
            default="ack",
            choices=("ack", "reject"),
        ),
        number(
            "duplicate_window_s", "How long a message counts as a duplicate.", default=7 * 24 * 3600.0, min=0
        ),
    ),
    build=Ack,
)


# -- destinations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    max_attempts: int
    initial_delay_s: float
    max_delay_s: float
    factor: float
    jitter: float
    max_age_s: float


RETRY = Spec(
    "retry",
    "The destination queue's backoff; past either limit a delivery is ERROR.",
    (
        integer(
            "max_attempts", "Attempts before the delivery goes to ERROR (dead letter).", default=20, min=1
        ),
        number("initial_delay_s", "Wait before the first retry.", default=30.0, min=0),
        number("max_delay_s", "Longest wait between attempts.", default=3600.0, min=0),
        number("factor", "Each wait is the previous one times this.", default=2.0, min=1.0),
        number("jitter", "Random spread of each wait, as a fraction of it.", default=0.1, min=0.0, max=1.0),
        number(
            "max_age_s",
            "Give up on a delivery this long after it was queued (or last requeued).",
            default=72 * 3600.0,
            min=1,
        ),
    ),
    build=Retry,
)


@dataclass(frozen=True)
class RateLimit:
    per_second: float | None
    burst: int


RATE_LIMIT = Spec(
    "rate_limit",
    "A token bucket in front of the vendor API.",
    (
        number("per_second", "Requests per second; unset means no limit.", min=0.01, example=30),
        integer("burst", "Requests allowed at once after a quiet spell.", default=1, min=1),
    ),
    build=RateLimit,
)


@dataclass(frozen=True)
class StatusPolling:
    poll: bool
    poll_every_s: float
    give_up_after_s: float


STATUS_POLLING = Spec(
    "status",
    "Polling the vendor for delivery status (where it has an API).",
    (
        boolean("poll", "Poll until a final state.", default=True),
        number("poll_every_s", "Wait between polls of one message.", default=300.0, min=1),
        number("give_up_after_s", "Stop polling this long after sending.", default=72 * 3600.0, min=1),
    ),
    build=StatusPolling,
)


@dataclass(frozen=True)
class Destination:
    name: str
    type: str
    mapping: Path
    settings: Mapping[str, Any]
    retry: Retry
    rate_limit: RateLimit
    concurrency: int
    status: StatusPolling
    order_by: str | None = None


DESTINATION = Spec(
    "destination",
    "Where mapped messages go: one vendor API, with its own queue.",
    (
        string(
            "name",
            "Names the queue in logs and `courier` commands; unique across all channels.",
            required=True,
            check=_destination_name_problem,
            example="gp-practice",
        ),
        string("type", "The vendor API.", required=True, choices=destination_types()),
        path(
            "mapping",
            "Mapping file, relative to this channel file.",
            required=True,
            example="../mappings/oru_r01_to_gp.toml",
        ),
        table(
            "settings",
            "The vendor's settings, checked against the destination type's own spec.",
            discriminator="type",
            variants=settings_specs,
        ),
        obj("retry", RETRY),
        obj("rate_limit", RATE_LIMIT),
        integer(
            "concurrency",
            "Deliveries in flight at once, across all nodes (1 keeps message order).",
            default=1,
            min=1,
            max=64,
        ),
        obj("status", STATUS_POLLING),
        string(
            "order_by",
            "HL7 paths whose values (a patient identifier) make deliveries go strictly one after "
            "another while different values go in parallel up to `concurrency`; a later delivery "
            "waits while an earlier one is in retry. Stored only as a keyed hash.",
            example="{PID-3.1}",
            check=order_by_problem,
        ),
    ),
    build=Destination,
)


# -- status reports -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None


CLIENT_TLS = Spec(
    "tls",
    "TLS towards the sending system's listener (`to` stays `tcp:`).",
    (
        path("ca_file", "PEM CA certificates the peer's certificate must chain to."),
        path("cert_file", "PEM client certificate, for mutual TLS."),
        path("key_file", "PEM private key of `cert_file`."),
    ),
    build=ClientTls,
)


@dataclass(frozen=True)
class StatusReports:
    to: str
    events: tuple[str, ...]
    connect_timeout_s: float
    ack_timeout_s: float
    tls: ClientTls | None


STATUS_REPORTS = Spec(
    "status_reports",
    (
        "Delivery outcomes sent back to the sending system as HL7 application ACKs, over a new "
        "MLLP connection. Leave the section out to send none."
    ),
    (
        string(
            "to",
            "Twisted client endpoint string of the sending system's MLLP listener.",
            required=True,
            check=client_endpoint_problem,
            example="tcp:host=127.0.0.1:port=2590",
        ),
        string_list(
            "events", "Which outcomes to report.", default=("delivered", "failed"), choices=STATUS_EVENTS
        ),
        number(
            "connect_timeout_s",
            "Give up connecting after this long (then retry later).",
            default=10.0,
            min=0.1,
        ),
        number(
            "ack_timeout_s", "Wait this long for the peer's ACK (then retry later).", default=30.0, min=0.1
        ),
        obj("tls", CLIENT_TLS, default=None),
    ),
    build=StatusReports,
)


# -- channel --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    name: str
    description: str
    enabled: bool
    source: Source
    ack: Ack
    destinations: tuple[Destination, ...]
    status_reports: StatusReports | None
    file: Path


CHANNEL = Spec(
    "channel",
    (
        "One channel file: a source (MLLP listener and filter) → destinations, plus the ACK policy "
        "and status reports."
    ),
    (
        string(
            "name",
            "Unique name of the channel (logs, store, commands).",
            required=True,
            example="lis-oru-to-gp",
        ),
        string("description", "What the channel is for, for the next analyst.", default=""),
        boolean("enabled", "A disabled channel is checked but not started.", default=True),
        obj("source", SOURCE, required=True),
        obj("ack", ACK),
        objects("destinations", DESTINATION, required=True),
        obj("status_reports", STATUS_REPORTS, default=None),
    ),
)


def _cross_checks(data: Mapping[str, Any], values: Mapping[str, Any]) -> list[Problem]:
    """Rules that span keys, which a single field's spec cannot see."""
    problems: list[Problem] = []
    source = data.get("source", {})
    if "tls" in source and str(source.get("listen", "")).startswith("ssl:"):
        problems.append(
            Problem("source.tls", "give TLS either in an ssl: listen string or in [source.tls], not both")
        )
    seen: set[str] = set()
    for i, destination in enumerate(values["destinations"] or ()):
        if destination is None:
            continue
        if destination.name in seen:
            problems.append(
                Problem(
                    f"destinations[{i}].name", f"another destination is already named {destination.name!r}"
                )
            )
        seen.add(destination.name)
        written = (data["destinations"][i] or {}).get("settings") or {}
        problems += [
            Problem(f"destinations[{i}].settings.{p.key}", p.message)
            for p in settings_problems(destination.type, destination.settings, written)
        ]
        if destination.retry.initial_delay_s > destination.retry.max_delay_s:
            problems.append(Problem(f"destinations[{i}].retry.initial_delay_s", "is longer than max_delay_s"))
    return problems


def parse_channel(
    file: Path, text: str, *, env: Mapping[str, str] | None
) -> tuple[Channel | None, list[Problem]]:
    """Parse channel TOML ``text`` read from ``file``.

    ``env`` None skips ``${VAR}`` and ``*_file`` resolution. Problems carry key paths; only
    TOML syntax errors carry a line (see :func:`engine.spec.locate_problems` for the rest).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        return None, [Problem("", f"not valid TOML: {exc}", file, int(line[1]) if line else None)]
    values, problems = parse(CHANNEL, data, env=env, base_dir=file.parent)
    problems += _cross_checks(data, values)
    if data.get("destinations") == []:
        problems.append(Problem("destinations", "a channel needs at least one destination"))
    if problems:
        return None, problems
    return Channel(file=file, **values), problems
