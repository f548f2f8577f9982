"""RFC 7807 problem details, as conneQt answers errors (``application/problem+json``).

The ``invalidParameters`` extension names the fields the vendor refused; they are carried into
the :class:`~engine.destinations.base.SendResult` so the HL7 ERR segment can show them.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests

from engine.destinations.base import InvalidParameter
from engine.destinations.transport import ErrorDescription, get_ci, json_body


def describe_problem(response: requests.Response) -> ErrorDescription:
    """An RFC 7807 problem as a reason and the invalid parameters it names."""
    problem = json_body(response)
    title = get_ci(problem, "title") or response.reason or f"HTTP {response.status_code}"
    detail = get_ci(problem, "detail")
    reason = f"{title}: {detail}" if isinstance(detail, str) and detail else str(title)
    raw = get_ci(problem, "invalidParameters")
    invalid = tuple(
        InvalidParameter(str(get_ci(p, "name") or ""), str(get_ci(p, "reason") or ""))
        for p in (raw if isinstance(raw, list) else [])
        if isinstance(p, Mapping)
    )
    return reason, invalid


def names_an_attachment(response: requests.Response) -> bool:
    """Whether the problem's ``invalidParameters`` refuse an attachment (never resent then).

    Only this structured statement counts: guessing from words such as "content" in a title
    made plain server errors final.
    """
    _, invalid = describe_problem(response)
    return any(p.name.startswith("attachments") for p in invalid)
