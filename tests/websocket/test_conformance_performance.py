"""
A selection of the Autobahn TestSuite's limits and performance cases (9.x) against the relay
in front of an echo server, at sizes that keep the run short: large messages whole, in many
fragments and in many small writes, and a thousand small messages, all echoed exactly.  How
a case is set up and judged is in ``tests/websocket_conformance.py``.

Left out, for time alone (each is a larger or slower variant of a case here): 9.1.5-9.1.6
and 9.2.5-9.2.6 (8 and 16 MiB: the default ``--ws-max-browser-message-size`` is 8 MiB),
9.3.1-9.3.3, 9.3.5, 9.3.7-9.3.8 and the same of 9.4 (fragments of 64 bytes to 1 KiB, 16 KiB,
256 KiB and 1 MiB), 9.5.1-9.5.5 and 9.6.1-9.6.5 (chops of 64 to 1024 bytes), 9.7.2, 9.7.4,
9.7.5 and the same of 9.8 (messages of 16, 256 and 1024 bytes) and 9.9.1 (an endless message,
a throughput measurement).  The suite itself (wstest 25.10.1, run by hand on Python 2.7)
passed all 54 of its 9.x cases through the proxy.

The suite sends the thousand messages of 9.7 and 9.8 one round trip at a time, to measure
latency; here they are written back to back, which checks more (order under load) and takes
less time.
"""

from __future__ import annotations

from websocket_conformance import ConformanceTestCase, addCases
from websocket_wire import BINARY, CONTINUATION, TEXT, frame

MiB = 2**20


def payloadOf(size: int, binary: bool) -> bytes:
    """C{size} bytes: every byte value for binary, ASCII for text."""
    pattern = bytes(range(256)) if binary else b"BAsd7&jh23"
    return (pattern * (size // len(pattern) + 1))[:size]


class LimitsAndPerformance(ConformanceTestCase):
    """9.x: big messages and many messages come back exactly."""


def bigMessage(
    self: ConformanceTestCase, size: int, binary: bool, fragment: int | None, chop: int | None
) -> object:
    client = yield self.connect()
    payload = payloadOf(size, binary)
    opcode = BINARY if binary else TEXT
    if fragment is None:
        frames = frame(opcode, payload)
    else:
        pieces = [payload[i : i + fragment] for i in range(0, size, fragment)]
        frames = b"".join(
            frame(opcode if i == 0 else CONTINUATION, piece, fin=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        )
    if chop is None:
        client.write(frames)
    else:
        yield client.writeChopped(frames, chop)
    yield self.expectEvents(client, ("binary" if binary else "text", payload))
    yield self.closeNormally(client)


def manyMessages(self: ConformanceTestCase, size: int, binary: bool, count: int) -> object:
    client = yield self.connect()
    kind = "binary" if binary else "text"
    messages = [
        (b"%06d" % i + payloadOf(size, binary))[:size] if size else b"" for i in range(count)
    ]
    client.write(*(frame(BINARY if binary else TEXT, m) for m in messages))
    yield self.expectEvents(client, *((kind, m) for m in messages))
    yield self.closeNormally(client)


#: 9.1/9.2 message sizes, 9.3/9.4 fragment sizes (of 4 MiB), 9.5/9.6 chop sizes (of 1 MiB) and
#: 9.7/9.8 message sizes (of 1000 messages), by the suite's case number.
SIZES = {1: 64 * 2**10, 2: 256 * 2**10, 3: MiB, 4: 4 * MiB}
FRAGMENTS = {4: 4 * 2**10, 6: 64 * 2**10, 9: 4 * MiB}
CHOPS = {6: 2048}
MANY = {1: 0, 3: 64, 6: 4096}

for group, binary, kind in ((1, False, "text"), (2, True, "binary")):
    addCases(
        LimitsAndPerformance,
        bigMessage,
        *(
            (
                f"9.{group}.{n}",
                size,
                binary,
                None,
                None,
                f"a {size >> 10} KiB {kind} message comes back.",
            )
            for n, size in SIZES.items()
        ),
        *(
            (
                f"9.{group + 2}.{n}",
                4 * MiB,
                binary,
                size,
                None,
                f"4 MiB of {kind} in {size >> 10} KiB fragments come back whole.",
            )
            for n, size in FRAGMENTS.items()
        ),
        *(
            (
                f"9.{group + 4}.{n}",
                MiB,
                binary,
                None,
                size,
                f"1 MiB of {kind} written {size} bytes at a time comes back.",
            )
            for n, size in CHOPS.items()
        ),
    )
    addCases(
        LimitsAndPerformance,
        manyMessages,
        *(
            (
                f"9.{group + 6}.{n}",
                size,
                binary,
                1000,
                f"1000 {kind} messages of {size} bytes back to back come back in order.",
            )
            for n, size in MANY.items()
        ),
    )
