"""Machines through the signed commands and the HTTP port (issue 14 point 4), end to end: a
real agent process with a simulated pump (one sensor per topic, ``test_machines_e2e.py``),
commands signed and published by an independent paho client through a real mosquitto, the
HTTP port read by a plain HTTP client.

A command names a machine with ``args.machine``, never inside ``args.series``: the
subscription here makes a series and a machine share the id ``l1/p1`` on purpose, and each
command must act on the one its argument names."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import (
    AgentProcess,
    Mosquitto,
    Publisher,
    Subscriber,
    agent_config,
    free_port,
    wait_for,
)
from test_machines_e2e import BREAK_AT, SENSORS, T0, pump_rows

from edge_agent.command_auth import sign
from edge_agent.model_store import ModelStore

CHROMIUM = shutil.which("chromium")
KEY = b"0123456789abcdef0123456789abcdef"
TOKEN = "t0ken-for-machine-tests"
ROWS = 700  # the first 400 complete rows fit the machine's first model; the last 200 are scored


def publish(pub: Publisher, rows: list[list[float]], start: int, stop: int) -> None:
    infos = []
    for t in range(start, stop):
        for j, s in enumerate(SENSORS):
            infos.append(pub.reading(f"plant/l1/p1/{s}", rows[t][j], T0 + t + 0.01 * j))
        # A series whose id is the machine's: "l1/p1".
        infos.append(pub.reading("plain/l1/p1", rows[t][0], T0 + t))
    for info in infos:
        info.wait_for_publish(60)


class Commands:
    """A SCADA-side operator: signs commands, reads the 3.1.1 answers on .../response."""

    def __init__(self, mosquitto: Mosquitto) -> None:
        self.pub = Publisher(mosquitto)
        self.answers = Subscriber(mosquitto, "edge/gw-test/cmd/+/response")
        self.n = 0

    def run(self, command: str, args: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        self.n += 1
        rid = f"r{self.n}"
        self.pub.publish(f"edge/gw-test/cmd/{command}", sign(KEY, command, args, request_id=rid)).wait_for_publish(10)

        def final() -> dict[str, Any] | None:
            got = [a for a in self.answers.json() if a.get("request_id") == rid and a["status"] != "accepted"]
            return got[0] if got else None

        return wait_for(final, timeout, f"the answer to {command} {args}")

    def close(self) -> None:
        self.pub.close()
        self.answers.close()


def get(port: int, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("content-type", "")


def post(port: int, path: str, body: dict[str, Any] | None = None, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body or {}).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert zlib.crc32(png[12:29]) == struct.unpack(">I", png[29:33])[0]  # a whole IHDR chunk
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def pump_agent(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto):
    tmp = tmp_path_factory.mktemp("machine_cmds")
    key = tmp / "cmd.key"
    key.write_bytes(KEY + b"\n")
    (tmp / "api-token").write_text(TOKEN + "\n")
    port = free_port()
    cfg = agent_config(tmp, broker, **{
        "commands": {"key_file": str(key)},
        "detector": {"name": "statistical", "min_train_samples": 100},
        "subscriptions": [
            {"topic": "plant/{line}/{machine}/{sensor}", "series": "{machine}/{sensor}", "machine": "{line}/{machine}"},
            {"topic": "plain/{line}/{machine}", "series": "{line}/{machine}"},
        ],
        "ingest": {"max_past_age_s": 1e6},
        "http": {"enabled": True, "port": port, "token_file": str(tmp / "api-token")},
    })
    agent = AgentProcess(tmp, cfg).start()
    agent.wait_connected()
    pub = Publisher(broker)
    try:
        rows = pump_rows()
        publish(pub, rows, 0, 500)
        wait_for(lambda: "machine 'l1/p1': model v1" in agent.log(), 90, "the machine's first model")
        wait_for(lambda: agent.models_active() >= 7, 60, "6 series models and 1 machine model")
        publish(pub, rows, 500, ROWS)  # scored by the model
        wait_for(lambda: json.loads(get(port, "/machines/l1/p1")[1]).get("scored", 0) >= 150, 30, "rows scored")
    finally:
        pub.close()
    yield agent, port
    assert agent.stop() == 0


def machine_versions(agent: AgentProcess) -> tuple[list[int], int | None]:
    store = ModelStore.for_machines(agent.state_dir / "machine_models")
    return store.versions("l1/p1"), store.active_version("l1/p1")


@pytest.mark.timeout(180)
def test_signed_commands_act_on_the_machine_they_name(pump_agent: tuple[AgentProcess, int], broker: Mosquitto) -> None:
    agent, _ = pump_agent
    ops = Commands(broker)
    try:
        st = ops.run("status", {"machine": "l1/p1"})
        assert st["status"] == "done", st
        assert st["result"]["machine"] == "l1/p1" and sorted(st["result"]["sensors"]) == sorted(SENSORS)
        assert st["result"]["model"]["version"] == 1 and st["result"]["model"]["detector"] == "baseline_t2"
        assert st["result"]["state"] == "normal"
        # The same id as a series: the series' status, not the machine's.
        series = ops.run("status", {"series": "l1/p1"})
        assert [s["series"] for s in series["result"]["series"]] == ["l1/p1"] and "machine" not in series["result"]

        # The pump's relation breaks (current up, flow down): the machine alarm; the operator
        # accepts it by command, and it ends "accepted" naming who.
        alarms = Subscriber(broker, "edge/gw-test/machine_alerts/#")
        pub = Publisher(broker)
        try:
            publish(pub, pump_rows(), ROWS, BREAK_AT + 20)
        finally:
            pub.close()
        wait_for(lambda: [a["state"] for a in alarms.json()] == ["raised"], 60, "the machine alarm")
        rb = ops.run("rebaseline", {"machine": "l1/p1", "by": "ana"})
        assert rb["status"] == "done" and rb["result"]["was_in_alarm"], rb
        wait_for(lambda: len(alarms.json()) == 2, 20, "the accepted message")
        raised, accepted = alarms.json()
        alarms.close()
        assert accepted["state"] == "accepted" and accepted["raised_alert_id"] == raised["alert_id"] and "ana" in accepted["message"]
        assert rb["result"]["accepted_alert_id"] == raised["alert_id"]
        assert ops.run("status", {"machine": "l1/p1"})["result"]["state"] == "normal"

        fit = ops.run("fit", {"machine": "l1/p1", "last_n": 150})
        assert fit["status"] == "done", fit
        assert fit["result"]["machine"] == "l1/p1" and fit["result"]["version"] == 2 and fit["result"]["rows"] == 150
        assert machine_versions(agent) == ([1, 2], 2)
        assert ops.run("status", {"machine": "l1/p1"})["result"]["model"]["version"] == 2

        back = ops.run("rollback", {"machine": "l1/p1"})
        assert back["status"] == "done", back
        assert back["result"] == {"machine": "l1/p1", "active_version": 1, "detector": "baseline_t2"}
        assert machine_versions(agent) == ([1, 2], 1)
        assert ops.run("status", {"machine": "l1/p1"})["result"]["model"]["version"] == 1

        # Rebaselined while normal: nothing to accept.
        rb = ops.run("rebaseline", {"machine": "l1/p1"})
        assert rb["status"] == "done" and not rb["result"]["was_in_alarm"], rb

        # Refusals say why and change nothing.
        both = ops.run("fit", {"machine": "l1/p1", "series": "l1/p1"})
        assert both["status"] == "failed" and "not both" in both["error"]
        unknown = ops.run("rollback", {"machine": "l9/nope"})
        assert unknown["status"] == "failed" and "no machine 'l9/nope'" in unknown["error"]
        short = ops.run("fit", {"machine": "l1/p1", "last_n": 10})
        assert short["status"] == "failed" and "last_n must be at least" in short["error"]
        bad = ops.run("status", {"machine": ""})
        assert bad["status"] == "failed" and "machine must be a machine id" in bad["error"]
        assert machine_versions(agent) == ([1, 2], 1)
    finally:
        ops.close()


@pytest.mark.timeout(120)
def test_http_lists_machines_and_plots_one(pump_agent: tuple[AgentProcess, int]) -> None:
    _, port = pump_agent
    code, body, ctype = get(port, "/machines")
    assert code == 200 and ctype.startswith("application/json")
    (m,) = json.loads(body)["machines"]
    assert m["machine"] == "l1/p1" and m["state"] == "normal" and m["sensors"] == len(SENSORS)
    assert m["model"]["detector"] == "baseline_t2" and isinstance(m["last_score"], float)
    assert isinstance(m["top_sensors"], list)

    code, body, _ = get(port, "/machines/l1/p1")  # an id with "/", as series routes take them
    assert code == 200
    doc = json.loads(body)
    assert doc["machine"] == "l1/p1" and sorted(doc["sensors"]) == sorted(SENSORS) and len(doc["contributions"]) == len(SENSORS)
    code, body, _ = get(port, "/machines/l9/nope")
    assert code == 404 and json.loads(body)["error"] == "unknown_machine"

    code, png, ctype = get(port, "/machine_plot/l1/p1.png?width=700&height=900")
    assert code == 200 and ctype == "image/png"
    assert png_size(png) == (700, 900)
    code, _, _ = get(port, "/machine_plot/l9/nope.png")
    assert code == 404

    code, page, _ = get(port, "/")
    html = page.decode()
    row = re.search(r'<tr class="machine row-normal" data-machine="l1/p1">(.*?)</tr>', html)
    assert row is not None, html[:3000]
    assert 'state-normal">normal<' in row[1] and "baseline_t2 v" in row[1] and "/machine_plot/l1%2Fp1.png" in row[1]
    assert 'id="machines"' in html


HOSTILE = 'p<img src=x onerror="alert(1)">&q'  # a machine level of a topic: shown as text, never an element


@pytest.mark.timeout(120)
@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")
def test_status_page_lists_machines_in_chromium(pump_agent: tuple[AgentProcess, int], broker: Mosquitto, tmp_path: Path) -> None:
    _, port = pump_agent
    pub = Publisher(broker)
    try:  # a second machine, learning, whose id is hostile markup
        pub.reading(f"plant/l2/{HOSTILE}/current", 1.0, T0 + ROWS).wait_for_publish(10)
    finally:
        pub.close()
    hostile_id = f"l2/{HOSTILE}"
    wait_for(lambda: len(json.loads(get(port, "/machines")[1])["machines"]) == 2, 10, "the second machine")
    res = subprocess.run([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom",
        f"http://127.0.0.1:{port}/?refresh=0",
    ], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    rows = [(html.unescape(mid), state) for state, mid in re.findall(r'<tr class="machine row-(\w+)" data-machine="([^"]*)">', dom)]
    assert rows == [(hostile_id, "learning"), ("l1/p1", "normal")], rows  # by state (alarm, learning, normal), then id
    assert "<img" not in dom and "p&lt;img src=x onerror=" in dom
    assert '<tbody id="machines">' in dom and "/machine_plot/l1%2Fp1.png" in dom
    code, body, _ = get(port, "/machines/" + quote(hostile_id, safe=""))
    assert code == 200 and json.loads(body)["machine"] == hostile_id and json.loads(body)["state"] == "learning"
    code, png, _ = get(port, "/machine_plot/" + quote(hostile_id, safe="") + ".png")  # no rows yet: still a picture
    assert code == 200 and png_size(png) == (900, 720)


@pytest.mark.timeout(120)
def test_http_fits_and_rolls_back_a_machine_behind_the_token(pump_agent: tuple[AgentProcess, int]) -> None:
    """POST /machine_fit and /machine_rollback, as series have /fit and /rollback: the token is
    required, the machine named in the path acted on, the series of the same id left alone."""
    agent, port = pump_agent
    before, active = machine_versions(agent)
    series_models = agent.log().count("series 'l1/p1': model v")
    assert post(port, "/machine_fit/l1/p1", {"last_n": 150}, token=None)[0] == 401
    assert post(port, "/machine_fit/l1/p1", {"last_n": 150}, token="wrong")[0] == 403
    code, err = post(port, "/machine_fit/l9/nope", {})
    assert code == 404 and err["error"] == "unknown_machine", err
    assert post(port, "/machine_fit/l1/p1", {"last_n": 10})[0] == 422  # a machine refits on at least 50 rows
    code, err = post(port, "/machine_fit/l1/p1", {"detector": "no_such_detector"})
    assert code == 400 and "no_such_detector" in err["detail"], err

    code, fit = post(port, "/machine_fit/l1/p1", {"last_n": 150})
    assert code == 200, fit
    assert fit["machine"] == "l1/p1" and fit["version"] == max(before) + 1 and fit["rows"] == 150 and fit["detector"] == "baseline_t2"
    assert machine_versions(agent) == ([*before, fit["version"]], fit["version"])
    assert json.loads(get(port, "/machines/l1/p1")[1])["model"]["version"] == fit["version"]

    assert post(port, "/machine_rollback/l1/p1", token=None)[0] == 401
    code, back = post(port, f"/machine_rollback/l1/p1?version={active}")
    assert code == 200 and back == {"machine": "l1/p1", "active_version": active, "detector": "baseline_t2"}, back
    assert machine_versions(agent)[1] == active
    code, err = post(port, "/machine_rollback/l1/p1?version=99")
    assert code == 409 and err["error"] == "no_such_version", err
    assert machine_versions(agent)[1] == active
    assert agent.log().count("series 'l1/p1': model v") == series_models  # the series l1/p1 untouched
