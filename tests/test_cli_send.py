"""``courier send`` and python-hl7 against each other and against the engine, over real sockets."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import hl7
import hl7.mllp
import pytest
from hl7apy.mllp import AbstractHandler, MLLPServer

from engine.message import Message
from engine.message.ack import AckError
from engine.source import Accepted, Refused, Source
from tests.conftest import on_reactor
from tests.support.engine import listen, open_store

ORU = (
    "MSH|^~\\&|LAB|CITYHOSP|COURIER|NHS|20260101120000+0000||ORU^R01^ORU_R01|{cid}|P|2.5\n"
    "PID|1||P1^^^HOSP^MR||DOE^JANE||19800101|F\n"
    "OBX|1|NM|2093-3^Cholesterol^LN||5.2|mmol/L|||||F\n"
)


def check(message: Message) -> Accepted:
    if message.control_id.startswith("BAD"):
        raise Refused(AckError(200, "not for this channel"))
    return Accepted(("dest",))


@pytest.fixture
def engine_port(reactor, tmp_path):
    store = open_store(reactor, tmp_path / "courier.sqlite3")
    port, listening, _ = listen(reactor, "lab", Source("lab", store, reactor, check))
    yield port
    on_reactor(listening.stopListening)
    on_reactor(store.close)


def courier(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=60)


def test_send_files_directories_and_batches_with_crlf(engine_port, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "one.hl7").write_text(ORU.format(cid="S1").replace("\n", "\r\n"))
    (folder / "two.hl7").write_text(ORU.format(cid="S2") + ORU.format(cid="S3"))
    batch = tmp_path / "batch.hl7"
    batch.write_text(
        "FHS|^~\\&|LAB\nBHS|^~\\&|LAB\n" + ORU.format(cid="S4") + ORU.format(cid="S5") + "BTS|2\nFTS|1\n"
    )
    result = courier(
        "send",
        str(folder),
        str(batch),
        "--to",
        f"tcp:host=127.0.0.1:port={engine_port}",
        "--connections",
        "2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 sent, 5 accepted, 0 not accepted" in result.stdout


def test_send_exits_non_zero_and_names_what_was_not_accepted(engine_port, tmp_path) -> None:
    file = tmp_path / "mixed.hl7"
    file.write_text(ORU.format(cid="OK1") + ORU.format(cid="BAD1"))
    result = courier("send", str(file), "--to", f"tcp:host=127.0.0.1:port={engine_port}")
    assert result.returncode == 1
    assert (
        "NOT ACCEPTED" in result.stdout
        and "BAD1" in result.stdout
        and "not for this channel" in result.stdout
    )
    assert "2 sent, 1 accepted, 1 not accepted" in result.stdout


def test_send_skips_what_is_not_hl7_with_one_line_each_and_still_sends_the_rest(
    engine_port, tmp_path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.hl7").write_text(ORU.format(cid="G1"))
    (folder / "notes.txt").write_text("call the lab about the analyser\n")
    (folder / "empty.hl7").write_bytes(b"")
    missing = tmp_path / "missing.hl7"
    result = courier("send", str(folder), str(missing), "--to", f"tcp:host=127.0.0.1:port={engine_port}")
    assert result.returncode == 1
    assert "1 sent, 1 accepted, 0 not accepted" in result.stdout and "2 file(s) not sent" not in result.stdout
    assert "3 file(s) not sent" in result.stdout
    assert sorted(result.stderr.splitlines()) == [
        f"courier send: {folder / 'empty.hl7'}: not HL7: no MSH segment",
        f"courier send: {folder / 'notes.txt'}: not HL7: segment 'cal' on line 1 precedes any MSH",
        f"courier send: {missing}: cannot read it: No such file or directory",
    ]


def test_send_whose_output_pipe_is_closed_ends_quietly(engine_port, tmp_path) -> None:
    file = tmp_path / "one.hl7"
    file.write_text(ORU.format(cid="PIPE1"))
    command = [
        sys.executable,
        "-m",
        "engine",
        "send",
        str(file),
        "--to",
        f"tcp:host=127.0.0.1:port={engine_port}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    _, stderr = process.communicate(timeout=60)
    assert stderr == b"" and process.returncode == 141


@pytest.fixture
def hl7apy_server():
    """hl7apy's MLLP server: it answers one message per connection, then closes it."""

    class Acknowledge(AbstractHandler):
        def reply(self) -> str:
            control_id = self.incoming_message.split("\r")[0].split("|")[9]
            ack = f"MSH|^~\\&|EPR|HOSP|LAB|HOSP|20260101||ACK|A{control_id}|P|2.5\rMSA|AA|{control_id}\r"
            return f"\x0b{ack}\x1c\r"

    server = MLLPServer("127.0.0.1", 0, {"ORU^R01^ORU_R01": (Acknowledge,)}, timeout=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_send_reconnects_to_a_server_that_closes_after_each_answer(hl7apy_server, tmp_path) -> None:
    file = tmp_path / "three.hl7"
    file.write_text("".join(ORU.format(cid=f"H{i}") for i in range(3)).replace("\n", "\r"))
    result = courier("send", str(file), "--to", f"tcp:host=127.0.0.1:port={hl7apy_server}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 sent, 3 accepted, 0 not accepted" in result.stdout


def test_send_from_stdin_with_a_rate_limit(engine_port) -> None:
    messages = "".join(ORU.format(cid=f"R{i}") for i in range(5))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "send",
            "-",
            "--to",
            f"tcp:host=127.0.0.1:port={engine_port}",
            "--rate",
            "20",
        ],
        input=messages,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seconds = float(result.stdout.split(" in ")[1].split("s")[0])
    assert seconds >= 0.19, "5 messages at 20/s take at least 0.2 s"


def test_send_reports_an_unreachable_endpoint(tmp_path) -> None:
    file = tmp_path / "one.hl7"
    file.write_text(ORU.format(cid="X1"))
    result = courier("send", str(file), "--to", "tcp:host=127.0.0.1:port=1:timeout=2")
    assert result.returncode == 1
    assert "cannot connect" in result.stdout


def test_python_hl7_mllp_send_is_acked_by_the_engine(engine_port, tmp_path) -> None:
    mllp_send = shutil.which("mllp_send") or str(Path(sys.executable).parent / "mllp_send")
    file = tmp_path / "one.hl7"
    file.write_text(ORU.format(cid="PYHL7"))
    result = subprocess.run(
        [mllp_send, "--port", str(engine_port), "--file", str(file), "--loose", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ack = hl7.parse(result.stdout.strip().replace("\n", "\r"))
    assert str(ack.segment("MSA")[1]) == "AA" and str(ack.segment("MSA")[2]) == "PYHL7"


@pytest.fixture
def python_hl7_server():
    """python-hl7's own asyncio MLLP server, answering AA with ``create_ack``."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def handle(hl7_reader, hl7_writer):
        try:
            while not hl7_reader.at_eof():
                message = await hl7_reader.readmessage()
                hl7_writer.writemessage(message.create_ack())
                await hl7_writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            hl7_writer.close()

    async def start():
        server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", 0)
        state["server"] = server
        state["port"] = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(10)
    yield state["port"]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_courier_send_against_python_hl7s_server(python_hl7_server, tmp_path) -> None:
    file = tmp_path / "two.hl7"
    file.write_text(ORU.format(cid="P1") + ORU.format(cid="P2"))
    result = courier("send", str(file), "--to", f"tcp:host=127.0.0.1:port={python_hl7_server}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 sent, 2 accepted" in result.stdout


def test_a_message_the_server_drops_without_an_answer_is_resent_once_not_for_ever(
    hl7apy_server, tmp_path
) -> None:
    """hl7apy closes without answering a type it has no handler for: that message is tried on
    the reused connection, then once on a fresh one, and reported; the next one still goes."""
    adt = ORU.format(cid="DROP1").replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01")
    file = tmp_path / "three.hl7"
    file.write_text((ORU.format(cid="H0") + adt + ORU.format(cid="H2")).replace("\n", "\r"))
    result = courier("send", str(file), "--to", f"tcp:host=127.0.0.1:port={hl7apy_server}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "3 sent, 2 accepted, 1 not accepted" in result.stdout
    assert "NOT ACCEPTED" in result.stdout and "DROP1" in result.stdout and "connection lost" in result.stdout
