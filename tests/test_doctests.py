"""The runnable examples in the detectors' docstrings must run."""

from __future__ import annotations

import doctest
import importlib
from types import ModuleType

import pytest

from edge_agent import machine_detectors
from edge_agent.detectors import REGISTRY, native


def _with_docstrings(module: ModuleType) -> ModuleType:
    """The module as doctest can read it: a module compiled by mypyc (robust, native.py) shows
    doctest no functions or classes, so its source is loaded beside it, its examples the same."""
    if not native.is_compiled(module):
        return module
    assert module.__name__ == native.MODULE
    return native.load_source(module.__name__ + "_source")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_detector_docstring_examples(name: str) -> None:
    module = _with_docstrings(importlib.import_module(REGISTRY[name].__module__))
    result = doctest.testmod(module)
    assert result.attempted > 0, f"{module.__name__} has no runnable example"
    assert result.failed == 0


@pytest.mark.parametrize("name", sorted(machine_detectors.REGISTRY))
def test_machine_detector_docstring_examples(name: str) -> None:
    module = importlib.import_module(machine_detectors.REGISTRY[name].__module__)
    result = doctest.testmod(module)
    assert result.attempted > 0, f"{module.__name__} has no runnable example"
    assert result.failed == 0


@pytest.mark.parametrize("module_name", ["edge_agent.alarm_state", "edge_agent.machines.message",
                                         "edge_agent.evaluation.skab_eval"])
def test_other_docstring_examples(module_name: str) -> None:
    result = doctest.testmod(importlib.import_module(module_name))
    assert result.attempted > 0 and result.failed == 0
