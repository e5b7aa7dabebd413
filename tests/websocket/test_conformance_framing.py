"""
The Autobahn TestSuite's framing cases against the relay in front of an echo server: 1.x
(message lengths across the 7-, 16- and 64-bit length encodings), 2.x (pings and pongs), 3.x
(reserved bits), 4.x (reserved opcodes), 5.x (fragmentation) and 10.1.1 (a message in many
small frames).  How a case is set up and judged is in ``tests/websocket_conformance.py``.

Every case of these groups applies to a proxy and is here, under its suite id.  Where the
suite sends a message, then an invalid frame, in one write (3.2-3.4, 4.1.3-4.1.5,
4.2.3-4.2.5, 5.15), the case waits for the echo first; where it waits a second between frames
(5.19, 5.20), the case waits for the pong instead.
"""

from __future__ import annotations

from twisted.internet import defer
from websocket_conformance import ConformanceTestCase, addCases
from websocket_wire import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, closePayload, frame

HELLO = b"Hello, world!"


class Framing(ConformanceTestCase):
    """1.x: text and binary messages of every length encoding come back exactly."""


def echoOfLength(self: ConformanceTestCase, size: int, binary: bool, chop: int | None) -> object:
    client = yield self.connect()
    payload = bytes(i % 251 for i in range(size)) if binary else b"*" * size
    message = frame(BINARY if binary else TEXT, payload)
    if chop is None:
        client.write(message)
    else:
        yield client.writeChopped(message, chop)
    yield self.expectEvents(client, ("binary" if binary else "text", payload))
    yield self.closeNormally(client)


for group, binary, kind in ((1, False, "text"), (2, True, "binary")):
    addCases(
        Framing,
        echoOfLength,
        *(
            (
                f"1.{group}.{n}",
                size,
                binary,
                None,
                f"a {size}-byte {kind} message comes back exactly.",
            )
            for n, size in enumerate((0, 125, 126, 127, 128, 65535, 65536), 1)
        ),
        (
            f"1.{group}.8",
            65536,
            binary,
            997,
            f"a 65536-byte {kind} message written in 997-byte pieces comes back exactly.",
        ),
    )


class PingsAndPongs(ConformanceTestCase):
    """2.x: the proxy answers pings itself, ignores pongs, and refuses long control frames."""


def pongs(self: ConformanceTestCase, frames: list[bytes], how: str, pongs: list[bytes]) -> object:
    client = yield self.connect()
    yield client.writeAs(frames, how)
    yield self.expectEvents(client, *(("pong", p) for p in pongs))
    yield self.closeNormally(client)


TEN = [b"payload-%d" % i for i in range(10)]
UNSOLICITED = b"unsolicited pong payload"

addCases(
    PingsAndPongs,
    pongs,
    ("2.1", [frame(PING)], "together", [b""], "a ping without payload gets an empty pong."),
    (
        "2.2",
        [frame(PING, HELLO)],
        "together",
        [HELLO],
        "a ping with a text payload gets a pong with it.",
    ),
    (
        "2.3",
        [frame(PING, b"\x00\xff\xfe\xfd")],
        "together",
        [b"\x00\xff\xfe\xfd"],
        "a ping with a binary payload gets a pong with it.",
    ),
    (
        "2.4",
        [frame(PING, b"\xfe" * 125)],
        "together",
        [b"\xfe" * 125],
        "a ping with 125 bytes, the most allowed, gets a pong with them.",
    ),
    (
        "2.6",
        [frame(PING, b"\xfe" * 125)],
        "octets",
        [b"\xfe" * 125],
        "a 125-byte ping written a byte at a time gets a pong with its payload.",
    ),
    ("2.7", [frame(PONG)], "together", [], "an unsolicited pong gets nothing back."),
    (
        "2.8",
        [frame(PONG, UNSOLICITED)],
        "together",
        [],
        "an unsolicited pong with a payload gets nothing back.",
    ),
    (
        "2.9",
        [frame(PONG, UNSOLICITED), frame(PING, HELLO)],
        "together",
        [HELLO],
        "after an unsolicited pong, a ping gets its own pong and nothing else.",
    ),
    ("2.10", [frame(PING, p) for p in TEN], "together", TEN, "ten pings get ten pongs, in order."),
    (
        "2.11",
        [frame(PING, p) for p in TEN],
        "octets",
        TEN,
        "ten pings written a byte at a time get ten pongs, in order.",
    ),
)


