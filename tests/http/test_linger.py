"""
The lingering close (stproxy.http.linger.Linger): after an early answer, what the client still
sends is discarded until it stops, its declared body has arrived, or a bound is reached.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from stproxy.http.linger import LINGER_BYTES, LINGER_SECONDS, Linger


class Closer:
    """Counts the calls to close."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_the_connection_closes_once_the_declared_body_has_arrived() -> None:
    """A client that declared how much it sends is read to the end of it, then the connection closes."""
    clock, close = MemoryReactorClock(), Closer()
    linger = Linger(clock, close, expected=1000)
    linger.start()
    linger.discard(999)
    assert close.calls == 0
    linger.discard(1)
    assert close.calls == 1
    assert not clock.getDelayedCalls()


def test_at_most_a_few_megabytes_are_read() -> None:
    """However much a client declared or sends, the connection closes after LINGER_BYTES."""
    close = Closer()
    linger = Linger(MemoryReactorClock(), close, expected=10 * LINGER_BYTES)
    linger.start()
    linger.discard(LINGER_BYTES - 1)
    assert close.calls == 0
    linger.discard(1)
    assert close.calls == 1


def test_at_most_a_few_seconds_are_waited() -> None:
    """A client that neither finishes nor closes has its connection closed after LINGER_SECONDS."""
    clock, close = MemoryReactorClock(), Closer()
    Linger(clock, close).start()
    clock.advance(LINGER_SECONDS - 0.1)
    assert close.calls == 0
    clock.advance(0.1)
    assert close.calls == 1


def test_a_client_that_goes_away_stops_the_wait() -> None:
    """A client that closes first leaves no timer behind, and nothing is closed twice."""
    clock, close = MemoryReactorClock(), Closer()
    linger = Linger(clock, close)
    linger.start()
    linger.stop()
    assert not clock.getDelayedCalls()
    linger.discard(LINGER_BYTES)
    assert close.calls == 0


def test_nothing_expected_closes_at_once() -> None:
    """With nothing more declared, the connection closes as soon as the answer is written."""
    close = Closer()
    Linger(MemoryReactorClock(), close, expected=0).start()
    assert close.calls == 1
