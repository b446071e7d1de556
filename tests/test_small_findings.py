"""Issue 16's smaller findings: rollback of an unknown series, per-reason reject logging, the
`format: number` hint, and the warning on a manual fit with few readings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_http_api import AUTH
from test_http_live import MIN_TRAIN, HttpAgent, running
from test_payloads import make_ingest

from edge_agent.fitting import few_samples_warning
from edge_agent.model_store import ModelLoadError, ModelStore


def test_rolling_back_an_unknown_series_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        ModelStore(tmp_path / "models").rollback("m9/none")
    assert str(err.value) == "series 'm9/none' has no model to roll back"
    assert "None" not in str(err.value)


def test_a_second_reject_reason_is_logged_within_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    ing, _ = make_ingest()
    ing._log_interval = 3600.0  # one message per reason per hour
    with caplog.at_level(logging.WARNING, logger="edge_agent.ingest"):
        ing.handle("plant/l1/m1/temp", b"{not json")
        ing.handle("plant/l1/m1/temp", b"{still not json")
        ing.handle("plant/l1/m1/temp", b'{"value": "hot"}')  # another reason, same interval
        ing.handle("plant/l1/m1/temp", b"")
    lines = [r.getMessage() for r in caplog.records]
    assert [ln.split(": ", 1)[1].split(" ", 1)[0] for ln in lines] == ["bad_json", "not_a_number", "empty"], lines
    assert ing.rejected == {"bad_json": 2, "not_a_number": 1, "empty": 1}


def test_a_bare_number_on_a_json_subscription_suggests_format_number() -> None:
    ing, _ = make_ingest(format="json")
    details: list[str] = []
    ing.on_reject = lambda reason, payload, topic, detail: details.append(f"{reason}: {detail}")
    ing.handle("plant/l1/m1/temp", b"21.5")
    ing.handle("plant/l1/m1/temp", b'"21.5"')
    assert details[0] == "not_an_object: a bare JSON number: if the sensor sends plain numbers, set format: number on this subscription"
    assert "format: number" not in details[1]  # a JSON string is not a plain number


def test_few_samples_warning_threshold() -> None:
    assert few_samples_warning(500, 500) is None
    assert "fewer than detector.min_train_samples (500)" in (few_samples_warning(499, 500) or "")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpAgent]:
    with running(tmp_path_factory, ["M1/temp"]) as (agent, _):
        yield agent


def test_a_manual_fit_below_min_train_samples_warns_in_the_response(live: HttpAgent) -> None:
    values = [20.0 + (i % 7) * 0.1 for i in range(MIN_TRAIN)]
    few = live.post("/fit/M1/temp", json={"values": values[:-1]}, headers=AUTH)
    assert few.status_code == 200, few.text
    body = few.json()
    assert body["n_samples"] == MIN_TRAIN - 1 and len(body["warnings"]) == 1, body
    assert f"fewer than detector.min_train_samples ({MIN_TRAIN})" in body["warnings"][0]
    enough = live.post("/fit/M1/temp", json={"values": values}, headers=AUTH)
    assert enough.status_code == 200 and enough.json()["warnings"] == [], enough.text