def refused(self: ConformanceTestCase, frames: list[bytes], how: str, echoFirst: bool) -> object:
    """
    The frames, and a ping after them that must go unanswered, fail the connection with
    1002 (after an echo, if C{echoFirst}).
    """
    client = yield self.connect()
    before = (("text", HELLO),) if echoFirst else ()
    if echoFirst:
        client.write(frame(TEXT, HELLO))
        yield self.expectEvents(client, *before)
    yield client.writeAs(frames + [frame(PING)], how)
    yield self.expectFailure(client, 1002, *before)


addCases(
    PingsAndPongs,
    refused,
    (
        "2.5",
        [frame(PING, b"\xfe" * 126)],
        "together",
        False,
        "a 126-byte ping fails the connection with 1002, unanswered.",
    ),
)


class ReservedBits(ConformanceTestCase):
    """3.x: a frame with RSV bits no extension defines fails the connection with 1002."""


addCases(
    ReservedBits,
    refused,
    (
        "3.1",
        [frame(TEXT, HELLO, rsv=1)],
        "together",
        False,
        "a text message with RSV = 1 fails the connection with 1002.",
    ),
    (
        "3.2",
        [frame(TEXT, HELLO, rsv=2)],
        "together",
        True,
        "after an echo, a text message with RSV = 2 fails the connection with 1002.",
    ),
    (
        "3.3",
        [frame(TEXT, HELLO, rsv=3)],
        "frames",
        True,
        "after an echo, RSV = 3 written a frame at a time fails the connection with 1002.",
    ),
    (
        "3.4",
        [frame(TEXT, HELLO, rsv=4)],
        "octets",
        True,
        "after an echo, RSV = 4 written a byte at a time fails the connection with 1002.",
    ),
    (
        "3.5",
        [frame(BINARY, HELLO, rsv=5)],
        "together",
        False,
        "a binary message with RSV = 5 fails the connection with 1002.",
    ),
    (
        "3.6",
        [frame(PING, HELLO, rsv=6)],
        "together",
        False,
        "a ping with RSV = 6 fails the connection with 1002, unanswered.",
    ),
    (
        "3.7",
        [frame(CLOSE, closePayload(1000), rsv=7)],
        "together",
        False,
        "a close with RSV = 7 fails the connection with 1002.",
    ),
)


class Opcodes(ConformanceTestCase):
    """4.x: a frame with a reserved opcode fails the connection with 1002."""


for group, opcodes, kind in ((1, (3, 4, 5, 6, 7), "data"), (2, (11, 12, 13, 14, 15), "control")):
    addCases(
        Opcodes,
        refused,
        *(
            # The suite gives the 2nd, 4th and 5th frame a payload, and echoes before the 3rd on.
            (
                f"4.{group}.{n}",
                [frame(op, b"reserved" if n in (2, 4, 5) else b"")],
                "together",
                n > 2,
                f"a frame with the reserved {kind} opcode {op} fails the connection with 1002.",
            )
            for n, op in enumerate(opcodes, 1)
        ),
    )


class Fragmentation(ConformanceTestCase):
    """5.x: fragments make one message; control frames may come between them; nothing else may."""


def fragmented(self: ConformanceTestCase, how: str, ping: bool) -> object:
    client = yield self.connect()
    first, last = frame(TEXT, b"fragment1", fin=False), frame(CONTINUATION, b"fragment2")
    yield client.writeAs(
        [first, frame(PING, b"ping payload"), last] if ping else [first, last], how
    )
    pong = (("pong", b"ping payload"),) if ping else ()
    yield self.expectEvents(client, *pong, ("text", b"fragment1fragment2"))
    yield self.closeNormally(client)


addCases(
    Fragmentation,
    fragmented,
    ("5.3", "together", False, "a text message in two fragments comes back as one message."),
    (
        "5.4",
        "frames",
        False,
        "a text message in two fragments, a write each, comes back as one message.",
    ),
    (
        "5.5",
        "octets",
        False,
        "a two-fragment text message written a byte at a time comes back whole.",
    ),
    (
        "5.6",
        "together",
        True,
        "a ping between two fragments is answered at once, then the message comes back.",
    ),
    ("5.7", "frames", True, "as 5.6 written a frame at a time: the pong, then the message."),
    ("5.8", "octets", True, "as 5.6 written a byte at a time: the pong, then the message."),
)

NOTHING_TO_CONTINUE = [frame(CONTINUATION, b"fragment1", fin=False)]
NOTHING_TO_CONTINUE_FIN = [frame(CONTINUATION, b"fragment1")]
TWO_FRAGMENTS = [frame(TEXT, b"fragment2", fin=False), frame(CONTINUATION, b"fragment3")]
MESSAGE = [frame(TEXT, b"fragment2")]

