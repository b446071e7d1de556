"""Shared bench plumbing: processes (broker, agent) with guaranteed cleanup, statistics, machine info."""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

def _load_helpers() -> Any:
    # tests/ is not a package (and a site-packages "tests" may shadow it): load by path.
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_agent_test_helpers", REPO / "tests" / "helpers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_h = _load_helpers()
AgentProcess, Mosquitto, agent_config = _h.AgentProcess, _h.Mosquitto, _h.agent_config
free_port, wait_for, wait_port = _h.free_port, _h.wait_for, _h.wait_port

__all__ = [
    "AgentProcess", "Mosquitto", "agent_config", "free_port", "wait_for", "wait_port",
    "summary", "machine_info", "track", "cleanup_all", "workdir", "http_get", "BenchAgent",
    "rss_kb", "series_topic", "series_id", "N_SERIES_DEFAULT",
]

N_SERIES_DEFAULT = 1000

# ---- process hygiene -----------------------------------------------------------------------
_tracked: list[Any] = []
_lock = threading.Lock()


def track(obj: Any) -> Any:
    """Remember a process-like object (``kill()`` or ``Popen``) to kill on exit."""
    with _lock:
        _tracked.append(obj)
    return obj


def cleanup_all() -> None:
    with _lock:
        items = list(reversed(_tracked))
        _tracked.clear()
    for obj in items:
        try:
            if isinstance(obj, subprocess.Popen):
                if obj.poll() is None:
                    obj.kill()
                    obj.wait(5)
            elif hasattr(obj, "kill"):
                obj.kill()
        except Exception:
            pass


def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(cleanup_all)
signal.signal(signal.SIGTERM, _on_signal)

_WORK_ROOT: Path | None = None


def workdir(name: str) -> Path:
    """A fresh directory under one temporary root removed at exit."""
    global _WORK_ROOT
    if _WORK_ROOT is None:
        _WORK_ROOT = Path(tempfile.mkdtemp(prefix="edge-bench-"))
        atexit.register(lambda: shutil.rmtree(_WORK_ROOT, ignore_errors=True))
    d = _WORK_ROOT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


# ---- statistics ----------------------------------------------------------------------------
def summary(values: Any, scale: float = 1.0, unit: str = "") -> dict[str, Any]:
    """min/avg/median/p95/p99/max of ``values * scale``."""
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 0:
        return {"n": 0, "unit": unit}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size), "unit": unit, "min": float(a.min()), "avg": float(a.mean()), "median": float(p50),
        "p95": float(p95), "p99": float(p99), "max": float(a.max()),
    }


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5).stdout.splitlines()[0]
    except Exception:
        mosq = "?"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "edge_agent"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        commit, dirty = "?", ""
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mosquitto": mosq,
        "git_commit": commit,
        "edge_agent_dirty": bool(dirty),
        "loadavg_at_start": os.getloadavg(),
    }


# ---- agent helpers -------------------------------------------------------------------------
def series_id(i: int) -> str:
    return f"m{i:03d}/temp" if i < 1000 else f"m{i}/temp"


def series_topic(i: int) -> str:
    return f"plant/l1/{series_id(i).split('/')[0]}/temp"


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class BenchAgent(AgentProcess):
    """``edge-agent run`` with the HTTP port on a free loopback port and bench-friendly helpers."""

    def __init__(self, tmp: Path, broker: Mosquitto, name: str = "agent", **overrides: Any) -> None:
        self.http_port = free_port()
        base = {
            "log.level": "INFO",
            "http.enabled": True,
            "http.port": self.http_port,
            "detector.name": "statistical",
            "detector.min_train_samples": 100,
        }
        base.update(overrides)
        cfg = agent_config(tmp, broker, **base)
        super().__init__(tmp, cfg, name=name)

    switch_interval: float | None = None  # experiment: run the agent with sys.setswitchinterval(x)

    def start(self) -> BenchAgent:
        if self.switch_interval is None:
            super().start()
        else:
            code = (f"import sys, runpy; sys.setswitchinterval({self.switch_interval!r}); "
                    f"sys.argv = ['edge_agent', 'run', '-c', {str(self.cfg_path)!r}]; runpy.run_module('edge_agent', run_name='__main__')")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log, env=env, cwd=REPO)
        track(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.01) -> float:
        """Poll /readyz until 200; returns the monotonic time it answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                code, _ = http_get(self.url("/readyz"), timeout=1.0)
                if code == 200:
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(interval)
        raise TimeoutError(f"agent not ready after {timeout}s\n{self.log()[-3000:]}")

    def healthcheck(self) -> dict[str, Any]:
        return json.loads(http_get(self.url("/healthcheck"), timeout=10)[1])

    def metric(self, name: str) -> float:
        """One unlabelled sample from /metrics (``edge_agent_`` prefix added)."""
        _, body = http_get(self.url("/metrics"), timeout=10)
        full = "edge_agent_" + name
        for line in body.decode().splitlines():
            if line.startswith(full + " ") or line.startswith(full + "_total "):
                return float(line.split()[-1])
        raise KeyError(full)

    def rss(self) -> int:
        return rss_kb(self.pid)


def make_models(state_dir: Path, n: int, start: int = 0) -> float:
    """Write ``n`` trained statistical models (series m000/temp ...) with ``ModelStore.save``;
    returns the seconds it took. Training data: uniform 19..21 (mean 20, std 0.577)."""
    from edge_agent import detectors
    from edge_agent.model_store import ModelStore

    store = ModelStore(state_dir / "models", fsync=False)
    rng = np.random.default_rng(7)
    train = rng.uniform(19.0, 21.0, 500)
    t0 = time.perf_counter()
    for i in range(start, start + n):
        det = detectors.create("statistical", {})
        stats = det.fit(train)
        store.save(series_id(i), det, n_samples=train.shape[0], stats=stats)
    return time.perf_counter() - t0


def start_broker(name: str = "broker") -> Mosquitto:
    b = Mosquitto(workdir(name))
    b.start()
    track(b)
    return b


def spawn_loadgen(*args: Any, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "bench.loadgen", *map(str, args)], stdout=stdout, stderr=None, text=True, cwd=REPO)
    return track(p)


def wait_line(p: subprocess.Popen, want: str, timeout: float = 20.0) -> None:
    """Read the child's stdout until a line equal to ``want`` (bounded by a watchdog timer)."""
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        for line in p.stdout:  # type: ignore[union-attr]
            if line.strip() == want:
                return
        raise RuntimeError(f"child exited before {want!r} (rc={p.poll()})")
    finally:
        timer.cancel()


def start_publishers(broker: Mosquitto, nworkers: int, nseries: int, rounds: int, rate: float, qos: int = 1, lead_s: float = 1.0) -> tuple[list[subprocess.Popen], float]:
    start_at = time.time() + lead_s + 0.5 * nworkers
    pubs = [spawn_loadgen("pub", broker.host, broker.port, w, nworkers, nseries, rounds, rate / nworkers if rate else 0, start_at, qos)
            for w in range(nworkers)]
    for p in pubs:
        wait_line(p, "ready")
    return pubs, start_at


def finish_publishers(pubs: list[subprocess.Popen], timeout: float = 300.0) -> list[dict[str, Any]]:
    out = []
    for p in pubs:
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            text = p.stdout.read()  # type: ignore[union-attr]
            p.wait(10)
        finally:
            timer.cancel()
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"publisher exited with {p.returncode} and no result")
        out.append(json.loads(lines[-1]))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU-seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime
