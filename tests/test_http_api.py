"""The JSON API of a real agent process: readiness, series views, fit (token), predict, errors, docs."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import Mosquitto, Publisher, wait_for
from test_http_live import TOKEN, HttpAgent, raise_alarm, running, topic

from edge_agent.http.rates import RateMeter

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Hostile on purpose: a slash (ids are "{machine}/{sensor}"), a space, '%', HTML and a quote.
ODD = 'Ofen 3%/t<b>"x"'


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[tuple[HttpAgent, Publisher]]:
    with running(tmp_path_factory, ["M1/temp", "M2/temp", ODD], broker=broker) as live:
        yield live

def assert_error(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"], body
    assert "Traceback" not in r.text
    return body


def test_readyz_is_503_until_the_broker_is_there(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "late-broker")  # port chosen, nothing listening yet
    agent = HttpAgent(tmp_path / "a", broker).start()
    try:
        assert agent.get("/healthz").status_code == 200  # alive, though not ready
        r = agent.get("/readyz")
        assert r.status_code == 503
        assert r.json()["ready"] is False
        assert any("broker not connected" in reason for reason in r.json()["reasons"]), r.json()
        assert agent.get("/healthcheck").json()["broker"]["status"] == "disconnected"
        broker.start()
        wait_for(lambda: agent.get("/readyz").status_code == 200, 20, "readyz 200 after the broker came up")
        assert agent.get("/readyz").json() == {"ready": True, "reasons": [], "degraded": []}
    finally:
        agent.close()
        broker.stop()


def test_healthcheck_reports_the_operating_figures(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    doc = agent.get("/healthcheck").json()
    assert doc["status"] == "ok" and doc["ready"] is True
    assert doc["trained_series"] >= 3 and doc["series"]["trained"] == doc["trained_series"]
    assert doc["readings_total"] >= 3 * 30
    for key in ("inference_latency_ms", "training_latency_ms"):
        assert set(doc[key]) >= {"avg_ms", "p95_ms", "p99_ms"}, doc[key]
    assert doc["training_latency_ms"]["count"] >= 3
    assert doc["broker"]["status"] == "connected"
    assert doc["s3"] == {"status": "disabled"}
    assert set(doc["outbox"]) >= {"depth", "bytes", "oldest_age_s", "dropped"}
    assert set(doc["alarms"]) >= {"raised", "cleared", "active"}
    assert isinstance(doc["readings_per_second"], float)


def test_reading_rate_is_a_counter_delta_over_the_window() -> None:
    # The meter the healthcheck uses, on a clock the test controls.
    now, count = [100.0], [0]
    meter = RateMeter(lambda: count[0], window_s=10.0, clock=lambda: now[0])
    assert meter.rate() == 0.0
    for _ in range(20):  # 50 readings/s for 20 s, sampled once a second
        meter.sample()
        now[0] += 1.0
        count[0] += 50
    assert meter.rate() == pytest.approx(50.0)
    for _ in range(12):  # then silence: the window forgets the old burst
        meter.sample()
        now[0] += 1.0
    assert meter.rate() == 0.0
    count[0] += 30  # 30 readings in the second since the last sample, 10 s window
    assert meter.rate() == pytest.approx(30 / 11.0)


def test_series_list_and_detail(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    listing = agent.get("/series").json()
    ids = [s["id"] for s in listing["series"]]
    assert {"M1/temp", "M2/temp", ODD} <= set(ids) and ids == sorted(ids)
    # Raw slash through the path converter, and the URL-encoded form, give the same series.
    raw = agent.get("/series/M1/temp").json()
    encoded = agent.get("/series/M1%2Ftemp").json()
    assert raw["id"] == encoded["id"] == "M1/temp"
    m = raw["model"]
    assert m["detector"] == "statistical" and m["version"] >= 1 and m["threshold"] == 3.0
    lo, hi = m["band"]
    assert lo < 20 < hi
    assert set(m["params"]) >= {"k", "mean", "std"}
    assert raw["state"] in ("normal", "alarm")
    assert raw["stored_versions"][-1] >= m["version"] and raw["active_version"] == m["version"]
    rec = raw["readings"]["recent"]
    assert rec["n"] >= 30 and rec["min"] <= rec["mean"] <= rec["max"]
    odd = agent.get("/series/" + quote(ODD, safe="")).json()
    assert odd["id"] == ODD
    assert agent.get("/series?state=learning").json()["total"] == 0
    assert_error(agent.get("/series/no/such-series"), 404)
    assert_error(agent.get("/series?state=bogus"), 422)
    assert_error(agent.get("/series?limit=0"), 422)


def test_fit_needs_the_token(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    body = {"values": [1.0, 2.0, 3.0, 2.0, 1.0]}
    assert_error(agent.post("/fit/M1/temp", json=body), 401)
    assert_error(agent.post("/fit/M1/temp", json=body, headers={"Authorization": "Bearer wrong"}), 403)
    assert_error(agent.post("/fit/M1/temp", json=body, headers={"Authorization": "Basic dTpw"}), 401)
    before = agent.series("M1/temp")["model"]["version"]
    r = agent.post("/fit/M1/temp", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["series"] == "M1/temp" and doc["version"] == before + 1
    assert doc["detector"] == "statistical" and doc["n_samples"] == 5 and doc["train_ms"] >= 0
    live_model = agent.series("M1/temp")["model"]
    assert live_model["version"] == before + 1 and live_model["params"]["mean"] == pytest.approx(1.8)


def test_fit_with_params_then_rollback(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    r = agent.post("/fit/M2/temp", json={"values": [10, 11, 9, 10], "detector": "statistical", "params": {"k": 5}}, headers=AUTH)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert agent.series("M2/temp")["model"]["threshold"] == 5.0
    assert_error(agent.post("/rollback/M2/temp"), 401)
    r = agent.post("/rollback/M2/temp", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == version - 1
    assert agent.series("M2/temp")["model"]["version"] == version - 1
    assert_error(agent.post("/rollback/M2/temp?version=999", headers=AUTH), 409)
    assert_error(agent.post("/rollback/none/such", headers=AUTH), 404)


def test_fit_refuses_bad_input_with_4xx(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    cases = [
        ({"values": [1.0]}, 422),  # too few
        ({"values": [1.0, "x"]}, 422),
        ({"values": [1.0, 2.0], "extra": 1}, 422),
        ({"values": [1.0, 2.0], "detector": "nope"}, 422),
        ({"values": [1.0, 2.0], "params": {"bogus": 1}}, 400),
        ({"values": [1.0, 2.0], "params": {"k": -1}}, 400),
        ({"last_n": 10_000_000}, 400),
    ]
    for body, status in cases:
        assert_error(agent.post("/fit/M1/temp", json=body, headers=AUTH), status)
    r = agent.post("/fit/M1/temp", content=b'{"values": [1.0, NaN]}', headers={**AUTH, "content-type": "application/json"})
    assert_error(r, 422)
    r = agent.post("/fit/M1/temp", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert_error(r, 422)


def test_fit_is_refused_when_no_token_is_configured(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = HttpAgent(tmp_path, mosquitto, token=None).start()
    try:
        body = assert_error(agent.post("/fit/M1/temp", json={"values": [1, 2, 3]}, headers=AUTH), 403)
        assert "token_file" in body["detail"]
        assert_error(agent.post("/rollback/M1/temp", headers=AUTH), 403)
    finally:
        assert agent.close() == 0


def test_predict_scores_without_touching_live_state(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    before = agent.series(ODD)
    health_before = agent.get("/healthcheck").json()["alarms"]
    path = "/predict/" + quote(ODD, safe="")
    r = agent.post(path, json={"values": [20.0, 1000.0, 20.5]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["series"] == ODD and doc["version"] == before["model"]["version"] and doc["anomalous"] is True
    assert [p["anomalous"] for p in doc["predictions"]] == [False, True, False]
    assert doc["predictions"][1]["score"] > doc["threshold"]
    one = agent.post(path, json={"value": 1000.0}).json()
    assert one["predictions"][0]["anomalous"] is True
    after = agent.series(ODD)
    # Nothing about the live series moved: same state, counters, last reading, no alarm.
    for key in ("state", "alarm", "readings", "model"):
        assert after[key] == before[key], key
    assert agent.get("/healthcheck").json()["alarms"] == health_before
    assert_error(agent.post(path, json={}), 400)
    assert_error(agent.post(path, json={"value": 1.0, "values": [1.0]}), 400)
    assert_error(agent.post(path, json={"value": "x"}), 422)
    assert_error(agent.post("/predict/no/such", json={"value": 1.0}), 404)


def test_predict_on_a_learning_series_is_409(live: tuple[HttpAgent, Publisher]) -> None:
    agent, pub = live
    pub.reading(topic("M7/new"), 1.0, time.time()).wait_for_publish(10)
    wait_for(lambda: agent.series("M7/new"), 10, "the new series")
    assert_error(agent.post("/predict/M7/new", json={"value": 1.0}), 409)


def test_alarm_state_shows_in_the_series_view(live: tuple[HttpAgent, Publisher]) -> None:
    agent, pub = live
    doc = raise_alarm(agent, pub, "M1/temp")
    assert doc["alarm"]["active"] is True and doc["alarm"]["raised_alert_id"]
    assert doc["alarm"]["marks"][-1]["state"] == "raised" and doc["alarm"]["marks"][-1]["value"] == 1000.0
    assert doc["readings"]["last_value"] == 1000.0
    assert not math.isnan(doc["readings"]["recent"]["max"])


def test_bad_requests_get_json_errors(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    assert_error(agent.get("/no-such-page"), 404)
    body = assert_error(agent.client.delete("/series/M1/temp"), 405)
    assert body["error"] == "method_not_allowed"
    assert_error(agent.get("/plot/M1/temp.png?n=5"), 422)
    assert_error(agent.get("/plot/M1/temp.png?width=99999"), 422)
    assert_error(agent.get("/plot/M1/temp.png?width=abc"), 422)
    assert_error(agent.post("/fit/M1/temp", content=b"x" * (17 * 1024 * 1024), headers={**AUTH, "content-type": "application/json"}), 413)


def test_docs_and_openapi_serve(live: tuple[HttpAgent, Publisher]) -> None:
    agent, _ = live
    r = agent.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    spec = agent.get("/openapi.json").json()
    for path in ("/healthz", "/readyz", "/healthcheck", "/metrics", "/series/{series_id}", "/fit/{series_id}", "/predict/{series_id}", "/plot/{series_id}.png", "/"):
        assert path in spec["paths"], path
    fit = spec["paths"]["/fit/{series_id}"]["post"]
    assert fit.get("security"), "fit must declare its bearer token"
    assert "FitBody" in spec["components"]["schemas"]


def test_predict_leaves_a_streaming_detector_alone(live: tuple[HttpAgent, Publisher]) -> None:
    # The adaptive detector learns in score_one: scoring the live model would move its state.
    agent, pub = live
    sid = "A1/adaptive"
    values = [20.0 + 0.1 * (i % 7) for i in range(200)]
    r = agent.post("/fit/" + quote(sid, safe=""), json={"values": values, "detector": "adaptive"}, headers=AUTH)
    assert r.status_code == 200, r.text
    before = agent.series(sid)["model"]["params"]
    for _ in range(5):
        doc = agent.post("/predict/" + quote(sid, safe=""), json={"values": [500.0] * 20}).json()
        assert doc["detector"] == "adaptive" and doc["predictions"][0]["anomalous"] is True
    assert agent.series(sid)["model"]["params"] == before
    # Control: the same value arriving as a live reading does move the state.
    pub.reading(topic(sid), 500.0, time.time()).wait_for_publish(10)
    wait_for(lambda: agent.series(sid)["model"]["params"] != before, 10, "the live reading to update the detector")
