"""Hypothesis strategies for the hostile-input campaign: MQTT topics and reading payloads as an
attacker (or a broken PLC) would send them. Only topics a broker accepts are drawn (no
wildcards, NUL, control characters or non-characters, which mosquitto refuses, at most 65,535
bytes): a topic the broker refuses never reaches the agent, and makes the broker drop the
publisher."""

from __future__ import annotations

import json
import time

from hypothesis import strategies as st

scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([1e200, -1e300, 10**400, 0, -0.0, 2**64, 1e-320]),
    st.text(max_size=8), st.booleans(), st.none(),
)
timestamps = st.one_of(
    st.none(), st.just("now"), st.floats(allow_nan=False), st.integers(), st.text(max_size=30),
    st.sampled_from(["2024-01-01T00:00:00", "1e999", "now-7200", "now+90000"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["reading", "object", "raw", "text"]))
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "text":
        return draw(st.sampled_from([b"NaN", b"Infinity", b'{"value": NaN}', b'{"value": 1e999}', b"[" * 5000, b'{"value": 1', b""]))
    if kind == "object":
        return json.dumps(draw(json_values)).encode()
    doc: dict[str, object] = {"value": draw(scalars)}
    ts = draw(timestamps)
    if ts is not None:
        now = time.time()
        doc["ts"] = {"now": now, "now-7200": now - 7200, "now+90000": now + 90000}.get(ts, ts) if isinstance(ts, str) else ts
    for k, v in draw(st.dictionaries(st.text(max_size=5), scalars, max_size=3)).items():
        doc.setdefault(k, v)
    return json.dumps(doc).encode()


segment = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="/+#"), max_size=24)
SPECIAL_TOPICS = [
    "plant/../../../etc/passwd", "plant/l/../../x", "plant/%2F/%2E%2E/t", "plant/l/m/" + "x" * 60_000,
    "plant/" + "/".join("a" * 40), "plant///", "plant/ /\u00a0/\u202e", "plant/l/m/t/", "plant/l/CON/NUL",
    "plant/l/m/" + "\u00e9" * 300, "plant/$SYS/m/t", "plant/l/m/\ud7ff\ue000",
]


@st.composite
def topics(draw: st.DrawFn) -> str:
    """Mostly topics the reading subscription (plant/{line}/{machine}/{sensor}) matches, with
    hostile segments; some at the wrong depth; some from a list of known nasties."""
    kind = draw(st.sampled_from(["template", "template", "depth", "special"]))
    if kind == "template":
        topic = "plant/" + "/".join(draw(st.lists(segment, min_size=3, max_size=3)))
    elif kind == "depth":
        topic = "plant/" + "/".join(draw(st.lists(segment, min_size=0, max_size=9)))
    else:
        topic = draw(st.sampled_from(SPECIAL_TOPICS))
    return topic.encode()[:65_000].decode(errors="ignore")
