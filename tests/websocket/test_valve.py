"""
Tests for L{stproxy.websocket.valve}: what a L{ReadingValve} does with the
bytes of the leg it holds back, and with that leg's transport.
"""

from __future__ import annotations

from stproxy.websocket.valve import ReadingValve


class Source:
    """A transport's producer side, counting what a valve does to it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def valve(limit: int = 10) -> tuple[ReadingValve, Source, list[bytes]]:
    source, delivered = Source(), []
    return ReadingValve(source, delivered.append, limit), source, delivered


def test_an_open_valve_delivers_at_once() -> None:
    """Bytes pass straight through while the other leg takes what it is given."""
    v, source, delivered = valve()
    v.received(b"abc")
    assert delivered == [b"abc"] and source.calls == [] and v.heldBytes == 0


def test_a_paused_valve_holds_bytes_and_reads_on_up_to_its_limit() -> None:
    """
    While paused, what arrives is kept; the source is paused only once more
    than the limit waits, so until then the end of its connection is seen.
    """
    v, source, delivered = valve(limit=10)
    v.pauseProducing()
    v.pauseProducing()
    v.received(b"12345")
    v.received(b"67890")
    assert delivered == [] and source.calls == [] and v.heldBytes == 10
    v.received(b"x")
    v.received(b"y")
    assert source.calls == ["pause"] and v.heldBytes == 12


def test_resuming_delivers_what_was_held_in_order_then_reads_again() -> None:
    """Held bytes are processed first, in order, and only then is the source resumed."""
    v, source, delivered = valve(limit=3)
    v.pauseProducing()
    v.received(b"ab")
    v.received(b"cd")
    v.resumeProducing()
    v.resumeProducing()
    assert delivered == [b"ab", b"cd"] and v.heldBytes == 0
    assert source.calls == ["pause", "resume"] and not v.paused
    v.received(b"e")
    assert delivered[-1] == b"e"


def test_a_valve_paused_again_while_delivering_keeps_the_rest() -> None:
    """If what is delivered fills the other leg again, the rest stays held and the source paused."""
    source, delivered = Source(), []
    v = ReadingValve(source, lambda data: (delivered.append(data), v.pauseProducing()), 1)
    v.pauseProducing()
    v.received(b"a")
    v.received(b"b")
    v.resumeProducing()
    assert delivered == [b"a"] and v.paused and v.heldBytes == 1
    assert source.calls == ["pause"]
    v.resumeProducing()
    assert delivered == [b"a", b"b"] and v.paused
    assert source.calls == ["pause"]


def test_stopping_never_stops_the_source_and_discard_drops_what_was_held() -> None:
    """The target's end does not abort the source; a source that is gone has its bytes dropped."""
    v, source, delivered = valve()
    v.pauseProducing()
    v.received(b"late")
    v.stopProducing()
    v.discard()
    v.resumeProducing()
    assert delivered == [] and source.calls == []
