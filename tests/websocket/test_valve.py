"""
Tests for L{stproxy.websocket.valve}: what a L{ReadingValve} does with the
bytes of the leg it holds back, and with that leg's transport, and what a
L{SendBuffer} holds while its transport is full.
"""

from __future__ import annotations

from stproxy.websocket.valve import PIECE_SIZE as PIECE
from stproxy.websocket.valve import HOLD_LIMIT, ReadingValve, SendBuffer

#: Two causes of a hold, as a full transport would be.
FULL, OTHER = object(), object()


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
    """Bytes pass straight through while nothing holds the valve."""
    v, source, delivered = valve()
    v.received(b"abc")
    assert delivered == [b"abc"] and source.calls == [] and v.heldBytes == 0


def test_a_held_valve_keeps_bytes_and_reads_on_up_to_its_limit() -> None:
    """
    While held, what arrives is kept; the source is paused only once more
    than the limit waits, so until then the end of its connection is seen.
    """
    v, source, delivered = valve(limit=10)
    v.hold(FULL)
    v.hold(FULL)
    v.received(b"12345")
    v.received(b"67890")
    assert delivered == [] and source.calls == [] and v.heldBytes == 10
    v.received(b"x")
    v.received(b"y")
    assert source.calls == ["pause"] and v.heldBytes == 12


def test_releasing_delivers_what_was_held_in_order_then_reads_again() -> None:
    """Held bytes are processed first, in order, and only then is the source resumed."""
    v, source, delivered = valve(limit=3)
    v.hold(FULL)
    v.received(b"ab")
    v.received(b"cd")
    v.release(FULL)
    v.release(FULL)
    assert b"".join(delivered) == b"abcd" and v.heldBytes == 0
    assert source.calls == ["pause", "resume"] and not v.paused
    v.received(b"e")
    assert delivered[-1] == b"e"


def test_a_valve_stays_held_until_every_cause_releases_it() -> None:
    """Two causes hold the valve (the other leg full, answers waiting): both must let go."""
    v, source, delivered = valve(limit=1)
    v.hold(FULL)
    v.hold(OTHER)
    v.received(b"ab")
    v.release(FULL)
    assert delivered == [] and v.paused and source.calls == ["pause"]
    v.release(OTHER)
    assert delivered == [b"ab"] and not v.paused and source.calls == ["pause", "resume"]


def test_a_valve_held_again_while_delivering_keeps_the_rest() -> None:
    """If what is delivered fills the other leg again, the rest stays held and the source paused."""
    source, delivered = Source(), []
    v = ReadingValve(source, lambda data: (delivered.append(data), v.hold(FULL)), 1)
    a, b = b"a" * PIECE, b"b" * PIECE  # whole pieces: held apart, delivered apart
    v.hold(FULL)
    v.received(a)
    v.received(b)
    v.release(FULL)
    assert delivered == [a] and v.paused and v.heldBytes == PIECE
    assert source.calls == ["pause"]
    v.release(FULL)
    assert delivered == [a, b] and v.paused
    assert source.calls == ["pause"]


def test_many_small_reads_are_held_as_a_few_pieces() -> None:
    """A peer sending one byte per read is held in a few pieces, delivered in order in a few calls."""
    v, source, delivered = valve(limit=HOLD_LIMIT)
    v.hold(FULL)
    for i in range(HOLD_LIMIT):
        v.received(bytes([i % 251]))
    v.release(FULL)
    assert len(delivered) <= HOLD_LIMIT // PIECE + 1
    assert b"".join(delivered) == bytes(i % 251 for i in range(HOLD_LIMIT))


def test_discard_drops_what_was_held() -> None:
    """A source that is gone has its bytes dropped, never delivered."""
    v, source, delivered = valve()
    v.hold(FULL)
    v.received(b"late")
    v.discard()
    v.release(FULL)
    assert delivered == [] and source.calls == [] and v.heldBytes == 0


def sendBuffer() -> tuple[SendBuffer, ReadingValve, ReadingValve]:
    """A send buffer, the valve of the leg feeding it and the valve of its own leg."""
    feeding, _, _ = valve()
    own, _, _ = valve()
    return SendBuffer(feeding, own), feeding, own


def test_a_full_send_buffer_holds_the_leg_that_feeds_it_not_its_own() -> None:
    """A full transport holds back the other leg; its own leg's messages go elsewhere and pass."""
    buffer, feeding, own = sendBuffer()
    buffer.pauseProducing()
    assert buffer.full and feeding.paused and not own.paused
    buffer.resumeProducing()
    assert not buffer.full and not feeding.paused


def test_an_answer_into_a_full_send_buffer_holds_its_own_leg_until_it_drains() -> None:
    """A pong that cannot go out stops the pinging leg being read, until the transport drains."""
    buffer, feeding, own = sendBuffer()
    buffer.answered()
    assert not own.paused, "an answer that goes out holds nothing"
    buffer.pauseProducing()
    buffer.answered()
    assert own.paused
    buffer.resumeProducing()
    assert not own.paused and not feeding.paused


def test_stopping_never_stops_the_source_and_the_feeding_leg_reads_again_once_released() -> None:
    """A transport's end does not abort the other leg's; releaseFeeding lets that leg read again."""
    buffer, feeding, own = sendBuffer()
    buffer.pauseProducing()
    buffer.answered()
    buffer.stopProducing()
    assert feeding.paused
    buffer.releaseFeeding()
    assert not feeding.paused and own.paused


def test_a_release_made_by_what_the_valve_delivers_keeps_the_order() -> None:
    """
    Processing a held piece may hold and release the valve again (raw passage does, for a
    pong that waited): the pieces after it are still delivered once each, in order, after it.
    """
    source = Source()
    steps: list[str] = []
    pieces = [bytes([n]) * PIECE for n in b"123"]

    def deliver(data: bytes) -> None:
        steps.append(f"start {data[:1]!r}")
        if data == pieces[0]:
            v.hold(OTHER)
            v.release(OTHER)
        steps.append(f"end {data[:1]!r}")

    v = ReadingValve(source, deliver, 4 * PIECE)
    v.hold(FULL)
    for piece in pieces:
        v.received(piece)
    v.release(FULL)
    assert steps == [f"{edge} {bytes([n])!r}" for n in b"123" for edge in ("start", "end")]
    assert source.calls == [] and v.heldBytes == 0
