"""Reloading channels while the engine runs (``Engine.reload``, SIGHUP to ``courier run``): a
changed channel restarts, the others keep their connections; a broken file is refused and the
running version keeps serving; removed channels stop, added ones start; webhook routes of a
restarted channel keep answering."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from courier_sandbox.qliq_crypto import rsa_encrypt_chunked
from engine.channel.check import load_each
from engine.destinations.qliq.keys import generate_key_pair, load_private_key
from engine.service import build_engine
from tests.conftest import on_reactor
from tests.support.engine import open_store
from tests.support.mllp import BlockingClient
from tests.support.pki import make_pki
from tests.support.scripted_http import ScriptedServer
from tests.support.subprocess_engine import STORE_KEY, free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent

SOURCE = """
name = "{name}"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
"""

HTTP_CHANNEL = (
    SOURCE
    + """[[destinations]]
name = "{name}-hook"
type = "http"
mapping = "{mapping}"
concurrency = 4
  [destinations.settings]
  url = "{url}/{name}"
  auth = "none"
"""
)

HTTP_MAPPING = """
input = ["ORU^R01"]
output = "http"
[fields]
messageId = "MSH-10"
version = {{ const = "{version}" }}
"""

MEDALLIES_CHANNEL = (
    SOURCE
    + """[[destinations]]
name = "{name}-direct"
type = "medallies"
mapping = "{mapping}"
  [destinations.settings]
  base_url = "http://127.0.0.1:9"
  username = "courier"
  password = "${{W_PASSWORD}}"
  from_direct_address = "radiology@direct.courier.example"
  webhook_secret = "${{W_WEBHOOK_SECRET}}"
"""
)

QLIQ_CHANNEL = (
    SOURCE.replace("ORU^R01", "MDM^T02")
    + """[[destinations]]
name = "{name}-qliq"
type = "qliq"
mapping = "{mapping}"
  [destinations.settings]
  base_url = "http://127.0.0.1:9"
  api_key = "${{Q_API_KEY}}"
  reply_key_file = "{key_file}"
  reply_sender = "courier@sandbox.qliq"
  reply_webhook_token = "${{Q_REPLY_TOKEN}}"
[status_reports]
to = "tcp:host=127.0.0.1:port=9"
"""
)

WEBHOOK_SECRET = "reload-test-webhook-secret-" + "x" * 16
REPLY_TOKEN = "q7Vd2Lx9Rk4Tz8Mw3Pb6Nf"
ENV = {
    "W_PASSWORD": "reload-test-password",
    "W_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "Q_API_KEY": "reload-test-qliq-key",
    "Q_REPLY_TOKEN": REPLY_TOKEN,
}


def oru(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|LIS|CITYLAB|COURIER|CITYHOSP|20240131142501||ORU^R01|{control_id}|P|2.5\r"
        "PID|1||9434765919^^^NHS^NH||DOE^JANE\r"
        "OBR|1||ORD1|GLU^Glucose\r"
    ).encode()


def accepted(reply: bytes) -> bool:
    return b"MSA|AA|" in reply


class ChannelFiles:
    """Channel and mapping files in one directory, written as a deployment would change them."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        self.url = url
        self.ports: dict[str, int] = {}

    def channel(self, name: str) -> Path:
        return self.directory / f"{name}.toml"

    def mapping(self, name: str) -> Path:
        return self.directory / "mappings" / f"{name}.toml"

    def write_http(self, name: str, version: str = "1") -> int:
        """An http channel sending ``version`` to ``<url>/<name>``; returns its MLLP port."""
        port = self.ports.setdefault(name, free_port())
        self.write_http_mapping(name, version)
        text = HTTP_CHANNEL.format(name=name, port=port, mapping=self.mapping(name), url=self.url)
        self.channel(name).write_text(text)
        return port

    def write_http_mapping(self, name: str, version: str) -> None:
        self.mapping(name).parent.mkdir(exist_ok=True)
        self.mapping(name).write_text(HTTP_MAPPING.format(version=version))

    def write_medallies(self, name: str) -> None:
        port = self.ports.setdefault(name, free_port())
        self.mapping(name).parent.mkdir(exist_ok=True)
        shutil.copyfile(ROOT / "mappings" / "oru_r01_to_medallies.toml", self.mapping(name))
        text = MEDALLIES_CHANNEL.format(name=name, port=port, mapping=self.mapping(name))
        self.channel(name).write_text(text)

    def write_qliq(self, name: str, key_file: Path) -> None:
        """A Qliq channel whose replies come to a webhook, encrypted for ``key_file``."""
        port = self.ports.setdefault(name, free_port())
        self.mapping(name).parent.mkdir(exist_ok=True)
        shutil.copyfile(ROOT / "mappings" / "mdm_t02_to_qliq.toml", self.mapping(name))
        text = QLIQ_CHANNEL.format(name=name, port=port, mapping=self.mapping(name), key_file=key_file)
        self.channel(name).write_text(text)

    def touch_mapping(self, name: str) -> None:
        """The mapping edited (a comment): its channel restarts on the next reload."""
        with self.mapping(name).open("a") as mapping:
            mapping.write("# reviewed\n")

    def break_channel(self, name: str) -> None:
        """A file ``courier check`` refuses: the listen key of the wrong type."""
        self.channel(name).write_text(f'name = "{name}"\n[source]\nlisten = 2575\n')


