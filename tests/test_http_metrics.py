"""``/metrics`` of a real agent: valid for promtool, moving with the readings, labels capped."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from helpers import Mosquitto, Publisher
from prometheus_client.parser import text_string_to_metric_families
from test_http_live import HttpAgent, raise_alarm, running, topic

PROMTOOL = shutil.which("promtool")
LIMIT = 4


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[tuple[HttpAgent, Publisher]]:
    with running(tmp_path_factory, ["M1/temp", 'M2/p"ress\\ure'], broker=broker, http={"series_label_limit": LIMIT}) as live:
        yield live

def scrape(agent: HttpAgent) -> str:
    r = agent.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_exposition(live: tuple[HttpAgent, Publisher]) -> None:
    agent, pub = live
    raise_alarm(agent, pub, "M1/temp")  # every family populated: alarms, alarm latency, labels
    text = scrape(agent)
    assert PROMTOOL is not None
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert res.returncode == 0, (res.stdout + res.stderr).decode() + "\n" + text[:3000]
    # promtool prints lint problems (e.g. a counter without _total) and still exits 0 on some.
    assert not (res.stdout + res.stderr).strip(), (res.stdout + res.stderr).decode()


def test_metric_values_move_with_readings(live: tuple[HttpAgent, Publisher]) -> None:
    agent, pub = live
    before = scrape(agent)
    n = 50
    last = None
    for i in range(n):
        last = pub.reading(topic("M2/p\"ress\\ure"), 20.0 + (i % 5) * 0.1, time.time())
    assert last is not None
    last.wait_for_publish(10)
    pub.publish(topic("M2/bad"), b"not json").wait_for_publish(10)  # published last: counted last
    raised_before = value(before, "edge_agent_alarms_raised_total")
    # Wait until the agent has counted all of them (bounded), then compare.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(agent)
        if value(after, "edge_agent_messages_received_total") >= value(before, "edge_agent_messages_received_total") + n + 1:
            break
        time.sleep(0.05)
    assert value(after, "edge_agent_readings_received_total") >= value(before, "edge_agent_readings_received_total") + n
    assert value(after, "edge_agent_readings_scored_total") >= value(before, "edge_agent_readings_scored_total") + n
    # Scoring latency may be sampled (not every reading timed); it must move, by at most n.
    moved = value(after, "edge_agent_score_latency_seconds_count") - value(before, "edge_agent_score_latency_seconds_count")
    assert 1 <= moved <= n + 1
    assert value(after, "edge_agent_readings_rejected_total", reason="bad_json") >= 1
    assert value(after, "edge_agent_series_readings_total", series='M2/p"ress\\ure') >= 30 + n
    assert value(after, "edge_agent_broker_connected") == 1.0
    assert value(after, "edge_agent_ready") == 1.0
    assert value(after, "edge_agent_s3_enabled") == 0.0

    raise_alarm(agent, pub, 'M2/p"ress\\ure')
    text = scrape(agent)
    assert value(text, "edge_agent_alarms_raised_total") == raised_before + 1
    assert value(text, "edge_agent_series_alarm", series='M2/p"ress\\ure') == 1.0
    assert value(text, "edge_agent_series", state="alarm") >= 1
    assert value(text, "edge_agent_alarm_latency_seconds_count") >= 1
    assert value(text, "edge_agent_models_trained_total") >= 2
    assert value(text, "edge_agent_series_labels_capped") == 0.0


def test_per_series_labels_stop_at_the_limit(live: tuple[HttpAgent, Publisher]) -> None:
    agent, pub = live
    text = scrape(agent)
    if not any(name == "edge_agent_series_alarm" for name, _ in samples(text)):
        pytest.fail("per-series metrics missing while under the limit:\n" + text[:2000])
    now = time.time()
    last = None
    for i in range(LIMIT + 1):  # more series than the limit
        last = pub.reading(topic(f"X{i}/flow"), 1.0, now)
    assert last is not None
    last.wait_for_publish(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and value(scrape(agent), "edge_agent_series_labels_capped") != 1.0:
        time.sleep(0.05)
    text = scrape(agent)
    assert value(text, "edge_agent_series_labels_capped") == 1.0
    names = {name for name, _ in samples(text)}
    assert not names & {"edge_agent_series_alarm", "edge_agent_series_model_version", "edge_agent_series_readings_total"}
    assert value(text, "edge_agent_series", state="learning") >= LIMIT + 1
