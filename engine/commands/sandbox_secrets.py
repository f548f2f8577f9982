"""Which channel settings take which sandbox credential under ``courier run --sandbox``.

This is the client's side of the demo: it reads the channels' destinations (``${VAR}`` as
written) and fills the secret variables the user left unset with the values the sandboxes
accept (:class:`courier_sandbox.credentials.Credentials`). It lives in the engine because the
sandboxes must not read the client's configuration (issue 10).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from courier_sandbox.credentials import Credentials
from engine.destinations.registry import plugin_for, plugins
from engine.spec import env_reference, expand

_ENV_NAMES = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
"""The variables a setting's text reads, with or without a fallback."""


def secret_settings() -> dict[str, Mapping[str, str]]:
    """Destination type → secret setting → the :class:`Credentials` field its sandbox accepts
    (each plugin's ``SandboxHook.secret_settings``)."""
    return {type_: found.sandbox.secret_settings for type_, found in plugins().items() if found.sandbox}


def fill_sandbox_secrets(
    destinations: Iterable[Any],
    credentials: Credentials,
    base_urls: Mapping[str, str],
    env: Mapping[str, str],
) -> dict[str, str]:
    """``env`` plus the sandbox's value for each secret variable the user left unset.

    ``destinations`` are read as written (``${VAR}`` unresolved). A destination counts when
    its base URL, resolved with ``env``, is on the sandbox of its type (``base_urls``: vendor →
    scheme://host:port); each of its secret settings that is exactly ``${VAR}`` with VAR not in
    ``env`` gets the matching credential. A variable the user set wins. A variable that anything
    else also reads (a destination aimed elsewhere, another setting, another credential) is left
    unset, so no sandbox value can reach a real vendor: ``courier run`` then names it.
    """
    declared = secret_settings()
    wanted: dict[str, set[str]] = {}  # variable → the credentials sandbox secrets want in it
    read_elsewhere: set[str] = set()
    for destination in destinations:
        aimed = aimed_at_sandbox(destination, base_urls, env)
        secrets = declared.get(destination.type, {}) if aimed else {}
        for setting, value in destination.settings.items():
            name = env_reference(value) if setting in secrets else None
            if name is None:
                read_elsewhere.update(_ENV_NAMES.findall(str(value)))
            else:
                wanted.setdefault(name, set()).add(secrets[setting])
    filled = dict(env)
    for name, credential in wanted.items():
        if name not in env and name not in read_elsewhere and len(credential) == 1:
            filled[name] = getattr(credentials, credential.pop())
    return filled


def aimed_at_sandbox(destination: Any, base_urls: Mapping[str, str], env: Mapping[str, str]) -> bool:
    """Whether the destination's URL (its plugin's ``SandboxHook.url_setting``, ``${VAR}``
    resolved with ``env``) is on the sandbox of its type: same scheme, host and port."""
    sandbox = base_urls.get(destination.type)
    found = plugin_for(destination.type)
    setting = found.sandbox.url_setting if found and found.sandbox else "base_url"
    base_url = expand(str(destination.settings.get(setting) or ""), env)
    if sandbox is None or not base_url:
        return False
    return _origin(base_url) == _origin(sandbox)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
