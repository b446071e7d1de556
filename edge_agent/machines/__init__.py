"""Machine-level detection: a machine's sensors as one row, scored by one model.

* ``rows.py``: the alignment rule that turns readings into rows;
* ``machine_set.py``: ``MachineSet``, the machines of an agent, which ingest feeds and which
  hands ``MachineAlarmEvent`` to a callback; the alarm decision is a series' own
  (``edge_agent/alarm_state.py``);
* ``machine.py``: one ``Machine``'s state (assembler, alarm state, model, the rows it holds);
* ``alarm_event.py``: ``MachineAlarmEvent`` and a machine alarm's key and id;
* ``message.py``: an alarm's one line for an operator ("current high, flow low: ...");
* ``live.py``: the machines of a running agent (models loaded, alarms published, S3 sync);
* ``metrics.py``: their Prometheus metrics;
* ``operations.py``: fit, roll back, rebaseline, status and recent rows of one machine, as
  plain functions for commands and the HTTP port.

The detectors are in ``edge_agent.machine_detectors``; the rule, the detector and the SKAB
figures in ``docs/machines.md``.
"""

from edge_agent.machines.machine_set import (
    Machine,
    MachineAlarmEvent,
    MachineSet,
    TooManyMachines,
    machine_alert_id,
    machine_key,
    machine_of_key,
)
from edge_agent.machines.rows import RowAssembler

__all__ = ["Machine", "MachineAlarmEvent", "MachineSet", "RowAssembler", "TooManyMachines", "machine_alert_id", "machine_key", "machine_of_key"]
