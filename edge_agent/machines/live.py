"""The machines of a running agent: everything ``agent.py`` does for them, in one place.

The agent creates ``LiveMachines`` when a subscription names a machine
(``subscriptions[].machine``; a ``json_multi`` subscription without one feeds series only:
nothing says which machine its message is). From then on a machine is treated like a
series:

* **fits** run in the agent's own fit worker (the shared ``ProcessTrainer``, which saves into
  the requester's store: ``{state_dir}/machine_models``, ``ModelStore.for_machines``);
* **stored models** load at start off the loop, each bounded by ``safe_load`` and never
  fatal: a model that cannot be read is reported (log, health, ``/metrics``,
  ``edge-agent models list``) and its machine learns again;
* **alarms** go through the annunciator (``annunciator.py``: acknowledgement, shelving, the
  alarm rate, the retained state topic) and the durable outbox on ``machines.alarms.topic``,
  numbered per machine and restored at start from the outbox's tables, under the key
  ``machine_key(id)`` beside the series';
* **S3**: new versions are pushed and published ones pulled by a second ``S3Sync`` over the
  machine store (``s3_sync.py``: ``.machines/`` under the gateway's and the fleet's roots);
* **metrics**: ``machines/metrics.py``; operations for commands and HTTP:
  ``machines/operations.py``.

Nothing here is on the per-reading path: ingest calls ``MachineSet`` directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.config import AgentConfig
from edge_agent.fitting import MachineFitRequest
from edge_agent.machines import checkpoint
from edge_agent.machines.machine_set import (
    Machine,
    MachineAlarmEvent,
    MachineSet,
    TooManyMachines,
    machine_key,
    machine_of_key,
)
from edge_agent.model_store import Model, ModelStore

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

STORE_DIR = "machine_models"
S3_DB = "s3_sync_machines.sqlite"


def wanted(cfg: AgentConfig) -> bool:
    """True when some subscription feeds machines."""
    return any(sub.machine is not None for sub in cfg.subscriptions)


def split_keys(table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An outbox table (``read_alarm_states``, ``read_alarm_seqs``) split into its series'
    entries and its machines' (keyed by machine id)."""
    series: dict[str, Any] = {}
    machines: dict[str, Any] = {}
    for key, value in table.items():
        machine = machine_of_key(key)
        if machine is None:
            series[key] = value
        else:
            machines[machine] = value
    return series, machines


