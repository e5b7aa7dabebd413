"""
Tests for L{stproxy.websocket.frames}: the frame reader of raw passage.  Frames are built by
hand (``tests/websocket_wire.py``'s builder for client frames, L{serverFrame} here for
unmasked ones) and fed whole, byte by byte and cut anywhere; the reader must pass the data
frames on as the bytes they came as, hand over each control frame whole, count messages,
and refuse what breaks the protocol with the code Autobahn would send.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websocket_wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, frame, masked

from stproxy.websocket.frames import FrameError, FrameReader, unmask


def serverFrame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    """One unmasked (server) frame, with the shortest length encoding."""
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 2**16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


class Reader(FrameReader):
    """A reader that records what it forwards and the control frames it is handed."""

    def __init__(self, masked: bool = True, limit: int = 0, open: bool = True) -> None:
        super().__init__(masked, limit)
        self.events: list[tuple[str, bytes]] = []
        self.open = open
        self.stopAt: int | None = None  # the opcode of a control frame that ends reading

    def forward(self, data: bytes) -> None:
        self.events.append(("forward", data))

    def control(self, frame: bytes) -> bool:
        self.events.append(("control", frame))
        return frame[0] & 0x0F != self.stopAt

    def accepting(self) -> bool:
        return self.open

    @property
    def forwarded(self) -> bytes:
        return b"".join(data for kind, data in self.events if kind == "forward")

    @property
    def controls(self) -> list[bytes]:
        return [data for kind, data in self.events if kind == "control"]

    def feedBytewise(self, data: bytes) -> None:
        for i in range(len(data)):
            self.feed(data[i : i + 1])


def refusal(reader: Reader, data: bytes) -> FrameError:
    """The error feeding C{data} raises."""
    with pytest.raises(FrameError) as caught:
        reader.feed(data)
    assert reader.stopped
    return caught.value


SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("client", [True, False], ids=["masked", "unmasked"])
def test_every_length_encoding_passes_on_as_received(size: int, client: bool) -> None:
    """7-, 16- and 64-bit lengths, masked or not: the frame passes on byte for byte, once."""
    payload = os.urandom(size)
    data = frame(BINARY, payload) if client else serverFrame(BINARY, payload)
    reader = Reader(masked=client)
    reader.feed(data)
    assert reader.events == [("forward", data)]
    assert (reader.messages, reader.payloadBytes) == (1, size)
    assert reader.openFrameRemaining == 0


def test_a_read_of_many_frames_is_passed_on_in_one_write() -> None:
    """A hundred small messages read at once are forwarded as one piece: one write, not a hundred."""
    data = b"".join(frame(BINARY, b"m%03d" % i) for i in range(100))
    reader = Reader()
    reader.feed(data)
    assert reader.events == [("forward", data)]
    assert (reader.messages, reader.payloadBytes) == (100, 400)


def stream() -> tuple[bytes, bytes, list[bytes]]:
    """A client stream mixing every kind of frame: (all of it, its data frames, its control frames)."""
    pieces = [
        frame(BINARY, b"one"),
        frame(PING, b"are you there"),
        frame(TEXT, "caf\u00e9 ".encode()[:4], fin=False),
        frame(PONG, b""),
        frame(CONTINUATION, "caf\u00e9 ".encode()[4:], fin=False),
        frame(CONTINUATION, b"end"),
        frame(BINARY, os.urandom(300)),
        frame(BINARY, os.urandom(70000), fin=False),
        frame(CONTINUATION, b""),
        frame(CLOSE, struct.pack("!H", 1000) + b"bye"),
    ]
    control = [p for p in pieces if p[0] & 0x08]
    return b"".join(pieces), b"".join(p for p in pieces if not p[0] & 0x08), control


def test_a_stream_fed_a_byte_at_a_time_comes_out_the_same() -> None:
    """Fed one byte per read, the data frames still pass on exactly, the control frames whole."""
    data, dataFrames, control = stream()
    reader = Reader()
    reader.feedBytewise(data)
    assert reader.forwarded == dataFrames
    assert reader.controls == control
    assert (reader.messages, reader.payloadBytes) == (4, 3 + 9 + 300 + 70000)


@given(st.lists(st.integers(min_value=1, max_value=len(stream()[0]) - 1), max_size=30))
def test_a_stream_cut_anywhere_comes_out_the_same(cuts: list[int]) -> None:
    """However TCP cuts the stream, what passes on, and in what order, is the same."""
    data, dataFrames, control = stream()
    reader = Reader()
    points = [0, *sorted(set(cuts)), len(data)]
    for start, end in zip(points, points[1:]):
        reader.feed(data[start:end])
    assert reader.forwarded == dataFrames
    assert reader.controls == control
    assert reader.messages == 4


def test_control_frames_come_between_the_data_around_them() -> None:
    """What precedes a control frame is passed on before it is handed over, what follows after."""
    first, ping, last = frame(BINARY, b"a"), frame(PING, b"p"), frame(BINARY, b"b")
    reader = Reader()
    reader.feed(first + ping + last)
    assert reader.events == [("forward", first), ("control", ping), ("forward", last)]


def test_a_half_passed_frame_says_how_much_of_it_is_to_come() -> None:
    """Until a frame's last byte, openFrameRemaining counts what is missing; a partial header passes nothing."""
    data = frame(BINARY, b"x" * 1000)
    reader = Reader()
    reader.feed(data[:3])
    assert reader.events == [] and reader.openFrameRemaining == 0
    reader.feed(data[3:100])
    assert reader.forwarded == data[:100]
    assert reader.openFrameRemaining == len(data) - 100
    reader.feed(data[100:])
    assert reader.forwarded == data and reader.openFrameRemaining == 0
    assert reader.messages == 1