def sent_versions(hook: ScriptedServer, path: str) -> dict[str, str]:
    """messageId → version of what the destination at ``path`` received."""
    return {r.json()["messageId"]: r.json()["version"] for r in list(hook.received) if r.path == path}


@pytest.fixture
def hook() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def files(tmp_path, hook) -> ChannelFiles:
    directory = tmp_path / "channels"
    directory.mkdir()
    return ChannelFiles(directory, hook.base_url)


@pytest.fixture
def running(reactor, tmp_path, files) -> Iterator:
    """``start()`` builds and starts an engine over ``files`` (webhooks served), stopped after."""
    store = open_store(reactor, tmp_path / "reload.sqlite3")
    engines = []

    def load():
        return load_each([files.directory], env=ENV)

    def start():
        channels, problems = load()
        assert problems == []
        engine = build_engine(
            reactor, channels, store, webhook_endpoint="tcp:0:interface=127.0.0.1", load_channels=load
        )
        engines.append(engine)
        on_reactor(engine.start)
        return engine

    yield start
    for engine in engines:
        on_reactor(engine.stop)
    on_reactor(store.close)


def test_reload_restarts_the_changed_channel_refuses_a_broken_file_and_keeps_the_others(running, files, hook):
    a_port = files.write_http("a")
    b_port = files.write_http("b")
    engine = running()
    a = BlockingClient(a_port)
    b_before = BlockingClient(b_port)
    assert accepted(a.request(oru("A1")))
    assert accepted(b_before.request(oru("B1")))
    wait_for(lambda: sent_versions(hook, "/b") == {"B1": "1"}, what="B1 with mapping 1")

    files.write_http_mapping("b", "2")
    report = on_reactor(engine.reload)
    assert (report.restarted, report.unchanged, report.refused, report.failed) == (("b",), ("a",), (), ())
    assert accepted(a.request(oru("A2"))), "channel a keeps its connection"
    assert b_before.is_closed_by_peer(), "a restarted channel closes its connections once answered"
    with BlockingClient(b_port) as b:
        assert accepted(b.request(oru("B2")))
    wait_for(lambda: sent_versions(hook, "/b").get("B2") == "2", what="B2 with mapping 2")

    files.break_channel("b")
    report = on_reactor(engine.reload)
    assert report.restarted == () and report.unchanged == ("a", "b")
    [refusal] = report.refused
    assert refusal.what == str(files.channel("b")) and "source.listen" in refusal.reason
    with BlockingClient(b_port) as b:
        assert accepted(b.request(oru("B3"))), "the running b serves on"
    wait_for(lambda: sent_versions(hook, "/b").get("B3") == "2", what="B3 with mapping 2")

    files.channel("b").unlink()
    c_port = files.write_http("c")
    report = on_reactor(engine.reload)
    assert (report.removed, report.added, report.unchanged) == (("b",), ("c",), ("a",))
    with pytest.raises(OSError):
        BlockingClient(b_port, timeout=1)
    with BlockingClient(c_port) as c:
        assert accepted(c.request(oru("C1")))
    assert accepted(a.request(oru("A3")))
    wait_for(lambda: set(sent_versions(hook, "/a")) == {"A1", "A2", "A3"}, what="every a message delivered")
    a.close()


def test_a_restarted_channel_keeps_its_webhook_routes_and_a_removed_one_drops_them(running, files):
    files.write_medallies("w")
    engine = running()
    url = f"http://127.0.0.1:{engine.webhook_port()}/medallies/w/w-direct/dsn"
    auth = ("medallies", WEBHOOK_SECRET)
    assert requests.post(url, data=b"not a DSN", auth=auth, timeout=5).status_code == 400

    files.touch_mapping("w")
    report = on_reactor(engine.reload)
    assert report.restarted == ("w",)
    assert requests.post(url, data=b"not a DSN", auth=auth, timeout=5).status_code == 400
    assert requests.post(url, data=b"not a DSN", timeout=5).status_code == 401

    files.channel("w").unlink()
    assert on_reactor(engine.reload).removed == ("w",)
    assert requests.post(url, data=b"not a DSN", auth=auth, timeout=5).status_code == 404


