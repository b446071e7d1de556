"""Machine-level detection: a machine's sensors as one row, scored by one model.

* ``rows.py``: the alignment rule that turns readings into rows;
* ``alarm_state.py``: raise once, hold, clear with hysteresis (I/O-free);
* ``machine_set.py``: ``MachineSet``, the machines of an agent, which ingest feeds and which
  hands ``MachineAlarmEvent`` to a callback.

The detectors are in ``edge_agent.machine_detectors``; the rule, the detector and the SKAB
figures in ``docs/machines.md``.
"""

from edge_agent.machines.alarm_state import AlarmState, Transition
from edge_agent.machines.machine_set import (
    Machine,
    MachineAlarmEvent,
    MachineSet,
    TooManyMachines,
    machine_alert_id,
)
from edge_agent.machines.rows import RowAssembler

__all__ = ["AlarmState", "Machine", "MachineAlarmEvent", "MachineSet", "RowAssembler", "TooManyMachines", "Transition", "machine_alert_id"]