def test_a_message_is_counted_at_its_last_fragment() -> None:
    """Fragments count as one message, with the payload of all of them, once the FIN frame is read."""
    reader = Reader()
    reader.feed(frame(BINARY, b"ab", fin=False) + frame(CONTINUATION, b"cd", fin=False))
    assert reader.messages == 0
    reader.feed(frame(CONTINUATION, b"e"))
    assert (reader.messages, reader.payloadBytes) == (1, 5)


def test_data_frames_are_dropped_while_not_accepting() -> None:
    """After a close, data frames go nowhere and count nothing; control frames are still handed over."""
    ping = frame(PING, b"p")
    reader = Reader(open=False)
    reader.feed(frame(BINARY, b"dropped") + ping + frame(TEXT, b"dropped too"))
    assert reader.events == [("control", ping)]
    assert reader.messages == 0


def test_a_control_frame_that_ends_the_connection_stops_reading() -> None:
    """Once control() says so (a close acted on), nothing after the frame is read."""
    before, close = frame(BINARY, b"before"), frame(CLOSE, struct.pack("!H", 1000))
    reader = Reader()
    reader.stopAt = CLOSE
    reader.feed(before + close + frame(BINARY, b"after"))
    reader.feed(frame(BINARY, b"later"))
    assert reader.events == [("forward", before), ("control", close)]
    assert reader.stopped and reader.messages == 1


# --------------------------------------------------------------------------------- limits


def test_a_message_at_the_limit_passes_and_one_byte_more_is_refused_with_1009() -> None:
    """The limit is inclusive; past it the frame is refused before any of it passes on."""
    reader = Reader(limit=1000)
    reader.feed(frame(BINARY, b"x" * 1000))
    over = frame(BINARY, b"x" * 1001)
    error = refusal(reader, over[:10])
    assert error.code == 1009
    assert reader.messages == 1 and len(reader.forwarded) == len(frame(BINARY, b"x" * 1000))


def test_the_limit_counts_the_sum_of_a_messages_fragments() -> None:
    """Three fragments of 400 bytes against a limit of 1000: the third is refused, the first two passed."""
    fragments = [frame(BINARY, b"a" * 400, fin=False), frame(CONTINUATION, b"b" * 400, fin=False)]
    reader = Reader(limit=1000)
    error = refusal(reader, b"".join(fragments) + frame(CONTINUATION, b"c" * 400))
    assert error.code == 1009
    assert reader.forwarded == b"".join(fragments)


def test_a_limit_of_zero_is_no_limit() -> None:
    """0 is no limit, as for Autobahn's maxMessagePayloadSize."""
    reader = Reader(limit=0)
    reader.feed(frame(BINARY, b"x" * 100000))
    assert reader.messages == 1


def test_the_limit_applies_to_what_arrives_in_server_frames_too() -> None:
    """Upstream (unmasked) messages are held to the limit the same way."""
    reader = Reader(masked=False, limit=10)
    assert refusal(reader, serverFrame(BINARY, b"x" * 11)).code == 1009


# ------------------------------------------------------------------------ protocol errors


def raw(first: int, second: int, rest: bytes = b"") -> bytes:
    """A header built byte by byte (then C{rest}): lengths and bits a builder would not write."""
    return bytes((first, second)) + rest


KEY = b"\x01\x02\x03\x04"
UNFINISHED = frame(TEXT, b"a", fin=False)
PROTOCOL_ERRORS = [
    # (what, from a client?, frames that pass before the refused one, the refused one)
    *((f"RSV {rsv}", True, b"", frame(TEXT, b"hi", rsv=rsv)) for rsv in range(1, 8)),
    *((f"data opcode {op}", True, b"", frame(op, b"x")) for op in range(3, 8)),
    *((f"control opcode {op}", True, b"", frame(op, b"")) for op in range(11, 16)),
    ("a continuation with nothing to continue", True, b"", frame(CONTINUATION, b"x")),
    ("a new message inside an unfinished one", True, UNFINISHED, frame(BINARY, b"b")),
    ("a fragmented ping", True, b"", frame(PING, b"p", fin=False)),
    ("a fragmented close", True, b"", frame(CLOSE, b"", fin=False)),
    ("a ping of 126 bytes", True, b"", frame(PING, b"p" * 126)),
    ("an unmasked client frame", True, b"", serverFrame(BINARY, b"x")),
    ("a masked server frame", False, b"", frame(BINARY, b"x")),
    ("a 16-bit length under 126", True, b"", raw(0x82, 0x80 | 126, b"\x00\x05" + KEY + b"hello")),
    (
        "a 64-bit length under 65536",
        True,
        b"",
        raw(0x82, 0x80 | 127, struct.pack("!Q", 200) + KEY + b"x" * 200),
    ),
    ("a 64-bit length of 2**63", False, b"", raw(0x82, 127, struct.pack("!Q", 2**63))),
]
ERROR_IDS = [e[0] for e in PROTOCOL_ERRORS]