class Load:
    """Persistent MLLP connections, each sending one message after another until stopped."""

    def __init__(self, port: int, connections: int = 2) -> None:
        self.port = port
        self.acked: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(n,)) for n in range(connections)]
        for thread in self._threads:
            thread.start()

    def _send(self, n: int) -> None:
        try:
            with BlockingClient(self.port) as client:
                sent = 0
                while not self._stop.is_set():
                    control_id = f"L{n}-{sent}"
                    if not accepted(client.request(oru(control_id))):
                        self.errors.append(f"{control_id} not accepted")
                    self.acked.append(control_id)
                    sent += 1
                    time.sleep(0.001)
        except Exception as error:  # a lost connection is what the test is about
            self.errors.append(f"connection {n}: {error!r}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def reloads(log: Path) -> list[str]:
    """What each reload did, as ``courier run`` logs it."""
    lines = log.read_text().splitlines()
    return [
        line.split(" reload: ", 1)[1]
        for line in lines
        if "engine.service: reload: " in line and "refused, the" not in line
    ]


def test_sighup_reloads_a_changed_channel_while_another_runs_under_load(tmp_path, files, hook):
    a_port = files.write_http("a")
    b_port = files.write_http("b")
    log = tmp_path / "courier.log"
    env = dict(os.environ, COURIER_STORE_KEY=STORE_KEY, **ENV)
    command = [sys.executable, "-m", "engine", "run", str(files.directory), "--durability", "normal"]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for(lambda: "courier: running" in log.read_text(), timeout=20, what="courier run started")
        with BlockingClient(b_port) as b:
            assert accepted(b.request(oru("B1")))
        load = Load(a_port)
        wait_for(lambda: len(load.acked) >= 20, what="the load on channel a under way")

        files.write_http_mapping("b", "2")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(reloads(log)) == 1, what="the first reload")
        with BlockingClient(b_port) as b:
            assert accepted(b.request(oru("B2")))
        wait_for(lambda: sent_versions(hook, "/b").get("B2") == "2", what="B2 with the new mapping")

        files.break_channel("b")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(reloads(log)) == 2, what="the second reload")
        with BlockingClient(b_port) as b:
            assert accepted(b.request(oru("B3"))), "the running b serves on"
        wait_for(lambda: sent_versions(hook, "/b").get("B3") == "2", what="B3 with the running mapping")
        acked_before = len(load.acked)
        wait_for(lambda: load.errors or len(load.acked) > acked_before + 20, what="the load going on")
        load.stop()
        assert load.errors == [], "channel a lost a connection or a message"
        assert reloads(log) == ["restarted b", f"refused {files.channel('b')}"]
        wait_for(
            lambda: set(load.acked) <= set(sent_versions(hook, "/a")),
            what="every acknowledged a message sent",
        )
    finally:
        process.terminate()
        process.wait(20)
    text = log.read_text()
    [refused] = [line for line in text.splitlines() if "refused, the running version is kept" in line]
    assert str(files.channel("b")) in refused and "source.listen" in refused
    assert "DOE" not in text and "9434765919" not in text and "Traceback" not in text
    assert process.returncode == 0, text[-2000:]


def test_a_sandbox_run_reads_its_unchanged_channels_the_same_on_every_reload(tmp_path, monkeypatch):
    """``--sandbox`` prepares the channels again on each reload: the Qliq demo's secret webhook path
    stays the one the sandbox was given, so the channel is not restarted and replies still arrive."""
    from courier_sandbox import default_base_urls
    from courier_sandbox.credentials import Credentials
    from engine.commands.run import with_sandbox_secrets, with_sandbox_settings
    from engine.reload import prepare

    monkeypatch.chdir(tmp_path)  # the demo reply key is made under the working directory
    secrets = with_sandbox_secrets([ROOT / "channels"], Credentials.generate(), env={})

    def fingerprints() -> list[tuple[object, ...]]:
        channels, problems = load_each([ROOT / "channels"], env=secrets)
        assert problems == []
        return [
            prepare(channel).fingerprint for channel in with_sandbox_settings(channels, default_base_urls())
        ]

    assert fingerprints() == fingerprints()


def test_a_new_channel_that_cannot_listen_is_reported_and_the_others_run_on(running, files):
    a_port = files.write_http("a")
    engine = running()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        files.ports["d"] = busy.getsockname()[1]
        files.write_http("d")
        report = on_reactor(engine.reload)
    [failed] = report.failed
    assert failed.what == "d" and "cannot listen" in failed.reason
    assert report.unchanged == ("a",)
    with BlockingClient(a_port) as a:
        assert accepted(a.request(oru("A1")))


