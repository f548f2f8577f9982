"""``courier check`` and ``courier run``'s loading: every channel file, its mappings, and the
rules that span files (two channels on one port, duplicate channel or destination names).

All problems are collected, each printed as ``file:line: key.path: message``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from engine.channel.config import Channel, Destination, parse_channel
from engine.channel.endpoints import addresses_clash, listen_address
from engine.delivery.polling import poll_interval
from engine.destinations.registry import payload_spec_for
from engine.errors import ConfigError
from engine.mapping import load_mapping
from engine.spec import Problem, Spec, SpecError, key_lines, locate, locate_problems, suggest


@dataclass(frozen=True)
class _Loaded:
    channel: Channel
    lines: Mapping[tuple[str, ...], int]


def channel_files(paths: Iterable[Path]) -> list[Path]:
    """The ``*.toml`` files named by ``paths``: files as given, directories searched (sorted)."""
    files: list[Path] = []
    for given in paths:
        files.extend(sorted(given.glob("*.toml")) if given.is_dir() else [given])
    return files


def check(paths: list[Path], *, skip_env: bool, env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem in the channels (and their mappings) under ``paths``; [] when all is well.

    ``skip_env`` neither resolves ``${VAR}`` nor reads ``*_file`` secrets, for CI machines
    that do not have them.
    """
    resolved_env = None if skip_env else (os.environ if env is None else env)
    return _load(paths, resolved_env)[1]


def warnings(paths: list[Path]) -> list[Problem]:
    """What is allowed but will not run as written: a status poll interval the vendor makes
    longer. Printed by ``courier check`` with ``warning:``; they do not fail the check."""
    found: list[Problem] = []
    for entry in _load(paths, None)[2]:
        for i, destination in enumerate(entry.channel.destinations):
            status = destination.status
            applied = poll_interval(destination.type, status)
            if status.poll and applied != status.poll_every_s:
                key = f"destinations[{i}].status.poll_every_s"
                message = (
                    f"warning: {destination.type} allows fewer status polls: they will be "
                    f"{applied:.0f} s apart, not {status.poll_every_s:.0f} s"
                )
                found.append(Problem(key, message, entry.channel.file, locate(entry.lines, key)))
    return found


def load_channels(paths: list[Path], *, env: Mapping[str, str] | None = None) -> list[Channel]:
    """The channels under ``paths`` for ``courier run``; raise :class:`SpecError` on any problem."""
    channels, problems = load_each(paths, env=env)
    if problems:
        raise SpecError(problems)
    return channels


def load_each(
    paths: list[Path], *, env: Mapping[str, str] | None = None
) -> tuple[list[Channel], list[Problem]]:
    """The channels under ``paths`` and every problem, each naming its file: a reload refuses
    the files with problems one by one and applies the others."""
    channels, problems, _ = _load(paths, os.environ if env is None else env)
    return channels, problems


def channels_as_written(paths: list[Path]) -> list[Channel]:
    """The channels under ``paths`` with ``${VAR}`` unresolved and ``*_file`` secrets unread,
    to see which variables they need; their problems are for :func:`load_channels` to report."""
    return _load(paths, None)[0]


def _load(
    paths: list[Path], env: Mapping[str, str] | None
) -> tuple[list[Channel], list[Problem], list[_Loaded]]:
    loaded: list[_Loaded] = []
    problems: list[Problem] = []
    for file in channel_files(paths):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(Problem("", f"cannot read channel file: {exc.strerror}", file))
            continue
        if is_mapping_file(file, text):
            problems += _standalone_mapping_problems(file)
            continue
        channel, found = parse_channel(file, text, env=env)
        if channel is not None:
            found += _mapping_problems(channel)
            loaded.append(_Loaded(channel, key_lines(text)))
        problems += locate_problems(found, file, text)
    problems += _clashes(loaded)
    return [entry.channel for entry in loaded], problems, loaded


def _clashes(loaded: list[_Loaded]) -> list[Problem]:
    """Two channels may not share a name, nor listen on the same port and interface, nor have
    destinations of the same name: the store queues deliveries by destination name alone, so
    two such queues would take each other's deliveries (enabled or not: a disabled channel's
    queued deliveries wait in the store under that name)."""
    problems: list[Problem] = []
    for i, entry in enumerate(loaded):
        for earlier in (e.channel for e in loaded[:i]):
            problems += [
                Problem(key, message, entry.channel.file, locate(entry.lines, key))
                for key, message in clashes(entry.channel, earlier)
            ]
    return problems


