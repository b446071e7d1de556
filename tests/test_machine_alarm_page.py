"""The status page's operator buttons on a machine's alarm, pressed in headless Chromium (over the
DevTools protocol, ``cdp.py``): the operator types the token, acknowledges the machine's alarm,
shelves the machine (the page's prompts answered), finds it in the shelves table and unshelves
it there; the filter box hides and shows the machine's row. Each press goes through the page's
own script to ``/machine_ack``, ``/machine_shelve``, ``/machine_unshelve`` with the token, and
what the agent then holds is read back from ``GET /alarms``. A real agent process, a real
mosquitto, the simulated pump's relation break."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cdp import CHROMIUM, Browser
from helpers import Mosquitto, Publisher, Subscriber
from test_http_live import TOKEN, HttpAgent
from test_machine_alarm_lifecycle_e2e import fit_then_break, pump_rows

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")

ROW = 'document.querySelector(\'tr.machine-alarm[data-machine="l1/p1"]\')'


def machine_alarm(agent: HttpAgent) -> dict:
    return next(a for a in agent.get("/alarms").json()["alarms"] if a["machine"] == "l1/p1")


def press(browser: Browser, selector: str) -> None:
    browser.evaluate("document.getElementById('op-result').textContent = ''")
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
    result = browser.wait("document.getElementById('op-result').textContent")
    assert result == "done", result


@pytest.mark.timeout(180)
def test_an_operator_acks_shelves_and_unshelves_a_machine_alarm_on_the_page(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = HttpAgent(tmp_path, mosquitto, **{
        "detector.min_train_samples": 100,
        "subscriptions": [{"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"}],
        "ingest.max_past_age_s": 1e6,
    })
    rows = pump_rows()
    alarms = Subscriber(mosquitto, "edge/gw-test/machine_alerts/#")
    pub = Publisher(mosquitto)
    agent.start()
    browser = None
    try:
        fit_then_break(agent, pub, rows, alarms, "the machine alarm")

        browser = Browser(tmp_path)
        browser.navigate(agent.base + "/?refresh=0")
        assert browser.evaluate(f"{ROW}.querySelector('.ops').offsetParent === null")  # no token: no buttons shown
        browser.evaluate("{ const f = document.getElementById('token'); f.value = " + json.dumps(TOKEN) + "; f.dispatchEvent(new Event('change')) }")
        assert browser.evaluate("document.body.classList.contains('operator')")

        press(browser, 'tr.machine-alarm[data-machine="l1/p1"] button[data-op="ack"]')
        cond = machine_alarm(agent)
        assert (cond["state"], cond["acked_by"]) == ("active_acked", "http")
        browser.wait(f"{ROW} && {ROW}.textContent.includes('acknowledged by http')")  # refreshed in place

        browser.evaluate("window.answers = ['30', 'pump overhaul']; window.prompt = () => window.answers.shift()")
        press(browser, 'tr.machine-alarm[data-machine="l1/p1"] button[data-op="shelve"]')
        (shelf,) = agent.get("/alarms").json()["shelved"]
        assert (shelf["machine"], shelf["series"], shelf["reason"], shelf["by"]) == ("l1/p1", None, "pump overhaul", "http")
        assert shelf["until"] - time.time() == pytest.approx(1800, abs=30)
        browser.wait("!!document.querySelector('#shelves tr[data-machine=\"l1/p1\"]')")
        assert browser.evaluate(f"{ROW}.textContent.includes('shelved')")

        # The filter box applies to machine rows as to series rows.
        browser.evaluate("{ const q = document.getElementById('filter'); q.value = 'no-such'; q.dispatchEvent(new Event('input')) }")
        assert browser.evaluate(f"{ROW}.style.display") == "none"
        browser.evaluate("{ const q = document.getElementById('filter'); q.value = 'P1'; q.dispatchEvent(new Event('input')) }")
        assert browser.evaluate(f"{ROW}.style.display") == ""

        press(browser, '#shelves button[data-op="unshelve"][data-machine="l1/p1"]')
        assert agent.get("/alarms").json()["shelved"] == []
        browser.wait("!document.querySelector('#shelves tr[data-machine=\"l1/p1\"]')")
        assert [a["state"] for a in alarms.json()] == ["raised"]  # published once, before the shelve
    finally:
        if browser is not None:
            browser.close()
        pub.close()
        alarms.close()
        assert agent.close() == 0, agent.log()[-3000:]
