"""The console in a real browser: Debian's Chromium, headless, driven by Selenium through the
system chromedriver (never a downloaded browser), against ``courier run --sandbox`` with the
example channels on free ports (:mod:`tests.support.demo`).

It logs in with the run's one-time token, sees the four channels, sends a message over MLLP
and finds its timeline by control id, makes Qliq answer 401 (a sandbox fault) and sees its
destination held, has MedAllies reject a message (400: a dead letter), requeues it from the
page and sees it delivered, reloads the channel files from the page, saves the screenshot the
README shows (docs/console.png), and checks the page fits a phone's width.

Without Chromium or Selenium a user's plain ``pytest`` skips this with the reason; CI sets
``COURIER_REQUIRE_BROWSER=1`` (``.ci/run``), where a missing browser fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.demo import Demo, interrupt
from tests.support.e2e import sample, with_msh
from tests.support.mllp import BlockingClient
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "console.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHANNELS = ("ehr-mdm-to-kpn", "ehr-mdm-to-qliq", "lis-oru-to-conneqt", "ris-oru-to-medallies")
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1100",
)


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not needed.exists():
            return f"{needed} is missing (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def browser() -> Iterator[object]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("COURIER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"COURIER_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="courier-chromium-")
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # The page refreshes itself every 10 s: an element looked up while it reloads is found
    # once the new page is there, not reported missing.
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def fault(demo: Demo, sandbox: str, **settings: object) -> None:
    """Make a sandbox misbehave through its control API."""
    answer = requests.post(
        f"http://127.0.0.1:{demo.ports[sandbox]}/_sandbox/faults", json=settings, timeout=10
    )
    assert answer.status_code == 200, answer.text


def send(demo: Demo, channel: str, raw: bytes) -> None:
    with BlockingClient(demo.ports[channel], timeout=30) as client:
        assert re.search(rb"MSA\|[AC]A\|", client.request(raw))  # accepted (original or enhanced mode)


def page_text(driver) -> str:
    """The page's text; "" while a new page replaces it (a click's answer, the refresh)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return driver.find_element("tag name", "body").text
    except StaleElementReferenceException:
        return ""


def open_console(driver, url: str) -> str:
    driver.get(url)
    return page_text(driver)


def test_the_console_in_a_browser(tmp_path, browser) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    demo = Demo(tmp_path)
    engine = demo.run_engine()
    try:
        said = wait_for(
            lambda: re.search(
                r"console at (\S+) .*token for this run only: (\S+)\)", demo.output("run", "err")
            ),
            30,
            "the console's token",
        )
        url, token = said.group(1), said.group(2)

        driver.get(url)
        assert driver.current_url == f"{url}login"
        driver.find_element(By.ID, "name").send_keys("sandbox")
        driver.find_element(By.ID, "secret").send_keys(token)
        driver.find_element(By.ID, "login").click()
        wait_for(lambda: driver.current_url == url, 15, "the dashboard")
        shown = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "span.channel")]
        assert shown == list(CHANNELS)
        assert page_text(driver).count("listening") == 4

        # A message over MLLP, then its timeline by control id, without its body.
        send(
            demo, "ris-oru-to-medallies", with_msh(sample("oru_r01_radiology_mri.hl7"), control_id="UI-RAD-1")
        )
        demo.wait_for_state("UI-RAD-1", "SENT")
        search = driver.find_element(By.ID, "control_id")
        search.send_keys("UI-RAD-1")
        search.submit()
        timeline = wait_for(lambda: driver.find_elements(By.ID, "timeline"), 15, "the timeline")[0].text
        assert "UI-RAD-1" in timeline and "medallies" in timeline and "sent" in timeline

        # Qliq refuses the credentials: its destination is held, and the page says so.
        fault(demo, "qliq", status_next=1000, status_code=401)
        send(
            demo, "ehr-mdm-to-qliq", with_msh(sample("mdm_t02_discharge_summary.hl7"), control_id="UI-MDM-1")
        )
        wait_for(lambda: "held: auth" in open_console(driver, url), 60, "qliq held on the page")
        held_row = driver.find_element(By.XPATH, "//span[contains(@class, 'held')]/ancestor::tr").text
        assert "qliq" in held_row

        # MedAllies rejects one message: a dead letter; requeued from the page, it is delivered.
        fault(demo, "medallies", status_next=1, status_code=400)
        send(
            demo, "ris-oru-to-medallies", with_msh(sample("oru_r01_radiology_mri.hl7"), control_id="UI-RAD-2")
        )
        demo.wait_for_state("UI-RAD-2", "ERROR")
        row = wait_for(
            lambda: (
                open_console(driver, url) and driver.find_elements(By.XPATH, "//tr[td/a[text()='UI-RAD-2']]")
            ),
            30,
            "the dead letter on the page",
        )[0]
        row.find_element(By.XPATH, ".//button[text()='Requeue']").click()
        wait_for(lambda: "requeued." in page_text(driver), 15, "the requeue notice")
        demo.wait_for_state("UI-RAD-2", "SENT", timeout=60)
        driver.get(f"{url}message?control_id=UI-RAD-2")
        timeline = driver.find_element(By.ID, "timeline").text
        assert "requeued" in timeline and re.search(r"\bsent\b", timeline.split("requeued", 1)[1])

        # The channel files, unchanged, reloaded from the page: nothing restarts.
        open_console(driver, url)
        driver.find_element(By.XPATH, "//button[text()='Reload channels']").click()
        wait_for(lambda: "Reload: nothing changed" in page_text(driver), 30, "the reload's notice")

        fault(demo, "qliq", status_next=0)
        open_console(driver, url)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        assert SCREENSHOT.stat().st_size > 10_000

        # On a phone's width the page does not scroll sideways: only its wide tables do.
        driver.set_window_size(390, 844)
        open_console(driver, url)
        width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width
        assert demo.output("run", "err").count(token) == 1  # printed once, never logged
    finally:
        interrupt(engine)
