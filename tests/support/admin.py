"""An engine with its admin endpoint on the session reactor, and an operator's HTTP client."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import requests

from engine.admin.options import Operators
from engine.admin.service import AdminSettings, serve_admin
from engine.channel.check import load_channels, load_each
from engine.service import Engine, ListenerService, build_engine
from engine.store import Cipher, Store
from engine.store import open_store as any_store
from tests.conftest import on_reactor
from tests.support.engine import TEST_KEY
from tests.support.subprocess_engine import free_port
from tests.test_e2e_http import CHANNEL, MAPPING
from tests.test_e2e_http import SECRET as HOOK_SECRET

OPERATOR = "alice"
SECRET = "alice's console token, 32 chars"


@dataclass
class Admin:
    engine: Engine
    store: Store
    listener: ListenerService
    mllp_port: int
    store_path: Path | str
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.listener.port.getHost().port}"


def start_admin(
    reactor,
    workdir: Path,
    max_held_s: float = 600.0,
    extra=None,
    tls=None,
    location: Path | str | None = None,
) -> Admin:
    """The HTTP test channel (deliveries held: nothing is sent) with its console, started;
    its store at ``location`` (a PostgreSQL URL too), else a SQLite file in ``workdir``."""
    mllp_port = free_port()
    (workdir / "hook.toml").write_text(MAPPING)
    (workdir / "lab.toml").write_text(CHANNEL.format(port=mllp_port, url="http://127.0.0.1:9", hospital=9))
    env = {"HOOK_SECRET": HOOK_SECRET}
    channels = load_channels([workdir / "lab.toml"], env=env)
    store_path = location or workdir / "courier.sqlite3"
    store = any_store(store_path, reactor=reactor, cipher=Cipher(TEST_KEY))
    on_reactor(store.start)
    reload = partial(load_each, [workdir / "lab.toml"], env=env)
    engine = build_engine(reactor, channels, store, hold_deliveries=True, load_channels=reload)
    operators = Operators({OPERATOR: SECRET})
    settings = AdminSettings("tcp:0:interface=127.0.0.1", operators, tls, max_held_s=max_held_s)
    listener = serve_admin(engine, store, settings, extra or {})
    on_reactor(engine.start)
    on_reactor(lambda: listener.listening)
    return Admin(engine, store, listener, mllp_port, store_path, "https" if tls else "http")


def stop_admin(admin: Admin) -> None:
    on_reactor(admin.engine.stop)
    on_reactor(admin.store.close)


def log_in(admin: Admin, name: str = OPERATOR, secret: str = SECRET) -> requests.Session:
    """A browser-like session logged in as ``name``: it sends the console's Origin."""
    client = requests.Session()
    client.headers["Origin"] = admin.url
    answer = client.post(f"{admin.url}/login", data={"name": name, "secret": secret}, allow_redirects=False)
    assert answer.status_code == 302, answer.text
    return client


def csrf_token(client: requests.Session, admin: Admin) -> str:
    page = client.get(f"{admin.url}/").text
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)