class LiveMachines:
    def __init__(self, agent: Agent) -> None:
        cfg = agent.cfg
        self.agent = agent
        self.cfg = cfg
        self.store = ModelStore.for_machines(cfg.state_path(STORE_DIR))
        self.set = MachineSet(cfg, agent.trainer, self.on_alarm, store=self.store, on_model=self.on_model)
        self.set.on_store_error = self._store_failed
        agent.annunciator.machine_lookup = self.set.machines.get  # the state of a machine's state document
        self.store_error: str | None = None
        self.hooks_on_alarm: list[Callable[[MachineAlarmEvent], None]] = []  # each event once its message is queued
        self.hooks_on_model: list[Callable[[Machine, Model, MachineFitRequest], None]] = []
        self.s3: Any = None  # S3Sync of the machine store, when s3.enabled
        self.s3_wake: asyncio.Event | None = None
        self.n_loaded = 0
        self.live_every_s = cfg.machines.live_state_every_s
        self.live_lock = asyncio.Lock()  # one live-state write at a time: the periodic one and the stop's
        self.live_error: str | None = None
        self.stopped = False

    # ---- start -----------------------------------------------------------------------------
    async def start(self, open_alarms: dict[str, tuple[str, float]], seqs: dict[str, tuple[int, float]]) -> None:
        """Models from the store, alarm numbers and open alarms from the outbox (keyed by
        machine id: ``split_keys``). Called by ``Agent.start`` before ingest subscribes."""
        agent = self.agent
        assert agent.loop is not None
        self.set.alarm_seqs = {mid: seq for mid, (seq, _) in seqs.items()}
        try:
            loaded = await agent.loop.run_in_executor(agent.executor, self._load_models)
        except OSError as exc:
            loaded = []
            agent.state_errors["machine_models"] = f"cannot read machine model store: {exc}"
            log.error("cannot read machine model store %s: %s", self.store.root, exc)
        for mid, model in loaded:
            try:
                self.set.adopt(mid, model)
                self.n_loaded += 1
            except TooManyMachines:
                log.error("machine %r: stored model not loaded, machines.max_machines (%d) reached", mid, self.set.max_machines)
            except Exception as exc:
                log.error("cannot adopt model for machine %r: %s", mid, exc)
        # Where the baselines were at the last write (machines/checkpoint.py).
        live, errors = await agent.loop.run_in_executor(agent.executor, checkpoint.take, self.cfg.state_path(checkpoint.FILE),
                                                        self.live_every_s <= 0)
        n_live, refused = checkpoint.restore(self.set, live)
        for err in errors + refused:
            log.error("%s", err)
        agent.model_errors.extend(errors + refused)
        for mid, (aid, ts) in open_alarms.items():
            try:
                self.set.restore_alarm(mid, aid, ts)
            except TooManyMachines:
                log.error("machine %r: its open alarm %s cannot be restored, machines.max_machines reached", mid, aid)
            # Unacknowledged unless the operator records (restored after this) say otherwise.
            agent.annunciator.adopt_open(machine_key(mid), aid, ts, int(self.cfg.machines.alarms.priority))
        log.info("loaded %d machine model(s) from %s (%d with their live state); %d machine alarm(s) open",
                 self.n_loaded, self.store.root, n_live, len(open_alarms))
        if self.cfg.s3.enabled:
            from edge_agent.s3_slots import MACHINE_MANIFEST_KIND
            from edge_agent.s3_sync import MACHINES_DIR, S3Sync

            self.s3 = S3Sync(self.cfg, self.store, db_path=self.cfg.state_path(S3_DB), remote_dir=MACHINES_DIR, kind=MACHINE_MANIFEST_KIND)
            self.s3_wake = asyncio.Event()

    def _load_models(self) -> list[tuple[str, Model]]:
        """Every stored machine's active model; a bad file costs its model, never the start
        (as ``agent_models.load_models`` for series, whose problem list this adds to)."""
        if not self.store.root.exists():
            return []
        self.store.cleanup_temp()
        scan = self.store.scan(repair=True)
        errors = [f"machine model store: {p}" for p in scan.problems]
        out = []
        for mid in scan.series:
            try:
                model, errs = self.store.load_active(mid)
            except Exception as exc:
                model, errs = None, [f"{mid!r}: cannot load ({exc!r})"]
            errors += [f"machine {mid!r}: {e}" for e in errs]
            if model is not None:
                out.append((mid, model))
        for err in errors:
            log.error("%s", err)
        self.agent.model_errors.extend(errors)
        return out

    def tasks(self) -> list[asyncio.Task]:
        out = []
        if self.s3 is not None and self.s3_wake is not None:
            out.append(asyncio.create_task(self.s3.run_forever(self.s3_wake, on_report=self.after_sync), name="s3-sync-machines"))
        if self.live_every_s > 0:
            out.append(asyncio.create_task(self.keep_live(), name="machine-live-state"))
        return out

    # ---- alarms out ------------------------------------------------------------------------
    def on_alarm(self, ev: MachineAlarmEvent) -> None:
        # The annunciator publishes it as it does a series' (annunciator.py): the payload with
        # the machine's priority, acknowledgement, shelving, the retained state topic, the
        # alarm rate, and the operator records committed with it.
        self.agent.annunciator.on_machine_event(ev)
        log.info("machine %r: alarm %s (#%d): %s", ev.machine, ev.state, ev.seq, ev.message)
        for hook in self.hooks_on_alarm:
            hook(ev)

    # ---- models ----------------------------------------------------------------------------
    def on_model(self, m: Machine, model: Model, req: MachineFitRequest) -> None:
        if self.store_error is not None:
            log.warning("machine model store works again (%s saved v%d); it was: %s", m.id, model.version, self.store_error)
            self.store_error = None
        log.info("machine %r: model v%d (%s) active after %s fit on %d rows of %d sensors",
                 m.id, model.version, model.detector.name, req.reason, len(req.rows), len(req.sensors))
        if self.s3 is not None and model.version:
            self.s3.enqueue_push(m.id, model.version)
            if self.s3_wake is not None:
                self.s3_wake.set()
        for hook in self.hooks_on_model:
            hook(m, model, req)

    def _store_failed(self, error: str) -> None:
        self.store_error = error

    async def after_sync(self, report: Any) -> None:
        """Adopt machine models a sync pulled and activated (``s3.on_pull: activate``)."""
        agent = self.agent
        if not getattr(report, "pulled", 0) or agent.loop is None:
            return

        def changed() -> list[tuple[str, Model]]:
            out = []
            for mid in self.store.list_series():
                active = self.store.active_version(mid)
                m = self.set.machines.get(mid)
                current = m.model.version if m is not None and m.model is not None else None
                if active is not None and active != current:
                    try:
                        model, errors = self.store.load_active(mid)
                    except Exception as exc:
                        model, errors = None, [f"{mid!r}: cannot load ({exc!r})"]
                    agent.model_errors.extend(f"machine {mid!r}: {e}" for e in errors)
                    if model is not None:
                        out.append((mid, model))
            return out

        for mid, model in await agent.loop.run_in_executor(agent.executor, changed):
            try:
                self.set.adopt(mid, model)
            except TooManyMachines:
                continue
            log.info("machine %r: model v%d (%s) pulled from S3 is active", mid, model.version, model.detector.name)

    # ---- reporting -------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What health reports for machines (``Agent.health``)."""
        out = []
        if self.store_error is not None:
            out.append(f"machine model store degraded, machine fits cannot be saved: {self.store_error}")
        if self.live_error is not None:
            out.append(f"machines' live state cannot be written (a restart starts them from their stored models): {self.live_error}")
        return out

    def status_line(self) -> str:
        s = self.set
        in_alarm = sum(1 for m in s.machines.values() if m.alarm.active)
        return f"{len(s.machines)} machines ({in_alarm} in alarm), {s.n_scored} rows scored"

    # ---- live state (machines/checkpoint.py) -----------------------------------------------
    async def save_live(self, why: str) -> int:
        """Write every scored machine's live state: the snapshot on the loop (a copy of a few
        lists per machine), the file off it. Returns the machines written."""
        agent = self.agent
        async with self.live_lock:
            doc = checkpoint.snapshot(self.set)
            path = self.cfg.state_path(checkpoint.FILE)
            if (not doc["machines"] and not path.exists()) or agent.loop is None:
                return 0
            try:
                n = await agent.loop.run_in_executor(agent.executor, checkpoint.write, path, doc)
            except (OSError, ValueError) as exc:
                self.live_error = str(exc)
                log.error("cannot keep the machines' live state (%s; a restart starts them from their stored models): %s", why, exc)
                return 0
            self.live_error = None
            log.info("kept the live state of %d machine(s) (%s)", n, why)
            return n

    async def keep_live(self) -> None:
        """Periodic writes (``machines.live_state_every_s``): a crash gives no clean stop."""
        while not self.stopped:
            await asyncio.sleep(self.live_every_s)
            if not self.stopped:
                await self.save_live("periodic")

    async def stop(self) -> None:
        """At a clean stop (ingest has stopped): keep each machine's live state for the next
        start (``machines/checkpoint.py``), then close."""
        self.stopped = True
        await self.save_live("stop")
        self.close()

    def close(self) -> None:
        if self.s3 is not None:
            self.s3.close()

