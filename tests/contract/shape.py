"""Compare a recorded request with a fixture written from a vendor document's example.

What is compared is the request's *shape*, never its free values: method, host and path
(``{name}`` segments are placeholders), parameter names (query, form and multipart fields),
header names with the values the document fixes (a media type, an auth scheme written
``"Basic *"``), and for JSON the set of key paths (``a.b``, ``list[].key``) plus the few
values the document fixes. :func:`differences` returns one readable line per mismatch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.recording_server import Recorded

FIXTURES = Path(__file__).parent / "fixtures"
DEFAULT_PORTS = {"http": "80", "https": "443"}


def load_fixture(name: str) -> dict[str, Any]:
    """``<vendor>/<kind>`` → the fixture's JSON."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON value: ``{"a": [{"b": 1}]}`` → ``{"a", "a[]", "a[].b"}``."""
    paths: set[str] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths |= {path} | key_paths(item, path)
    elif isinstance(value, list):
        path = f"{prefix}[]"
        paths.add(path)
        for item in value:
            paths |= key_paths(item, path)
    return paths


def values_at(value: Any, path: str) -> list[Any]:
    """The values at one key path (several below a list)."""
    found = [value]
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        nxt: list[Any] = []
        for item in found:
            if part == "[]" and isinstance(item, list):
                nxt += item
            elif isinstance(item, Mapping) and part in item:
                nxt.append(item[part])
        found = nxt
    return found


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def form_fields(request: Recorded) -> tuple[dict[str, str], list[str]]:
    """(text fields, names of file parts) of a form or multipart body."""
    kind = media_type(request.header("Content-Type"))
    if kind == "application/x-www-form-urlencoded":
        parsed = parse_qs(request.body.decode(), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}, []
    if kind == "multipart/form-data":
        head = f"Content-Type: {request.header('Content-Type')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + request.body)
        fields: dict[str, str] = {}
        files: list[str] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                files.append(name)
            else:
                fields[name] = part.get_content().strip()
        return fields, files
    return {}, []


def _normal_authority(authority: str, scheme: str) -> str:
    host, _, port = authority.lower().partition(":")
    return host if not port or port == DEFAULT_PORTS.get(scheme) else f"{host}:{port}"


def _url_differences(request: Recorded, url: str) -> list[str]:
    expected = urlsplit(url)
    want = _normal_authority(expected.netloc, expected.scheme)
    scheme = "https" if request.tunnelled else urlsplit(request.target).scheme or "http"
    got = _normal_authority(request.authority, scheme)
    # Through the proxy Courier speaks http to the documented https host: the host and any
    # explicit port are compared, not the scheme.
    problems = [] if got == want else [f"host {got!r}, document: {want!r}"]
    if request.tunnelled:
        return problems  # the path is inside the tunnel
    pattern = "".join(
        "[^/]+" if piece.startswith("{") else re.escape(piece)
        for piece in re.split(r"(\{[^}]+\})", expected.path)
    )
    if not re.fullmatch(pattern, request.path):
        problems.append(f"path {request.path!r}, document: {expected.path!r}")
    return problems


def _header_differences(request: Recorded, headers: Mapping[str, str | None]) -> list[str]:
    problems = []
    for name, value in headers.items():
        got = request.header(name)
        if got is None:
            problems.append(f"header {name} missing")
        elif value is None:
            continue
        elif value.endswith(" *"):
            if not got.lower().startswith(value[:-1].lower()):
                problems.append(f"header {name} scheme {got.split(' ')[0]!r}, document: {value[:-2]!r}")
        elif name.lower() == "content-type":
            if media_type(got) != media_type(value):
                problems.append(f"header {name} {media_type(got)!r}, document: {media_type(value)!r}")
        elif got != value:
            problems.append(f"header {name} {got!r}, document: {value!r}")
    return problems


def _names_differences(what: str, got: Iterable[str], spec: Mapping[str, str]) -> list[str]:
    got = set(got)
    unknown = sorted(got - set(spec))
    missing = sorted(k for k, m in spec.items() if m == "M" and k not in got)
    return [f"{what} {k!r} not in the document" for k in unknown] + [
        f"{what} {k!r} (mandatory) missing" for k in missing
    ]


def _json_differences(request: Recorded, body: Mapping[str, Any]) -> list[str]:
    try:
        sent = json.loads(request.body)
    except ValueError:
        return ["body is not JSON"]
    got = key_paths(sent)
    defined = key_paths(body["example"]) | set(body.get("also_defined", ()))
    problems = [f"JSON key {p!r} not in the document" for p in sorted(got - defined)]
    problems += [f"JSON key {p!r} (mandatory) missing" for p in body.get("required", ()) if p not in got]
    for path, value in body.get("fixed", {}).items():
        problems += [f"JSON {path} = {v!r}, document: {value!r}" for v in values_at(sent, path) if v != value]
    return problems


def differences(request: Recorded, fixture: Mapping[str, Any]) -> list[str]:
    """Every way ``request`` differs from the fixture's ``request`` section; [] when it matches."""
    spec = fixture["request"]
    problems = []
    if request.method != spec["method"] and not request.tunnelled:
        problems.append(f"method {request.method}, document: {spec['method']}")
    if "url" in spec:  # KPN prints no path for its API calls
        problems += _url_differences(request, spec["url"])
    if request.tunnelled:
        return problems
    problems += _header_differences(request, spec.get("headers", {}))
    for pattern in spec.get("header_names_matching", ()):
        if not any(re.search(pattern, name) for name in request.headers):
            problems.append(f"no header whose name matches {pattern!r}")
    body = spec.get("body", {"format": "none"})
    fields, files = form_fields(request)
    names = set(request.query) | set(fields)
    if "parameters" in spec:
        problems += _names_differences("parameter", names, spec["parameters"])
    if body["format"] == "json":
        problems += _json_differences(request, body)
    elif body["format"] in ("multipart", "form"):
        want = "multipart/form-data" if body["format"] == "multipart" else "application/x-www-form-urlencoded"
        got = media_type(request.header("Content-Type"))
        if got != want:
            problems.append(f"body {got or 'none'!r}, document: {want!r}")
        if len(files) != body.get("files", 0):
            problems.append(f"{len(files)} file part(s), document: {body.get('files', 0)}")
    elif body["format"] == "none" and request.body:
        problems.append(f"a body of {len(request.body)} bytes, document: none")
    for name in spec.get("nonempty", ()):
        value = fields.get(name, (request.query.get(name) or [""])[-1])
        if not value:
            problems.append(f"parameter {name!r} is empty (mandatory)")
    return problems
