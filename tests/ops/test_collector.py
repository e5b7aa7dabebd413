"""
Python's garbage collector set for a server when stproxy owns its process (stproxy.ops.collector).
"""

from __future__ import annotations

import gc
from typing import Iterator

import pytest
from twisted.internet.testing import MemoryReactorClock

from option_parsing import parse
from stproxy.ops.collector import YOUNG_THRESHOLD, tuneCollector
from stproxy.service import ProxyService
from stproxy.tap import makeService


@pytest.fixture
def restoredCollector() -> Iterator[None]:
    """The test process's collector as it was, after the test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_the_young_collected_less_often(restoredCollector: None) -> None:
    """After tuning, what is alive is out of later collections and the young threshold is 20,000."""
    assert gc.get_freeze_count() == 0
    tuneCollector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD > 700


@pytest.mark.parametrize("ownsProcess, tuned", [(True, 1), (False, 0)], ids=["twistd", "embedded"])
def test_only_a_proxy_owning_its_process_tunes_the_collector(
    ownsProcess: bool, tuned: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """twistd's and python -m stproxy's proxy tunes it once started; an embedded one leaves it alone."""
    calls: list[str] = []
    monkeypatch.setattr("stproxy.service.tuneCollector", lambda: calls.append("tune"))
    monkeypatch.setattr("stproxy.service.exitOnNextSignal", lambda: None)
    monkeypatch.setattr("stproxy.service.forgetExitSignal", lambda reactor: None)
    service = makeService(parse("--upstream", "127.0.0.1:9"), MemoryReactorClock())
    assert isinstance(service, ProxyService)
    service.ownsProcess = ownsProcess
    service.startService()
    assert len(calls) == tuned
    service.stopService()
