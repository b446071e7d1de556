from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker shared by the tests of a module (for tests that only read from an agent)."""
    b = Mosquitto(tmp_path_factory.mktemp("broker")).start()
    yield b
    b.stop()


@pytest.fixture
def make_campaign(tmp_path: Path) -> Iterator:
    """Factory for ``campaign.Campaign`` (the hostile-input harness); everything it starts is
    stopped at the end of the test."""
    from campaign import Campaign

    made: list[Campaign] = []

    def make(broker_extra: str = "", start_agent: bool = True, **options: object) -> Campaign:
        c = Campaign(tmp_path / f"c{len(made)}", broker_extra=broker_extra, start_agent=start_agent, **options)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def module_campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One ``campaign.Campaign`` per test module (the attack cases of a module share its agent:
    each uses its own topics, and the invariants are checked after each). Call it once with
    the overrides; later calls return the same campaign."""
    from campaign import Campaign

    made: list[Campaign] = []

    def make(broker_extra: str = "", **overrides: object) -> Campaign:
        if not made:
            made.append(Campaign(tmp_path_factory.mktemp("campaign"), broker_extra=broker_extra, **overrides))
        return made[0]

    yield make
    for c in made:
        c.close()