def test_a_new_channel_that_would_clash_with_a_channel_kept_running_is_refused(running, files):
    a_port = files.write_http("a")
    engine = running()
    files.break_channel("a")  # a keeps running on a_port
    files.ports["c"] = a_port
    files.write_http("c")
    report = on_reactor(engine.reload)
    assert [r.what for r in report.refused] == [str(files.channel("a")), str(files.channel("c"))]
    assert f"port {a_port} is already used by channel 'a'" in report.refused[1].reason
    assert (report.unchanged, report.added, report.failed) == (("a",), (), ())
    with BlockingClient(a_port) as a:
        assert accepted(a.request(oru("A1")))


def post_reply(engine, public_key, message_id: str) -> int:
    """A reply as Qliq posts it to the channel's webhook, encrypted for ``public_key``."""
    reply = {"Message": {"Data": {"conversationUuid": "c1", "messageId": message_id, "text": "ok"}}}
    answer = requests.post(
        f"http://127.0.0.1:{engine.webhook_port()}/qliq/q/q-qliq/{REPLY_TOKEN}/replies",
        data={"conversation_id": "c1", "message_id": message_id},
        files={"message": ("message", rsa_encrypt_chunked(public_key, json.dumps(reply).encode()).encode())},
        timeout=10,
    )
    return answer.status_code


def test_a_reload_reads_the_qliq_reply_key_away_from_the_reactor_and_replies_still_decrypt(
    reactor, running, files, tmp_path
):
    key_file = tmp_path / "reply_key.pem"
    generate_key_pair(key_file)
    public_key = load_private_key(key_file).public_key()
    files.write_qliq("q", key_file)
    engine = running()
    assert post_reply(engine, public_key, "m1") == 200
    files.touch_mapping("q")
    assert reload_reading_a_pipe(reactor, engine, key_file).restarted == ("q",)
    assert post_reply(engine, public_key, "m2") == 200


@pytest.mark.parametrize("piped", ["listener key", "status reports CA"])
def test_a_reload_reads_the_tls_files_away_from_the_reactor(reactor, running, files, tmp_path, piped):
    pki = make_pki(tmp_path / "pki")
    port = files.write_http("t")
    with files.channel("t").open("a") as channel:
        channel.write(
            f'[source.tls]\ncert_file = "{pki.server_cert}"\nkey_file = "{pki.server_key}"\n'
            '[status_reports]\nto = "tcp:host=127.0.0.1:port=9"\nevents = ["accepted"]\n'
            f'[status_reports.tls]\nca_file = "{pki.ca}"\n'
        )
    engine = running()
    client_tls = ssl.create_default_context(cadata=pki.ca.read_text())  # before the CA is a pipe
    files.touch_mapping("t")
    pipe = pki.server_key if piped == "listener key" else pki.ca
    assert reload_reading_a_pipe(reactor, engine, pipe).restarted == ("t",)
    with BlockingClient(port, tls=client_tls) as client:
        assert accepted(client.request(oru("T1")))


def test_a_reply_key_that_cannot_be_read_refuses_the_file_and_the_running_channel_keeps_its_key(
    running, files, tmp_path
):
    key_file = tmp_path / "reply_key.pem"
    generate_key_pair(key_file)
    public_key = load_private_key(key_file).public_key()
    files.write_qliq("q", key_file)
    engine = running()
    key_file.unlink()
    files.touch_mapping("q")
    report = on_reactor(engine.reload)
    [refusal] = report.refused
    assert refusal.what == str(files.channel("q")) and "cannot load reply_key_file" in refusal.reason
    assert report.unchanged == ("q",)
    assert post_reply(engine, public_key, "m3") == 200


def reload_reading_a_pipe(reactor, engine, path: Path):
    """Reload while ``path`` is a pipe that gives its content only once written to: the reactor
    must answer meanwhile (one that reads the file hangs until then). The reload's report."""
    content = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    reloaded: list[object] = []
    reactor.callFromThread(lambda: engine.reload().addBoth(reloaded.append))
    writer = wait_for(lambda: _reader_waiting(path), what=f"the reload reading {path.name}")
    try:
        answered = threading.Event()
        reactor.callFromThread(answered.set)
        assert answered.wait(5), f"the reactor waits for {path.name}"
    finally:
        os.set_blocking(writer, True)
        os.write(writer, content)
        os.close(writer)
    return wait_for(lambda: reloaded, what="the reload")[0]


def _reader_waiting(fifo: Path) -> int | None:
    """A write end of ``fifo`` once someone opens it to read (not before: ENXIO)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno != errno.ENXIO:
            raise
        return None


def test_a_mapping_gone_after_its_check_refuses_its_channel_not_the_reload(files):
    """Between checking the files and preparing a channel a mapping can disappear: that is
    the channel file refused, as any unreadable file is, not an OSError ending the reload."""
    from engine.errors import ConfigError
    from engine.reload import prepare

    files.write_http("lab")
    ((channel,), problems) = load_each([files.directory], env=ENV)
    assert problems == []
    files.mapping("lab").unlink()
    with pytest.raises(ConfigError, match="mapping file"):
        prepare(channel)