@pytest.mark.parametrize(("what", "client", "passed", "bad"), PROTOCOL_ERRORS, ids=ERROR_IDS)
def test_what_breaks_the_protocol_is_refused_with_1002(
    what: str, client: bool, passed: bytes, bad: bytes
) -> None:
    """Each protocol error fails with 1002, the frames before it passed on, nothing after read."""
    before = (frame(BINARY, b"fine") if client else serverFrame(BINARY, b"fine")) + passed
    reader = Reader(masked=client)
    error = refusal(reader, before + bad)
    assert error.code == 1002
    assert reader.forwarded == before
    reader.feed(before)
    assert reader.forwarded == before, "read on after the refusal"


@pytest.mark.parametrize(("what", "client", "passed", "bad"), PROTOCOL_ERRORS, ids=ERROR_IDS)
def test_protocol_errors_are_found_when_fed_a_byte_at_a_time(
    what: str, client: bool, passed: bytes, bad: bytes
) -> None:
    """Cut into single bytes, the same frames are refused the same way."""
    reader = Reader(masked=client)
    with pytest.raises(FrameError) as caught:
        reader.feedBytewise(passed + bad)
    assert caught.value.code == 1002 and reader.forwarded == passed


# ----------------------------------------------------------------------------------- UTF-8

KOSME = "κόσμε".encode()


def test_a_text_frame_passes_whole_once_checked_however_it_arrives() -> None:
    """A text frame fed byte by byte is held, checked, and passed on in one piece at its end."""
    data = frame(TEXT, KOSME)
    reader = Reader()
    reader.feedBytewise(data)
    assert reader.events == [("forward", data)]
    assert (reader.messages, reader.payloadBytes) == (1, len(KOSME))


def test_a_character_split_across_fragments_is_valid() -> None:
    """A code point cut between two fragments is checked across them."""
    parts = [frame(TEXT, KOSME[:4], fin=False), frame(CONTINUATION, KOSME[4:])]
    reader = Reader()
    reader.feed(b"".join(parts))
    assert reader.forwarded == b"".join(parts) and reader.messages == 1


@pytest.mark.parametrize(
    ("text", "badAt"),
    [
        (KOSME + b"\xf4\x90\x80\x80edited", len(KOSME) + 1),  # past U+10FFFF at its 2nd byte
        (KOSME + b"\xed\xa0\x80edited", len(KOSME) + 1),  # a surrogate at its 2nd byte
        (b"ab\xc0\xafcd", 2),  # an overlong '/' at its 1st byte
        (b"ab\xffcd", 2),
    ],
    ids=["past-U+10FFFF", "surrogate", "overlong", "impossible-byte"],
)
def test_text_that_is_not_utf8_fails_with_1007_at_the_byte_that_makes_it_so(
    text: bytes, badAt: int
) -> None:
    """Fed a byte at a time, the refusal comes with the invalid byte, before the frame ends."""
    data = frame(TEXT, text)
    header = len(data) - len(text)
    reader = Reader()
    reader.feed(data[: header + badAt])
    with pytest.raises(FrameError) as caught:
        reader.feed(data[header + badAt : header + badAt + 1])
    assert caught.value.code == 1007
    assert reader.forwarded == b"", "part of an invalid text frame passed on"


def test_text_ending_inside_a_character_fails_with_1007() -> None:
    """A message whose last fragment ends half way through a code point is refused."""
    reader = Reader()
    reader.feed(frame(TEXT, KOSME[:3], fin=False))
    assert refusal(reader, frame(CONTINUATION, b"")).code == 1007


def test_masked_text_is_checked_unmasked() -> None:
    """It is the unmasked payload that must be UTF-8, whatever the masked bytes look like."""
    key = b"\x80\x80\x80\x80"  # masks ASCII into bytes that are not UTF-8
    assert not _isUtf8(masked(b"hello", key))
    reader = Reader()
    reader.feed(frame(TEXT, b"hello", key=key))
    assert reader.messages == 1


def test_unmasked_server_text_is_checked_too() -> None:
    """Text from Streamlit's side is checked the same way."""
    reader = Reader(masked=False)
    reader.feed(serverFrame(TEXT, KOSME))
    assert refusal(reader, serverFrame(TEXT, b"\xff")).code == 1007


def _isUtf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@given(st.binary(max_size=64), st.binary(min_size=4, max_size=4), st.integers(0, 7))
def test_unmask_undoes_masking_from_any_offset(payload: bytes, key: bytes, offset: int) -> None:
    """unmask(…, offset) unmasks a piece that starts C{offset} bytes into a masked payload."""
    whole = masked(b"\0" * offset + payload, key)
    assert unmask(whole[offset:], key, offset) == payload
