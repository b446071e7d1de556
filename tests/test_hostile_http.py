"""Hostile-input campaign, attack class *HTTP*: the agent's own HTTP port under slow or idle
clients, large requests on the event loop, token guessing, and error bodies (issue 15,
findings 6 and 10). Each case: a real broker, a real agent process with its HTTP port, the
attack over real sockets, then the invariants (the agent scores and its alarm reaches SCADA).
"""

from __future__ import annotations

import socket
import time

import pytest
from helpers import wait_for


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (a 4xx/5xx before closing is fine), or None."""
    sock.settimeout(0.2)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


@pytest.mark.timeout(60)
def test_unfinished_headers_and_bodies_are_timed_out(make_campaign) -> None:
    c = make_campaign(http=True, **{"http.header_timeout_s": 1.0, "http.body_timeout_s": 1.5})
    idle = socket.create_connection(("127.0.0.1", c.http_port))
    half = socket.create_connection(("127.0.0.1", c.http_port))
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
    slow = socket.create_connection(("127.0.0.1", c.http_port))
    slow.sendall(b"POST /predict/c0/probe HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"values\": [")
    # A keep-alive client that finished one request and then starts a second one it never ends.
    kept = socket.create_connection(("127.0.0.1", c.http_port))
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert b"200 OK" in kept.recv(4096)
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    try:
        for sock, limit in ((idle, 3.0), (half, 3.0), (slow, 3.5), (kept, 3.0)):
            took = closed_within(sock, limit)
            assert took is not None, "the connection was left open"
    finally:
        for sock in (idle, half, slow, kept):
            sock.close()
    wait_for(lambda: c.get("/healthcheck")[1]["http"]["timed_out"] == {"headers": 3, "body": 1}, 5, "the timeouts counted")
    c.assert_invariants()


def _predict_load(c, stop, n: int, timings: list[float]) -> None:  # type: ignore[no-untyped-def]
    import json as _json
    import urllib.request

    body = _json.dumps({"values": [0.1 * (i % 7) for i in range(n)]}).encode()
    while not stop.is_set():
        req = urllib.request.Request(f"http://127.0.0.1:{c.http_port}/predict/c0/probe", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
            resp.read()
        timings.append(time.monotonic() - t0)


@pytest.mark.timeout(180)
def test_large_predict_requests_do_not_hold_back_alarms(make_campaign) -> None:
    """Issue 15 finding 10: POST /predict with 100,000 values cost 271 ms on the event loop;
    four clients repeating it pushed reading-to-alarm latency to 0.1-0.8 s. Large requests
    are parsed, scored and answered off the loop now."""
    import threading

    from campaign import CANARY_SERIES, CANARY_TOPIC

    c = make_campaign(http=True)
    quiet = []
    for _ in range(5):
        c.calm(CANARY_TOPIC)
        c.spike(CANARY_TOPIC, CANARY_SERIES)
        quiet.append(c.last_latency)
    stop = threading.Event()
    timings: list[float] = []
    clients = [threading.Thread(target=_predict_load, args=(c, stop, 100_000, timings), daemon=True) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        wait_for(lambda: len(timings) >= 4, 60, "the predict clients running")
        loaded = []
        for _ in range(10):
            c.calm(CANARY_TOPIC)
            c.spike(CANARY_TOPIC, CANARY_SERIES)
            loaded.append(c.last_latency)
    finally:
        stop.set()
        for t in clients:
            t.join(60)
    quiet.sort()
    loaded.sort()
    print(f"spike -> SCADA, quiet: median {quiet[2] * 1e3:.0f} ms max {quiet[-1] * 1e3:.0f} ms; with 4 predict clients "
          f"(100k values, {len(timings)} requests, median {sorted(timings)[len(timings) // 2] * 1e3:.0f} ms each): "
          f"median {loaded[5] * 1e3:.0f} ms max {loaded[-1] * 1e3:.0f} ms")
    assert loaded[5] < 0.25, loaded  # 0.89 s before (alarms waited behind the requests on the loop)
    c.assert_invariants()


def probes(c, late_s: float) -> tuple[int, int]:
    """(event-loop probe observations later than ``late_s``, all observations), from /metrics."""
    _, text = c.get("/metrics")
    total = above = 0.0
    for line in text.decode().splitlines():
        if line.startswith("edge_agent_event_loop_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            n = float(line.rsplit(" ", 1)[1])
            if le == "+Inf":
                total = n
            elif float(le) <= late_s:
                above = n  # cumulative: the last bucket at or below the bound
    return int(total - above), int(total)


def browse_while_spiking(c, paths: list[str]) -> tuple[float, list[float], list[str]]:
    """One client per path requests it in a loop while the canary is spiked 8 times: the
    share of loop probes later than 25 ms meanwhile, the spike -> SCADA latencies (sorted),
    and any errors."""
    import threading

    from campaign import CANARY_SERIES, CANARY_TOPIC

    stop = threading.Event()
    errors: list[str] = []

    def browse(path: str) -> None:
        while not stop.is_set():
            status, _ = c.get(path, timeout=30)
            if status != 200:
                errors.append(f"{path}: {status}")

    late0, total0 = probes(c, 0.025)
    browsers = [threading.Thread(target=browse, args=(p,), daemon=True) for p in paths]
    for t in browsers:
        t.start()
    latencies = []
    try:
        time.sleep(2.0)
        for _ in range(8):
            c.calm(CANARY_TOPIC)
            c.spike(CANARY_TOPIC, CANARY_SERIES)
            latencies.append(c.last_latency)
    finally:
        stop.set()
        for t in browsers:
            t.join(60)
    late1, total1 = probes(c, 0.025)
    return (late1 - late0) / max(1, total1 - total0), sorted(latencies), errors


@pytest.mark.timeout(300)
def test_listing_every_series_does_not_stall_the_loop(make_campaign) -> None:
    """Issue 15 finding 10: GET / with 100,000 series cost 92 ms of loop time (a sort of
    every series per page view). Listings now come from a shared snapshot built a chunk per
    loop pass; the loop's own lag probe and the canary's alarm show the loop stays free.

    Judged against a control in the same run (five clients polling /healthz, which costs
    the loop nothing per series), not an absolute time: a shared or slow machine delays both
    alike, while a listing that holds the loop for tens of ms per view shows as hundreds of
    late probes and a canary alarm several times slower than the control's."""
    n = 50_000
    c = make_campaign(http=True, **{"series.buffer_size": 128})
    for i in range(n):
        c.plc.publish(f"plant/bulk/m{i:05d}/s", b'{"value": 1.0}', qos=0)
    wait_for(lambda: c.get("/healthcheck")[1]["series"]["total"] > n, 60, f"{n} series")
    control_late, control_lat, errors = browse_while_spiking(c, ["/healthz"] * 5)
    paths = ["/?limit=10000", "/series?offset=40000&limit=10000", "/series?state=learning&limit=10000", "/healthcheck", "/metrics"]
    late, latencies, list_errors = browse_while_spiking(c, paths)
    print(f"{n} series, spike -> SCADA median: 5 clients listing them {latencies[4] * 1e3:.0f} ms, polling /healthz "
          f"{control_lat[4] * 1e3:.0f} ms; loop probes later than 25 ms: {late:.0%} listing, {control_late:.0%} polling")
    assert not errors and not list_errors, (errors + list_errors)[:5]
    # Seen here: 0-10 % in either phase on a quiet machine, up to 41 % listing with both cores
    # busy with other work; 68-70 % with the snapshot built in one pass per view (the finding's
    # cost, CHUNK and MAX_AGE_S disabled), against 3-4 % polling in that same run.
    assert late <= control_late + 0.5, f"{late:.0%} of loop probes over 25 ms late while listing, {control_late:.0%} while polling"
    assert latencies[4] <= 3 * control_lat[4] + 0.05, (latencies, control_lat)
    _, page = c.get("/?limit=5")
    assert b"49995 more series not shown" in page or b"more series not shown" in page
    c.assert_invariants()


