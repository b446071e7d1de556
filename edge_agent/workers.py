"""Worker processes (fits, plots) that die with the agent, however it dies.

A ``ProcessPoolExecutor`` worker outlives a SIGKILLed parent: it sits on its call queue for
ever, and so does multiprocessing's resource tracker, which holds on while any worker keeps
its pipe open. Ten SIGKILLs of the agent left 20 such processes and 580 MB (issue 15,
finding 11). Under systemd the unit's cgroup is cleaned up on restart, but not where the
agent runs under another supervisor, in a container, or by hand.

``die_with_parent`` runs first in each worker's initializer:

- Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker when the thread
  that started it exits. Workers are started from the agent's event-loop thread (the main
  thread) or from the pool's management thread, which lives as long as the pool, so this
  fires when the agent dies, not before.
- A parent that died between ``fork`` and ``prctl`` is caught by comparing ``getppid()``
  with the pid the agent passed in.
- A daemon thread polls ``getppid()`` once a second, for kernels or sandboxes where
  ``prctl`` is not available (it is in systemd's ``@system-service`` filter set).

With its workers gone, the resource tracker reads EOF on its pipe and exits by itself.
Only the standard library is imported here: plot workers must stay light.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Make this process exit when ``parent_pid`` (the agent) is gone.

    It also ignores SIGINT: a Ctrl-C at a terminal reaches the whole process group, and a
    worker interrupted in its queue read printed a KeyboardInterrupt traceback over the
    agent's orderly shutdown (seen in ``make demo``). The agent stops its workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the watch thread below still works
    if os.getppid() != parent_pid:
        os._exit(0)  # the agent died before prctl took effect
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_s), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent_pid:
            os._exit(0)


def kill_pool_workers(pool: object) -> int:
    """SIGKILL every worker of a ``ProcessPoolExecutor``; returns how many.

    The executor has no public way to stop a task that runs too long: its workers are
    reached through ``_processes`` (stable from Python 3.8 to 3.13). The pool is broken
    afterwards; its pending futures fail with ``BrokenProcessPool``.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        try:
            p.kill()
        except (OSError, ValueError):
            pass
    return len(procs)
