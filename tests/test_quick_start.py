"""The README's demo, as a person runs it: ``courier run --sandbox`` from a copy of the repo,
``courier listen`` as the hospital, ``courier send`` a sample per channel, ``courier status``,
and a clinician's reply on the Qliq sandbox coming back to the hospital as HL7.

It uses the fixed ports the README names (MLLP 2575–2578, sandboxes 18441–18444, webhooks
18480, the hospital's listener 2590), so it also proves the example files agree with them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.mllp import BlockingClient

ROOT = Path(__file__).resolve().parent.parent
CHANNELS = ("lis-oru-to-conneqt", "ehr-mdm-to-qliq", "ris-oru-to-medallies", "ehr-mdm-to-kpn")
SENDS = {
    2575: "oru_r01_lab_fbc_pdf.hl7",
    2576: "mdm_t02_discharge_summary.hl7",
    2577: "oru_r01_radiology_mri.hl7",
    2578: "mdm_t10_replacement_content.hl7",
}


def courier(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stderr.read()
        try:
            BlockingClient(port, timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


def wait_for_state(cwd: Path, control_id: str, state: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        shown = subprocess.run(
            [sys.executable, "-m", "engine", "status", control_id],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if state in shown:
            return
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)


def wait_for_outbox_sent(cwd: Path, channel: str, timeout: float = 30.0) -> None:
    """Until nothing of the channel's outbox is PENDING: the hospital has ACKed it all."""
    deadline = time.monotonic() + timeout
    while True:
        pending = subprocess.run(
            [sys.executable, "-m", "engine", "outbox", "list", "--channel", channel, "--state", "PENDING"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if "PENDING" not in pending:
            return
        assert time.monotonic() < deadline, pending
        time.sleep(0.5)


def test_the_readme_demo_delivers_every_example_and_reports_back(tmp_path) -> None:
    for name in ("channels", "mappings", "sample_messages"):
        shutil.copytree(ROOT / name, tmp_path / name)
    engine = courier("run", "--sandbox", cwd=tmp_path)
    hospital = courier("listen", "tcp:2590:interface=127.0.0.1", "--summary", cwd=tmp_path)
    try:
        for port in (*SENDS, 2590):
            wait_for_port(port, engine if port != 2590 else hospital)
        for port, sample in SENDS.items():
            sent = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "engine",
                    "send",
                    f"sample_messages/{sample}",
                    "--to",
                    f"tcp:host=127.0.0.1:port={port}",
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
        # MedAllies reports DISPATCHED through its DSN webhook within seconds; the others are
        # SENT once their vendor accepted them (their statuses come later, by polling).
        for control_id, reached in (
            ("RAD-20240318-0091", "DELIVERED"),
            ("CL240315-0001", "SENT"),
            ("EPR-T02-0002", "SENT"),
            ("EPR-T10-0005", "SENT"),
        ):
            wait_for_state(tmp_path, control_id, reached)
        replied = requests.post("http://127.0.0.1:18441/_sandbox/reply", json={"text": "Seen"}, timeout=10)
        assert replied.status_code == 200 and replied.json()["status"] == 200, replied.text
        wait_for_outbox_sent(tmp_path, "ehr-mdm-to-qliq")
        stats = subprocess.run(
            [sys.executable, "-m", "engine", "stats"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert all(f"{channel} " in stats for channel in CHANNELS), stats
    finally:
        for process in (engine, hospital):
            process.send_signal(signal.SIGINT)
        for process in (engine, hospital):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    printed = hospital.stdout.read()
    assert "ACK^R01" in printed and "MSA AA RAD-20240318-0091" in printed, printed
    assert "MDM^T02" in printed, "the care team's reply reached the hospital as a document"
    assert (tmp_path / "var" / "sandbox" / "qliq_reply_key.pem").stat().st_mode & 0o077 == 0
    assert engine.returncode == 0, engine.stderr.read()


def test_sandbox_replies_only_touch_qliq_destinations_aimed_at_the_sandbox(tmp_path) -> None:
    from engine.channel.check import load_channels
    from engine.commands.run import with_sandbox_replies, with_sandbox_secrets
    from engine.sandbox.credentials import Credentials

    key_file = tmp_path / "sandbox" / "qliq_reply_key.pem"
    secrets = with_sandbox_secrets([ROOT / "channels"], Credentials.generate(), env={})
    real_qliq = {**secrets, "QLIQ_BASE_URL": "https://capi.qliqsoft.com", "QLIQ_API_KEY": "real-key"}
    elsewhere = load_channels([ROOT / "channels"], env=real_qliq)
    assert with_sandbox_replies(elsewhere, key_file) == elsewhere and not key_file.exists()

    demo = with_sandbox_replies(load_channels([ROOT / "channels"], env=secrets), key_file)
    settings = {d.name: d.settings for c in demo for d in c.destinations}
    assert settings["care-team-qliq"]["reply_key_file"] == str(key_file) and key_file.exists()
    assert settings["care-team-qliq"]["reply_sender"] == "poc@sandbox.qliq"
    assert len(settings["care-team-qliq"]["reply_webhook_token"]) >= 16
    assert not any("reply_key_file" in s for name, s in settings.items() if name != "care-team-qliq")