@pytest.mark.timeout(120)
def test_a_large_predict_body_is_answered_like_a_small_one(make_campaign) -> None:
    """Bodies of 4 KB or more are parsed and scored in the side-work process: same answers,
    same 422 for invalid input (with the value's position), same 400 for both fields."""
    from campaign import CANARY_SERIES

    c = make_campaign(http=True)
    values = [0.01 * (i % 50) - 0.25 for i in range(2000)] + [30.0]
    status, big = c.post(f"/predict/{CANARY_SERIES}", {"values": values})
    assert status == 200 and len(big["predictions"]) == len(values) and big["anomalous"] is True
    status, small = c.post(f"/predict/{CANARY_SERIES}", {"values": values[-200:]})
    assert status == 200 and small["predictions"] == big["predictions"][-200:]
    assert [k for k in big if k != "predictions"] == ["series", "version", "detector", "threshold", "anomalous"]
    status, bad = c.post(f"/predict/{CANARY_SERIES}", {"values": [*values[:1500], "x", 1.0]})
    assert status == 422 and bad["error"] == "invalid_request" and bad["detail"][0]["loc"] == ["body", "values", "1500"]
    status, both = c.post(f"/predict/{CANARY_SERIES}", {"value": 1.0, "values": values})
    assert status == 400 and both["error"] == "bad_request"
    c.assert_invariants()