def clashes(channel: Channel, earlier: Channel) -> list[tuple[str, str]]:
    """``(key, message)`` for each way ``channel`` clashes with ``earlier`` (see ``_clashes``);
    a reload also asks it about the channels it keeps running."""
    found: list[tuple[str, str]] = []
    if earlier.name == channel.name:
        found.append(("name", f"channel {channel.name!r} is also defined in {earlier.file}"))
    mine, theirs = (listen_address(c.source.listen) for c in (channel, earlier))
    if mine and theirs and addresses_clash(mine, theirs):
        found.append(
            ("source.listen", f"port {mine[1]} is already used by channel {earlier.name!r} ({earlier.file})")
        )
    taken = {destination.name for destination in earlier.destinations}
    found += [
        (
            f"destinations[{i}].name",
            f"destination {destination.name!r} is also defined in channel {earlier.name!r} "
            f"({earlier.file}); destination names must be unique across channels",
        )
        for i, destination in enumerate(channel.destinations)
        if destination.name in taken
    ]
    return found


def is_mapping_file(file: Path, text: str) -> bool:
    """Mapping files declare the destination type they build (``output``); channels do not."""
    try:
        return "output" in tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False


def _standalone_mapping_problems(file: Path) -> list[Problem]:
    """A mapping file given on its own: it loads, and its keys fit its output's payload."""
    try:
        mapping = load_mapping(file)
    except SpecError as exc:
        return list(exc.problems)
    spec = payload_spec_for(mapping.output)
    if spec is None:
        return []
    return [Problem("fields", message, file) for message in payload_key_problems(mapping.output_keys(), spec)]


def _mapping_problems(channel: Channel) -> list[Problem]:
    problems: list[Problem] = []
    for i, destination in enumerate(channel.destinations):
        key = f"destinations[{i}].mapping"
        if not destination.mapping.is_file():
            problems.append(Problem(key, f"mapping file {destination.mapping} not found"))
            continue
        try:
            mapping = load_mapping(destination.mapping)
        except ConfigError as exc:
            problems += [
                Problem(key, f"mapping does not load: {line}")
                for line in str(exc).splitlines()
                if line.strip()
            ]
            continue
        problems += [Problem(key, message) for message in _fit_problems(mapping, destination, channel)]
    return problems


def _fit_problems(mapping: Any, destination: Destination, channel: Channel) -> list[str]:
    """Does the mapping produce what this destination takes, for what this channel accepts?"""
    output = getattr(mapping, "output", destination.type)
    if output != destination.type:
        return [f"the mapping produces {output!r} payloads but the destination type is {destination.type!r}"]
    messages: list[str] = []
    inputs = tuple(getattr(mapping, "input", ()))
    accepted = channel.source.filter.message_types
    if inputs and not any(_types_overlap(i, a) for i in inputs for a in accepted):
        messages.append(
            f"the mapping handles {', '.join(inputs)} but the channel accepts only {', '.join(accepted)}"
        )
    spec = payload_spec_for(destination.type)
    if spec is not None:
        messages += payload_key_problems(mapping.output_keys(), spec)
    return messages


def _types_overlap(mapping_input: str, accepted: str) -> bool:
    """``"ORU"`` (any ORU event, in a mapping) overlaps ``"ORU^R01"``; ``"MDM^*"`` overlaps both."""
    pattern = mapping_input if "^" in mapping_input else f"{mapping_input}^*"
    return fnmatchcase(pattern, accepted) or fnmatchcase(accepted, pattern)


def payload_key_problems(keys: Iterable[Any], spec: Spec, prefix: str = "") -> list[str]:
    """Compare a mapping's output keys with a payload spec: unknown keys, missing required ones.

    ``keys`` are :class:`engine.mapping.OutputKey`-like: a ``name`` and the ``fields`` of the
    items of a list (empty for a plain value).
    """
    by_name = {key.name: key for key in keys}
    known = [f.name for f in spec.fields]
    messages = [
        f"output key {prefix}{name} is not a {spec.name} field{suggest(name, known)}"
        for name in by_name
        if name not in known
    ]
    messages += [
        f"the mapping does not produce required {spec.name} field {prefix}{f.name}"
        for f in spec.fields
        if f.required and f.name not in by_name
    ]
    for f in spec.fields:
        key = by_name.get(f.name)
        if f.spec is not None and key is not None and key.fields:
            messages += payload_key_problems(key.fields, f.spec, f"{prefix}{f.name}[].")
    return messages
