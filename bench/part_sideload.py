"""Part 4, latency under side load: the part 3 measurement while (a) signed `fit` commands for 100
series run back to back over MQTT and (b) plots are requested continuously from another process."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import finish_publishers, http_get, spawn_loadgen, start_broker, summary, workdir
from bench.part_latency import METHOD, latency_run, start_agent

FIT_PATTERN = "m0[0-9][0-9]/temp"  # m000..m099: 100 series


def fit_side(broker: Any, key: bytes, gateway: str) -> Any:
    import paho.mqtt.client as paho

    from edge_agent.command_auth import sign

    def start(start_at: float, seconds: float) -> Any:
        done_q: list[dict[str, Any]] = []
        ev = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-ops-{time.time_ns()}", clean_session=True)

        def on_message(cl: Any, ud: Any, msg: Any) -> None:
            doc = json.loads(msg.payload)
            if doc.get("status") in ("done", "failed"):
                done_q.append(doc)
                ev.set()

        c.on_message = on_message
        c.connect(broker.host, broker.port)
        c.subscribe(f"edge/{gateway}/cmd/fit/response", qos=1)
        c.loop_start()
        stop = threading.Event()
        results: list[dict[str, Any]] = []

        def loop() -> None:
            while time.time() < start_at + 1.0 and not stop.is_set():
                time.sleep(0.01)
            end = start_at + seconds - 0.5
            while time.time() < end and not stop.is_set():
                ev.clear()
                n0 = len(done_q)
                t0 = time.perf_counter()
                c.publish(f"edge/{gateway}/cmd/fit", sign(key, "fit", {"series": FIT_PATTERN}), qos=1)
                ev.wait(60)
                if len(done_q) > n0:
                    d = done_q[-1]
                    results.append({"seconds": time.perf_counter() - t0, "status": d.get("status"),
                                    "fitted": len((d.get("result") or {}).get("fitted", [])), "error": d.get("error")})
                else:
                    results.append({"seconds": time.perf_counter() - t0, "status": "timeout", "fitted": 0})

        th = threading.Thread(target=loop, daemon=True)
        th.start()

        def finish() -> dict[str, Any]:
            stop.set()
            th.join(70)
            c.loop_stop()
            c.disconnect()
            ok = [r for r in results if r["status"] == "done"]
            return {"fit commands completed": len(ok), "series fitted": sum(r["fitted"] for r in ok),
                    "fit command seconds (median)": summary([r["seconds"] for r in ok]).get("median"),
                    "failed": len(results) - len(ok), "errors": [r.get("error") for r in results if r["status"] != "done"][:3]}

        return finish

    return start


def plot_side(agent: Any, tmp: Path) -> Any:
    def start(start_at: float, seconds: float) -> Any:
        out = tmp / f"plot-{time.time_ns()}.json"
        p = spawn_loadgen("plot", agent.url(""), 1000, seconds + max(0.0, start_at - time.time()), out)
        hc_samples: list[Any] = []

        def finish() -> dict[str, Any]:
            hc_samples.append(agent.healthcheck().get("inference_latency_ms"))
            p.wait(60)
            d = json.loads(out.read_text())
            s = summary(d["latencies_s"], 1e3, "ms")
            return {"plots rendered": s.get("n", 0), "plots/s": s.get("n", 0) / d["seconds"], "plot latency median ms": s.get("median"),
                    "plot latency p99 ms": s.get("p99"), "errors": d["errors"]}

        return finish

    return start


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 10 if quick else 20
    broker = start_broker("broker-sideload")
    tmp = workdir("sideload")
    key = b"bench-" + str(time.time_ns()).encode()
    (tmp / "cmd.key").write_bytes(key)
    agent = start_agent(tmp, broker, **{"commands.key_file": str(tmp / "cmd.key")})
    try:
        out: dict[str, Any] = {"method": METHOD + " Side loads: (a) a signed `fit` command for the 100 series m000..m099 "
                               "(statistical, on each series' buffered readings, models written to the store) published again as soon as "
                               "the previous one answers `done`, for the whole run; (b) a separate process requesting GET /plot/{id}.png "
                               "for random series back to back (one at a time; each request renders, since every reading changes the series). "
                               "A baseline without side load runs first on the same agent.", "seconds": seconds}
        out["baseline"] = latency_run(broker, agent, tmp, seconds, tag="baseline")
        out["fit"] = latency_run(broker, agent, tmp, seconds, side=fit_side(broker, key, agent.config["gateway_id"]), tag="fit")
        out["plot"] = latency_run(broker, agent, tmp, seconds, side=plot_side(agent, tmp), tag="plot")
        out["plot"]["rss_after_plots_mb"] = agent.rss() / 1024
        return out
    finally:
        agent.stop()
        broker.stop()


__all__ = ["run", "finish_publishers", "http_get"]

if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=1, default=str))