@pytest.mark.timeout(120)
def test_token_guessing_is_throttled_counted_and_logged_at_a_rate_limit(make_campaign) -> None:
    """Token guessing ran at ~1,000 tries/s with nothing logged. After 10 wrong tokens in a
    minute an address gets 429 with Retry-After, unchecked; the failures are in /metrics and
    in the log, a few lines for hundreds of tries."""
    from campaign import CANARY_SERIES

    c = make_campaign(http=True)
    log_before = len(c.agent.log())
    statuses = [c.post(f"/rollback/{CANARY_SERIES}", {}, token=f"guess-{i}")[0] for i in range(300)]
    assert statuses[:10] == [403] * 10 and set(statuses[10:]) == {429}
    status, body = c.request("POST", f"/rollback/{CANARY_SERIES}", token=None)
    assert status == 401  # no token at all is not a guess, and says what to send
    status, body = c.post(f"/rollback/{CANARY_SERIES}", {})  # the right token, same address: throttled too
    assert status == 429 and body["error"] == "too_many_attempts"
    _, metrics = c.get("/metrics", token=None)
    assert b"edge_agent_http_auth_failures_total 10.0" in metrics
    assert b"edge_agent_http_auth_throttled_total 291.0" in metrics
    logged = c.agent.log()[log_before:]
    assert 1 <= logged.count("wrong token from 127.0.0.1") <= 3
    c.assert_invariants()


@pytest.mark.timeout(120)
def test_error_bodies_never_contain_absolute_paths(make_campaign) -> None:
    """Error answers echoed absolute state paths (how the gateway is laid out); they keep
    only the last two components of a path now, on HTTP and in command answers."""
    from campaign import CANARY_SERIES

    c = make_campaign(http=True)
    status, fitted = c.post(f"/fit/{CANARY_SERIES}", {"last_n": 100})
    assert status == 200 and fitted["version"] == 2
    meta = next(c.agent.state_dir.glob("models/*/v000001/meta.json"))
    meta.write_text("{corrupt")
    status, body = c.post(f"/rollback/{CANARY_SERIES}?version=1", {})
    assert status == 409, body
    text = str(body["detail"])
    assert str(c.agent.state_dir) not in text and "/tmp/" not in text and "v000001/meta.json" in text, text
    c.assert_invariants()
