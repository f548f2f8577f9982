"""Reading requests and shaping replies for the sandboxes, independent of any vendor.

Twisted's own form parsing loses multipart file names and part content types, which the
vendor rules depend on (Qliq's allowed attachment types, KPN's ``files`` parts), so bodies
are parsed here with the standard library's MIME parser instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from twisted.web.server import Request


@dataclass(frozen=True)
class Part:
    """One file part of a multipart body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class ParsedRequest:
    """What a sandbox handler needs from an HTTP request, already decoded."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    content_type: str
    raw: bytes
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[Part] = field(default_factory=list)
    json_error: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    """A response a handler wants written: status, body bytes and headers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, obj: Any, content_type: str = "application/json") -> Reply:
    return Reply(status, json.dumps(obj).encode(), {"Content-Type": content_type})


def text_reply(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


def parse_request(request: Request) -> ParsedRequest:
    """Decode method, path, query, headers and the body (JSON, form or multipart)."""
    raw = request.content.read() if request.content is not None else b""
    path = request.path.decode("utf-8", "replace")
    query = {k: v for k, v in parse_qsl(_query_string(request.uri), keep_blank_values=True)}
    headers = {
        k.decode("latin-1").lower(): v[-1].decode("latin-1")
        for k, v in request.requestHeaders.getAllRawHeaders()
    }
    content_type = headers.get("content-type", "")
    parsed = ParsedRequest(
        method=request.method.decode("ascii", "replace"),
        path=path,
        query=query,
        headers=headers,
        content_type=content_type.split(";")[0].strip().lower(),
        raw=raw,
    )
    if parsed.content_type == "application/json" or parsed.content_type.endswith("+json"):
        try:
            parsed.json = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError) as exc:
            parsed.json_error = f"body is not valid JSON: {exc}"
    elif parsed.content_type == "application/x-www-form-urlencoded":
        parsed.form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    elif parsed.content_type == "multipart/form-data":
        parsed.form, parsed.files = parse_multipart(content_type, raw)
    return parsed


def _query_string(uri: bytes) -> str:
    return uri.split(b"?", 1)[1].decode("utf-8", "replace") if b"?" in uri else ""


def parse_multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], list[Part]]:
    """Split a multipart/form-data body into text fields and file parts.

    A part with a file name is a file; a part carrying the non-standard
    ``Content-Encoding: base64`` header (as in Qliq's captured request) is decoded.
    """
    envelope = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + raw
    message = BytesParser(policy=HTTP).parsebytes(envelope)
    fields: dict[str, str] = {}
    files: list[Part] = []
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        data = _part_bytes(part)
        filename = part.get_filename()
        if filename is None:
            fields[str(name)] = data.decode("utf-8", "replace")
        else:
            files.append(Part(str(name), filename, part.get_content_type(), data))
    return fields, files


def _part_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True) or b""
    if str(part.get("Content-Encoding", "")).strip().lower() == "base64":
        decoded = decode_base64(data.decode("ascii", "replace"))
        if decoded is not None:
            return decoded
    return data


def decode_base64(text: str) -> bytes | None:
    """Strictly decode Base64 (line breaks allowed); None when it is not Base64."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def encode_multipart(fields: dict[str, str], files: list[Part], boundary: str) -> tuple[bytes, str]:
    """Build a multipart/form-data body; returns (body, content type header)."""
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for part in files:
        chunks.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{part.name}"; '
                f'filename="{part.filename}"\r\nContent-Type: {part.content_type}\r\n\r\n'
            ).encode()
            + part.data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
