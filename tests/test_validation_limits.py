"""hl7apy validation is bounded: a ceiling before it, worker processes with time and memory
limits around it, and an engine that SIGTERM stops whatever a validation is doing.

hl7apy spends ~0.1 ms and ~1.5 KB on every component: before the fix, one NTE of 1 MB of
``^`` took 86 s and 1.4 GB in a thread of the engine, and SIGTERM waited for it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine.channel.check import load_channels
from engine.message import Message
from engine.service import build_source, routes, validation_pool
from engine.validation_pool import WORKER_STOPPED, ValidationPool
from tests.conftest import on_reactor
from tests.support.engine import listen, open_store
from tests.support.mllp import BlockingClient
from tests.support.subprocess_engine import CHANNEL, MAPPING, EngineProcess
from tests.support.waiting import wait_for

ORU = (
    "MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101120000||ORU^R01^ORU_R01|{cid}|P|2.5\r"
    "PID|1||9434765919^^^NHS^NH||DOE^JANE||19800101|F\r"
    "OBR|1|ORD1|ACC1|24331-1^Lipid panel^LN|||20260101110000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|||||F\r"
)


def oru(cid: str, note: str = "") -> bytes:
    """A valid ORU^R01, with an NTE holding ``note`` when given."""
    return (ORU.format(cid=cid) + (f"NTE|1||{note}\r" if note else "")).encode()


def carets(count: int) -> str:
    return "^" * count


def separators(payload: bytes) -> int:
    """What the ceiling counts: field, component, repetition and subcomponent separators."""
    return sum(payload.count(separator) for separator in b"|^~&")


def answer(client: BlockingClient, payload: bytes) -> tuple[str, str, str, str]:
    """MSA-1, MSA-2, ERR-3.1 and ERR-8 of the ACK to ``payload``."""
    return answer_of(client.request(payload))


def answer_of(reply: bytes) -> tuple[str, str, str, str]:
    ack = Message.parse(reply)
    err = ack.segment("ERR")
    code, text = (err.value(3, component=1), err.value(8)) if err else ("", "")
    return ack.segment("MSA").value(1), ack.segment("MSA").value(2), code, text


def channel_file(directory: Path, port: int, validation: str) -> Path:
    """The crash-test channel (a KPN destination, deliveries held) with ``[source.validation]``."""
    (directory / "chat.toml").write_text(MAPPING)
    path = directory / "crash.toml"
    path.write_text(CHANNEL.format(port=port) + f"\n[source.validation]\n{validation}\n")
    return path


@pytest.fixture
def validating(reactor, tmp_path):
    """``start(validation_toml)`` → (port, validation pool) of a source validating so."""
    running = []

    def start(validation: str) -> tuple[int, ValidationPool | None]:
        [channel] = load_channels([channel_file(tmp_path, 9, validation)])
        store = open_store(reactor, tmp_path / "courier.sqlite3")
        pool = validation_pool(reactor, channel)
        source = build_source(reactor, channel, store, routes(channel, reactor.seconds), validator=pool)
        port, listening, _ = listen(reactor, channel.name, source)
        running.append((listening, pool, store))
        return port, pool

    yield start
    for listening, pool, store in running:
        on_reactor(listening.stopListening)
        if pool is not None:
            on_reactor(pool.stopService)
        on_reactor(store.close)


@pytest.mark.parametrize("level", ["off", "tolerant", "strict"])
def test_a_valid_message_is_accepted_at_every_level(validating, level) -> None:
    port, _ = validating(f'level = "{level}"')
    with BlockingClient(port, timeout=30) as client:
        assert answer(client, oru("V1")) == ("AA", "V1", "", "")
        assert answer(client, oru("V2")) == ("AA", "V2", "", "")


def test_the_channel_version_reaches_the_worker(validating) -> None:
    port, _ = validating('level = "strict"\nversion = "9.9"')
    with BlockingClient(port, timeout=30) as client:
        assert answer(client, oru("V99"))[:3] == ("AR", "V99", "203")


def test_a_message_above_the_component_ceiling_is_refused_unvalidated(validating) -> None:
    port, _ = validating('level = "tolerant"\nmax_components = 500')
    with BlockingClient(port, timeout=10) as client:
        payload = oru("BIG", carets(600))
        msa1, msa2, code, text = answer(client, payload)
        assert (msa1, msa2, code) == ("AR", "BIG", "207")
        assert text == f"message too large to validate: {separators(payload)} components, limit 500"
        assert answer(client, oru("SMALL", carets(100)))[:3] == ("AA", "SMALL", "")


def test_a_message_above_the_size_ceiling_is_refused_unvalidated(validating) -> None:
    port, _ = validating('level = "tolerant"\nmax_bytes = 2048')
    payload = oru("LONG", "x" * 2000)
    with BlockingClient(port, timeout=10) as client:
        msa1, _, code, text = answer(client, payload)
        assert (msa1, code) == ("AR", "207")
        assert text == f"message too large to validate: {len(payload)} bytes, limit 2048"


def test_a_validation_past_its_time_limit_is_refused_and_the_connection_still_served(validating) -> None:
    port, _ = validating('level = "tolerant"\nmax_components = 1000000\ntimeout_s = 0.5')
    with BlockingClient(port, timeout=30) as client:
        client.request(oru("WARM"))  # the first message starts a worker
        started = time.monotonic()
        msa1, msa2, code, text = answer(client, oru("SLOW", carets(100_000)))  # ~10 s of hl7apy
        assert time.monotonic() - started < 5
        assert (msa1, msa2, code, text) == ("AR", "SLOW", "207", "message validation timed out after 0.5s")
        assert answer(client, oru("NEXT")) == ("AA", "NEXT", "", "")


def test_a_validation_past_its_memory_limit_is_refused_and_a_fresh_worker_serves_the_next(validating) -> None:
    port, _ = validating('level = "tolerant"\nmax_components = 1000000\nmemory_mb = 128\ntimeout_s = 120')
    with BlockingClient(port, timeout=120) as client:
        msa1, _, code, text = answer(client, oru("HUNGRY", carets(150_000)))  # ~220 MB in hl7apy
        assert (msa1, code) == ("AR", "207")
        assert "memory limit" in text
        assert answer(client, oru("NEXT")) == ("AA", "NEXT", "", "")


def test_a_worker_that_dies_mid_validation_refuses_its_message_and_is_replaced(validating) -> None:
    port, _ = validating('level = "tolerant"\nmax_components = 1000000\ntimeout_s = 60\nworkers = 1')
    with BlockingClient(port, timeout=60) as client:
        client.request(oru("WARM"))
        [worker] = workers_of(os.getpid())
        client.send(oru("DOOMED", carets(200_000)))
        time.sleep(0.5)
        os.kill(worker, signal.SIGKILL)
        msa1, msa2, code, text = answer_of(client.receive())
        assert (msa1, msa2, code, text) == ("AR", "DOOMED", "207", WORKER_STOPPED.text)
        assert answer(client, oru("NEXT")) == ("AA", "NEXT", "", "")


def test_a_validation_cut_short_by_stopping_is_answered_resend_later(validating) -> None:
    port, pool = validating('level = "tolerant"\nmax_components = 1000000\ntimeout_s = 60')
    with BlockingClient(port, timeout=30) as client:
        client.request(oru("WARM"))
        client.send(oru("CUT", carets(200_000)))
        time.sleep(0.3)
        on_reactor(pool.stopService)
        msa1, msa2, code, text = answer_of(client.receive())
        assert (msa1, msa2, code) == ("AE", "CUT", "207")
        assert "resend later" in text
        assert not workers_of(os.getpid())


# A real `courier run`, as an operator runs it.


@pytest.fixture
def engine_process(tmp_path):
    started = []

    def start(validation: str) -> EngineProcess:
        engine = EngineProcess(tmp_path)
        channel_file(tmp_path, engine.port, validation)
        engine.start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        if engine.process.poll() is None:
            engine.kill()


def test_a_megabyte_of_carets_is_answered_at_once_in_bounded_memory(engine_process) -> None:
    engine = engine_process('level = "tolerant"')
    with BlockingClient(engine.port, timeout=30) as client:
        payload = oru("CARETS", carets(1024 * 1024))
        started = time.monotonic()
        msa1, msa2, code, text = answer(client, payload)
        assert time.monotonic() - started < 5
        assert (msa1, msa2, code) == ("AR", "CARETS", "207")
        assert text == f"message too large to validate: {separators(payload)} components, limit 20000"
        assert answer(client, oru("NEXT")) == ("AA", "NEXT", "", "")
    assert resident_mb(engine.process.pid) < 200


def test_sigterm_stops_the_engine_within_seconds_during_a_runaway_validation(engine_process) -> None:
    unbounded = 'level = "tolerant"\nmax_components = 10000000\ntimeout_s = 600\nmemory_mb = 4096'
    engine = engine_process(unbounded)
    with BlockingClient(engine.port, timeout=30) as client:
        client.send(oru("RUNAWAY", carets(300_000)))  # ~30 s and ~450 MB of hl7apy
        [worker] = wait_for(lambda: workers_of(engine.process.pid), 20)
        wait_for(lambda: resident_mb(worker) > 60, 20)  # hl7apy is at work
        started = time.monotonic()
        engine.process.send_signal(signal.SIGTERM)
        assert engine.process.wait(10) == 0
        assert time.monotonic() - started < 5
    assert not alive(worker)


def test_a_worker_outlives_a_killed_engine_by_its_time_limit_at_most(engine_process) -> None:
    engine = engine_process('level = "tolerant"\nmax_components = 10000000\ntimeout_s = 3')
    with BlockingClient(engine.port, timeout=30) as client:
        client.send(oru("ORPHAN", carets(300_000)))  # ~30 s of hl7apy
        [worker] = wait_for(lambda: workers_of(engine.process.pid), 20)
        wait_for(lambda: resident_mb(worker) > 30, 20)  # at work on it
        engine.kill()  # SIGKILL: nothing of the engine runs to stop its workers
    wait_for(lambda: not alive(worker), 6)  # the worker's own alarm: timeout_s + 1


def workers_of(pid: int) -> list[int]:
    """Live validation workers whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"validation_worker" in command:
            found.append(int(entry.name))
    return found


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
