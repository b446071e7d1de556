"""Absolute filesystem paths never leave the gateway in an answer.

Error texts from the model store and the OS name files (``/var/lib/edge-agent/models/
m1%2Ftemp/v000003/meta.json: unreadable metadata``, ``[Errno 28] No space left on device:
'/var/lib/...'``). Useful in the agent's own log, they tell a remote caller how the gateway
is laid out (issue 15, finding 10). Answers (HTTP error bodies, command ``failed`` answers)
keep only the last two components of any absolute path: enough to say which file, nothing
about where it lives.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute POSIX path of two or more components, not part of a word or a relative path
# (``m1/temp`` is a series id, not a path).
_ABS_PATH = re.compile(r"(?<![\w.~%-])/(?:[^\s/'\"`:,;()<>|*?]+/)+[^\s/'\"`:,;()<>|*?]*")


def _short(m: re.Match[str]) -> str:
    parts = [p for p in m.group(0).split("/") if p]
    return ".../" + "/".join(parts[-2:]) if len(parts) > 2 else m.group(0)


def scrub_paths(value: Any) -> Any:
    """``value`` (text, or lists/dicts of it) with absolute paths shortened."""
    if isinstance(value, str):
        return _ABS_PATH.sub(_short, value) if "/" in value else value
    if isinstance(value, list):
        return [scrub_paths(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub_paths(v) for k, v in value.items()}
    return value
