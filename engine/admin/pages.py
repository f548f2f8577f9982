"""The console's HTML: one layout and a few helpers, every value escaped.

Server-rendered plain HTML; the stylesheet and the small refresh script are static files
(``static/``), so the Content-Security-Policy can forbid inline script.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

from twisted.web.server import Request

from engine.admin.auth import Session


def e(value: object) -> str:
    """``value`` as HTML text, escaped (quotes too: values also go into attributes)."""
    return escape(str(value), quote=True)


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(headings: Sequence[str], rows: Iterable[Sequence[str]], empty: str = "none") -> str:
    """A table of already-escaped cells (use :func:`e` on values)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headings)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def action(session: Session | None, path: str, label: str, fields: dict[str, object], extra: str = "") -> str:
    """A one-button POST form carrying the session's CSRF token; nothing without a session
    (a bearer token reads, it never acts)."""
    if session is None:
        return ""
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in fields.items())
    return (
        f'<form method="post" action="{e(path)}" class="inline">'
        f'<input type="hidden" name="csrf" value="{e(session.csrf)}">{hidden}{extra}'
        f'<button type="submit">{e(label)}</button></form>'
    )


def layout(
    request: Request, title: str, body: str, session: Session | None = None, refresh: bool = False
) -> bytes:
    """A whole page: header with the operator and a logout button, ``body`` (HTML) below."""
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    who = ""
    if session is not None:
        who = f'<span class="who">{e(session.operator)}</span>' + action(session, "/logout", "Log out", {})
    notice = ""
    if session is not None and session.notice:
        notice, session.notice = f'<p class="notice" id="notice">{e(session.notice)}</p>', ""
    script = '<script src="/static/console.js" defer></script>' if refresh else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · Courier</title>"
        f'<link rel="stylesheet" href="/static/console.css">{script}</head>'
        f'<body><header><a href="/" class="brand">Courier</a>{who}</header>'
        f"<main>{notice}{body}</main></body></html>\n"
    ).encode()