addCases(
    Fragmentation,
    refused,
    (
        "5.1",
        [frame(PING, b"f1", fin=False), frame(CONTINUATION, b"f2")],
        "together",
        False,
        "a ping in two fragments fails the connection with 1002.",
    ),
    (
        "5.2",
        [frame(PONG, b"f1", fin=False), frame(CONTINUATION, b"f2")],
        "together",
        False,
        "a pong in two fragments fails the connection with 1002.",
    ),
    (
        "5.9",
        NOTHING_TO_CONTINUE_FIN + MESSAGE,
        "together",
        False,
        "a continuation with FIN and no message to continue fails the connection with 1002.",
    ),
    (
        "5.10",
        NOTHING_TO_CONTINUE_FIN + MESSAGE,
        "frames",
        False,
        "5.9 written a frame at a time fails the connection with 1002.",
    ),
    (
        "5.11",
        NOTHING_TO_CONTINUE_FIN + MESSAGE,
        "octets",
        False,
        "5.9 written a byte at a time fails the connection with 1002.",
    ),
    (
        "5.12",
        NOTHING_TO_CONTINUE + MESSAGE,
        "together",
        False,
        "a continuation without FIN and nothing to continue fails the connection with 1002.",
    ),
    (
        "5.13",
        NOTHING_TO_CONTINUE + MESSAGE,
        "frames",
        False,
        "5.12 written a frame at a time fails the connection with 1002.",
    ),
    (
        "5.14",
        NOTHING_TO_CONTINUE + MESSAGE,
        "octets",
        False,
        "5.12 written a byte at a time fails the connection with 1002.",
    ),
    (
        "5.15",
        NOTHING_TO_CONTINUE + MESSAGE,
        "together",
        True,
        "after an echo, a continuation with nothing to continue fails the connection with 1002.",
    ),
    (
        "5.16",
        (NOTHING_TO_CONTINUE + TWO_FRAGMENTS) * 2,
        "together",
        False,
        "twice a continuation with nothing to continue, then a message, fails the connection with 1002.",
    ),
    (
        "5.17",
        (NOTHING_TO_CONTINUE_FIN + TWO_FRAGMENTS) * 2,
        "together",
        False,
        "as 5.16 with FIN on the continuations fails the connection with 1002.",
    ),
    (
        "5.18",
        [frame(TEXT, b"f1", fin=False), frame(TEXT, b"f2")],
        "together",
        False,
        "a text frame where a continuation should be fails the connection with 1002.",
    ),
)


def pingsBetweenFragments(self: ConformanceTestCase, how: str) -> object:
    client = yield self.connect()
    parts = [b"fragment%d" % i for i in range(1, 6)]
    yield client.writeAs(
        [
            frame(TEXT, parts[0], fin=False),
            frame(CONTINUATION, parts[1], fin=False),
            frame(PING, b"pongme 1!"),
        ],
        how,
    )
    # The suite waits a second here: the first pong must come before the message ends.
    yield self.expectEvents(client, ("pong", b"pongme 1!"))
    yield client.writeAs(
        [
            frame(CONTINUATION, parts[2], fin=False),
            frame(CONTINUATION, parts[3], fin=False),
            frame(PING, b"pongme 2!"),
            frame(CONTINUATION, parts[4]),
        ],
        how,
    )
    yield self.expectEvents(
        client, ("pong", b"pongme 1!"), ("pong", b"pongme 2!"), ("text", b"".join(parts))
    )
    yield self.closeNormally(client)


addCases(
    Fragmentation,
    pingsBetweenFragments,
    (
        "5.19",
        "together",
        "two pings inside a five-fragment message are each answered at once, then the message comes back.",
    ),
    ("5.20", "frames", "5.19 written a frame at a time: each pong at once, then the message."),
)


class AutoFragmentation(ConformanceTestCase):
    """10.1.1: a message sent in many small frames comes back whole."""

    @defer.inlineCallbacks
    def test_10_1_1(self):
        """Case 10.1.1: a 65536-byte text message in 1300-byte frames comes back as one message."""
        client = yield self.connect()
        payload = b"*" * 65536
        chunks = [payload[i : i + 1300] for i in range(0, len(payload), 1300)]
        client.write(
            frame(TEXT, chunks[0], fin=False),
            *(frame(CONTINUATION, chunk, fin=False) for chunk in chunks[1:-1]),
            frame(CONTINUATION, chunks[-1]),
        )
        yield self.expectEvents(client, ("text", payload))
        yield self.closeNormally(client)
