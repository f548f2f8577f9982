"""The README's demo, as a person runs it: ``courier run --sandbox`` from a copy of the repo,
then the commands of "Try it", exactly as the README writes them, with its ports swapped for
free ones (:mod:`tests.support.demo`), so this runs while the demo itself runs on the README's
ports. The hospital's listener must show a delivered status and the care team's reply.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from engine.message.batch import split_file
from engine.message.reader import Message
from tests.support.demo import Demo, interrupt
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def try_it_commands() -> list[list[str]]:
    """The README's "Try it" commands, one argv each, without their comments."""
    section = README.read_text(encoding="utf-8").split("## Try it\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)\n```", section, re.DOTALL)
    return [shlex.split(line, comments=True) for line in block.splitlines()]


def control_id(sample: Path) -> str:
    return Message.parse(split_file(sample.read_bytes())[0]).control_id


def test_the_readme_demo_shows_a_delivered_status_and_a_reply_at_the_hospital(tmp_path) -> None:
    demo = Demo(tmp_path)
    engine = demo.run_engine()
    background, sent, channels = [engine], [], []
    try:
        for argv in try_it_commands():
            argv = shlex.split(demo.rewrite(shlex.join(argv)))
            if argv[0] == "curl":  # the reply goes to the last message Qliq got: wait for it
                for cid in sent:
                    demo.wait_for_state(cid, "SENT")
                done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0 and json.loads(done.stdout)["status"] == 200, done.stdout
                continue
            assert argv[0] == ".venv/bin/courier", argv
            if argv[1] == "listen":
                background.append(demo.start(*argv[1:]))
                wait_for(lambda: "listening on" in demo.output("listen", "err"), 30, "courier listen")
                continue
            done = demo.courier(*argv[1:])
            assert done.returncode == 0, done.stdout + done.stderr
            if argv[1] == "send":
                sent.append(control_id(tmp_path / argv[2]))
                channels.append(demo.channel_on(argv[-1]))
            if argv[1] == "stats":
                assert all(f"{channel} " in done.stdout for channel in channels), done.stdout
        assert "RAD-20240318-0091" in sent
        delivered = "MSA AA RAD-20240318-0091 delivered"
        wait_for(lambda: delivered in demo.output("listen"), 60, "the delivered status at the listener")
        wait_for(lambda: "MDM^T02" in demo.output("listen"), 60, "the care team's reply at the listener")
        assert "DELIVERED" in demo.wait_for_state("RAD-20240318-0091", "DELIVERED")
    finally:
        interrupt(*background)
    assert (tmp_path / "var" / "sandbox" / "qliq_reply_key.pem").stat().st_mode & 0o077 == 0
    assert engine.returncode == 0, demo.output("run", "err")


def test_the_demo_copy_keeps_none_of_the_readme_ports(tmp_path) -> None:
    demo = Demo(tmp_path)
    text = "".join(path.read_text() for path in sorted((tmp_path / "channels").glob("*.toml")))
    for port in (2575, 2576, 2577, 2578, 2590):
        assert str(port) not in text
    assert all(
        str(port) not in demo.rewrite(shlex.join(a)) for a in try_it_commands() for port in (2590, 18441)
    )


def test_sandbox_replies_only_touch_qliq_destinations_aimed_at_the_sandbox(tmp_path, monkeypatch) -> None:
    from courier_sandbox import default_base_urls
    from courier_sandbox.credentials import Credentials
    from engine.channel.check import load_channels
    from engine.commands.run import with_sandbox_secrets, with_sandbox_settings
    from engine.destinations.qliq.sandbox import DEMO_REPLY_KEY

    monkeypatch.chdir(tmp_path)  # the demo key is made under the working directory
    key_file = DEMO_REPLY_KEY
    secrets = with_sandbox_secrets([ROOT / "channels"], Credentials.generate(), env={})
    real_qliq = {**secrets, "QLIQ_BASE_URL": "https://capi.qliqsoft.com", "QLIQ_API_KEY": "real-key"}
    elsewhere = load_channels([ROOT / "channels"], env=real_qliq)
    assert (
        with_sandbox_settings(elsewhere, default_base_urls({"qliq": 18441})) == elsewhere
        and not key_file.exists()
    )
    moved = load_channels([ROOT / "channels"], env={**secrets, "QLIQ_BASE_URL": "http://127.0.0.1:28441"})
    assert with_sandbox_settings(moved, default_base_urls({"qliq": 18441})) == moved and not key_file.exists()

    demo = with_sandbox_settings(moved, default_base_urls({"qliq": 28441}))
    settings = {d.name: d.settings for c in demo for d in c.destinations}
    assert settings["care-team-qliq"]["reply_key_file"] == str(key_file) and key_file.exists()
    assert settings["care-team-qliq"]["reply_sender"] == "poc@sandbox.qliq"
    assert len(settings["care-team-qliq"]["reply_webhook_token"]) >= 16
    assert not any("reply_key_file" in s for name, s in settings.items() if name != "care-team-qliq")


def test_sandbox_ports_are_refused_with_one_line_when_malformed(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--sandbox", "--sandbox-ports", "qlik=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "qlik=1" in done.stderr and "Traceback" not in done.stderr
