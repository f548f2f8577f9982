"""Reloading the channel files into a running engine (``courier run`` on SIGHUP, the console).

The files are read and checked away from the reactor, as ``courier check`` does
(:func:`engine.channel.check.load_each`). A file with a problem is refused as a whole: the
channels it defined keep running as they are. Every other channel is compared with the
running one by its :class:`Prepared` fingerprint (its settings and the text of its mappings,
so a changed mapping is a change of every channel that uses it): unchanged channels are not
touched, changed ones are restarted, new ones started, and channels no longer defined (or
disabled) stop after finishing what is in flight. :meth:`engine.service.Engine.reload` does it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions

from engine.channel.check import clashes
from engine.channel.config import Channel
from engine.destinations.registry import plugin
from engine.errors import ConfigError
from engine.mapping import Mapping as PayloadMapping
from engine.mapping import load_mapping
from engine.spec import Problem
from engine.status.reporter import status_tls
from engine.tls import TLSSettings, server_options

ChannelLoader = Callable[[], tuple[list[Channel], list[Problem]]]
"""Reads the channel files: every channel and every problem (``load_each`` with the run's
environment). Called in a thread."""


@dataclass(frozen=True)
class Prepared:
    """A channel with its mappings compiled, ready to be built on the reactor."""

    channel: Channel
    mappings: dict[str, PayloadMapping]  # by destination name
    fingerprint: tuple[object, ...]
    """Equal for a channel that did not change: its settings and its mappings' text."""
    preloaded: dict[str, object] = field(default_factory=dict, compare=False)
    """By destination name: what its plugin's ``preload`` read from disk (a key, say)."""
    listener_tls: CertificateOptions | None = field(default=None, compare=False)
    """The listener's TLS options, its certificate and key read (None: plain TCP)."""
    reports_tls: object | None = field(default=None, compare=False)
    """The status reports' client TLS options, their files read (None: plain TCP)."""


def prepare(channel: Channel, serve_webhooks: bool = False) -> Prepared:
    """Reads every file the channel's parts need (its mappings, its TLS files, what its
    destinations' plugins read: ``DestinationPlugin.preload``), so that building them reads
    none: in a thread while the reactor runs. Raises ConfigError when one cannot be used."""
    mappings = {destination.name: load_mapping(destination.mapping) for destination in channel.destinations}
    texts = tuple(_mapping_text(destination.mapping) for destination in channel.destinations)
    preloaded = {
        destination.name: preload(channel, destination, serve_webhooks)
        for destination in channel.destinations
        if (preload := plugin(destination.type).preload) is not None
    }
    return Prepared(channel, mappings, (channel, texts), preloaded, *_tls(channel))


def _mapping_text(path: Path) -> bytes:
    """For the fingerprint; a file gone since it was loaded refuses its channel's file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read mapping file {path}: {exc.strerror}") from None


def _tls(channel: Channel) -> tuple[CertificateOptions | None, object | None]:
    """The listener's and the status reports' TLS options, their files read."""
    source, reports = channel.source.tls, channel.status_reports
    try:
        listener = None
        if source is not None:
            tls = TLSSettings(source.cert_file, source.key_file, source.ca_file, source.require_client_cert)
            listener = server_options(tls)
        return listener, None if reports is None else status_tls(reports)
    except (OSError, ValueError, crypto.Error, SSL.Error) as error:
        raise ConfigError(f"channel {channel.name}: cannot use its TLS files: {error}") from None


@dataclass(frozen=True)
class Refusal:
    """A file (or channel) not applied, and why, in one line (configuration only, never PHI)."""

    what: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did, by channel name; refused files left their channels running as they were."""

    unchanged: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()
    failed: tuple[Refusal, ...] = ()
    """Channels that were stopped but whose new version could not listen."""

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("restarted", self.restarted),
                ("added", self.added),
                ("removed", self.removed),
                ("failed", tuple(f.what for f in self.failed)),
                ("refused", tuple(r.what for r in self.refused)),
            )
            if names
        ]
        return "; ".join(parts) or "nothing changed"


@dataclass(frozen=True)
class Reading:
    """The channel files as read for a reload."""

    accepted: dict[str, Prepared]  # enabled channels of the files without problems, by name
    refused: tuple[Refusal, ...]
    refused_files: frozenset[Path | None]  # None: a problem of no one file, every file is refused


def read(load: ChannelLoader, serve_webhooks: bool = False) -> Reading:
    """Load and check the files, and prepare the channels of the files that passed (in a
    thread); a file with a channel that cannot be prepared is refused too."""
    channels, problems = load()
    by_file: dict[Path | None, list[str]] = {}
    for problem in problems:
        by_file.setdefault(problem.file, []).append(_one_line(problem))
    prepared = []
    for channel in channels:
        if channel.enabled and channel.file not in by_file:
            try:
                prepared.append(prepare(channel, serve_webhooks))
            except ConfigError as error:
                by_file.setdefault(channel.file, []).append(" ".join(str(error).split()))
    refused = tuple(
        Refusal(str(file or "the channel files"), "; ".join(found)) for file, found in by_file.items()
    )
    accepted = {p.channel.name: p for p in prepared if p.channel.file not in by_file}
    return Reading(accepted, refused, frozenset(by_file))


def _one_line(problem: Problem) -> str:
    """``line 3: source.listen: …`` (the file is named once, by the refusal)."""
    where = f"line {problem.line}: " if problem.line else ""
    key = f"{problem.key}: " if problem.key else ""
    return " ".join(f"{where}{key}{problem.message}".split())


@dataclass(frozen=True)
class Plan:
    unchanged: tuple[str, ...]
    restart: tuple[Prepared, ...]
    add: tuple[Prepared, ...]
    remove: tuple[str, ...]
    refused: tuple[Refusal, ...]
    """Channels that would clash with one that keeps running (a refused file's, say)."""


def plan(running: Mapping[str, Prepared], reading: Reading) -> Plan:
    """What to do with each channel, the running ones by name."""
    keep_all = None in reading.refused_files
    unchanged: list[str] = []
    changed: list[Prepared] = []
    remove: list[str] = []
    for name, current in running.items():
        new = reading.accepted.get(name)
        if keep_all or current.channel.file in reading.refused_files:
            unchanged.append(name)
        elif new is None:
            remove.append(name)
        elif new.fingerprint == current.fingerprint:
            unchanged.append(name)
        else:
            changed.append(new)
    added = [] if keep_all else [p for name, p in reading.accepted.items() if name not in running]
    staying = [running[name].channel for name in unchanged]
    refused: list[Refusal] = []
    restart: list[Prepared] = []
    add: list[Prepared] = []
    for prepared in (*changed, *added):
        reason = _clash(prepared.channel, staying)
        if reason is None:
            (restart if prepared.channel.name in running else add).append(prepared)
            continue
        refused.append(Refusal(str(prepared.channel.file), reason))
        if prepared.channel.name in running:  # its running version stays, and may clash too
            unchanged.append(prepared.channel.name)
            staying.append(running[prepared.channel.name].channel)
    return Plan(tuple(unchanged), tuple(restart), tuple(add), tuple(remove), tuple(refused))


def _clash(channel: Channel, staying: list[Channel]) -> str | None:
    """What ``courier check`` would say across files, against the channels that keep running."""
    found = [f"{key}: {message}" for other in staying for key, message in clashes(channel, other)]
    return f"{found[0]} (a channel kept running)" if found else None
