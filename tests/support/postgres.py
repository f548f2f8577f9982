"""A throwaway PostgreSQL server for the tests, from the installed server binaries.

One server per test session (``initdb`` and ``pg_ctl`` into a temporary folder, on a free
port, its unix socket in that folder too) and one fresh database per test. initdb refuses to
run as root, so under root (CI) the server runs as ``nobody`` in a folder handed to it.

Without the binaries the PostgreSQL tests skip, saying so, unless ``COURIER_REQUIRE_POSTGRES=1``
(set by ``.ci/run``): then they fail. Register with ``pytest_plugins`` (see tests/conftest.py).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ENV = "COURIER_REQUIRE_POSTGRES"
BACKENDS = ("sqlite", "postgresql")
_USER = "courier"


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` in a new folder of the system's temporary directory (which
    every user can reach, unlike pytest's), removed by :meth:`stop`; :meth:`url` names a
    database on it."""

    def __init__(self, binaries: Path, settings: dict[str, str] | None = None) -> None:
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="courier-pg-"))
        self.port = free_port()
        self.settings = settings or {}
        self._run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self._databases = itertools.count(1)

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def start(self) -> None:
        self.socket_dir.mkdir(parents=True)
        if self._run_as is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        data = str(self.root / "data")
        self._run("initdb", "-D", data, "-U", _USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "server.log"),
            "-o",
            " ".join(f"-c {name}={value}" for name, value in options.items()),
        )

    def stop(self) -> None:
        """Stop the server (if it runs) and delete its folder."""
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.root / "data"))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def _run(self, program: str, *args: str) -> None:
        user = {} if self._run_as is None else {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid}
        done = subprocess.run(
            [str(self.binaries / program), *args], capture_output=True, text=True, cwd=self.root, **user
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}")


def _unprivileged_user() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def unavailable(reason: str) -> None:
    """Fail when PostgreSQL tests are required (CI), else skip with the reason."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    binaries = server_binaries()
    if binaries is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package")
    server = PostgresServer(binaries, {"fsync": "off", "full_page_writes": "off"})  # speed, not durability
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for one test."""
    return postgres_server.create_database()


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's store lives: a SQLite file, then a PostgreSQL database (the same test twice)."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return tmp_path / "var" / "courier.sqlite3"


def committed_rows(location: str | Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    """Rows of ``sql`` (the store's SQLite flavour) read over a connection of its own, so only
    committed rows are seen, whichever backend ``location`` names."""
    if isinstance(location, str) and location.startswith("postgresql://"):
        import psycopg

        from engine.store.dialect import postgresql

        text, _ = postgresql(sql)
        with psycopg.connect(location) as conn:
            return conn.execute(text, params).fetchall()
    import sqlite3

    conn = sqlite3.connect(location)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
