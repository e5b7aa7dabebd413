"""
The Autobahn TestSuite's close handling cases (7.x) against the relay in front of an echo
server: a close from the client is answered by the proxy with the same code and reason and
passed on to the upstream; what follows a close is ignored; a close the proxy must refuse
fails the connection (1002, or 1007 for a reason that is not UTF-8).  The client, the echo
upstream and the way a case is judged are in ``tests/websocket_conformance.py``.

Every 7.x case of the suite is here, under its id, with one change: in 7.1.6 the suite hopes
for the echoes of the messages sent before the close (INFORMATIONAL when they lose the race),
which a proxy cannot give, as it answers the close itself while the echoes are still on their
way from the upstream; the case checks instead that the messages reached the upstream before
the close did.  7.13.1 and 7.13.2 (codes 5000 and 65535), INFORMATIONAL in the suite, are
held to what RFC 6455 asks of codes above 4999: a 1002.
"""

from __future__ import annotations

from twisted.internet import defer
from websocket_conformance import ConformanceTestCase, addCases
from websocket_wire import CLOSE, CONTINUATION, PING, TEXT, closePayload, frame

#: The close codes a client may send (7.7.x), and some it may not (7.9.x, 7.13.x).
VALID_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999)
INVALID_CODES = (0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999)

#: A reason that is not UTF-8: a UTF-16 surrogate in the middle (7.5.1).
NOT_UTF8 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"


class CloseHandling(ConformanceTestCase):
    """7.x: closes pass through and come back; what follows a close is ignored."""

    @defer.inlineCallbacks
    def test_7_1_1(self):
        """Case 7.1.1: a message, then a close: the echo, then a clean 1000."""
        client = yield self.connect()
        client.write(frame(TEXT, b"Hello World!"))
        yield self.expectEvents(client, ("text", b"Hello World!"))
        yield self.closeNormally(client)

    @defer.inlineCallbacks
    def test_7_1_2(self):
        """Case 7.1.2: two close frames in a row: one clean 1000, the second ignored."""
        client = yield self.connect()
        client.write(frame(CLOSE, closePayload(1000)), frame(CLOSE))
        yield self.closedAfterward(client)

    @defer.inlineCallbacks
    def test_7_1_3(self):
        """Case 7.1.3: a ping after the close gets no pong."""
        client = yield self.connect()
        client.write(frame(CLOSE, closePayload(1000)), frame(PING, b"after close"))
        yield self.closedAfterward(client)

    @defer.inlineCallbacks
    def test_7_1_4(self):
        """Case 7.1.4: a text message after the close is neither echoed nor relayed."""
        client = yield self.connect()
        client.write(frame(CLOSE, closePayload(1000)), frame(TEXT, b"Hello World!"))
        yield self.closedAfterward(client)

    @defer.inlineCallbacks
    def test_7_1_5(self):
        """Case 7.1.5: a message whose last fragment follows the close is never relayed."""
        client = yield self.connect()
        client.write(
            frame(TEXT, b"fragment1", fin=False),
            frame(CLOSE, closePayload(1000)),
            frame(CONTINUATION, b"fragment2"),
        )
        yield self.closedAfterward(client)

    @defer.inlineCallbacks
    def test_7_1_6(self):
        """
        Case 7.1.6: a 256 KiB message, a short one, a close and a ping in one write: both
        messages reach the upstream before the close, and the client gets no pong.
        """
        client = yield self.connect()
        big = b"BAsd7&jh23" * 26214 + b"Bjdf"
        client.write(
            frame(TEXT, big),
            frame(TEXT, b"Hello World!"),
            frame(CLOSE, closePayload(1000)),
            frame(PING),
        )
        yield self.watch.until(lambda: client.gone, "the proxy to drop the connection")
        yield self.upstreamClosedWith(1000)
        self.assertEqual(self.upstream.messages, [(big, False), (b"Hello World!", False)])
        # Whichever echoes beat the close back (none, usually), in order, then the close.
        echoes = [("text", big), ("text", b"Hello World!")]
        self.assertEqual(client.events[-1], ("close", 1000, b""))
        self.assertEqual(client.events[:-1], echoes[: len(client.events) - 1])
        self.assertEqual(client.violations, [])

    @defer.inlineCallbacks
    def closedAfterward(self, client):
        """The client gets a clean 1000 and nothing else; the upstream gets 1000 and no message."""
        yield self.watch.until(lambda: client.gone, "the proxy to drop the connection")
        self.assertEqual(client.events, [("close", 1000, b"")])
        yield self.upstreamClosedWith(1000)
        self.assertEqual(self.upstream.messages, [])
        self.assertEqual(client.violations, [])

    @defer.inlineCallbacks
    def test_7_3_1(self):
        """Case 7.3.1: a close without a payload is answered and passed on without one."""
        client = yield self.connect()
        yield self.closeNormally(client, None)


def closesNormally(self: ConformanceTestCase, code: int, reason: bytes) -> object:
    client = yield self.connect()
    yield self.closeNormally(client, code, reason)


def refusedClose(self: ConformanceTestCase, payload: bytes, code: int) -> object:
    client = yield self.connect()
    client.send(CLOSE, payload)
    yield self.expectFailure(client, code)


addCases(
    CloseHandling,
    closesNormally,
    ("7.3.3", 1000, b"", "a close with code 1000 and no reason is answered and passed on so."),
    ("7.3.4", 1000, b"Hello World!", "a close with a code and a reason gets both back and on."),
    (
        "7.3.5",
        1000,
        b"*" * 123,
        "a close with a 123-byte reason, the longest, gets it back and on.",
    ),
    *(
        (f"7.7.{n}", code, b"", f"a close with code {code} is answered and passed on with it.")
        for n, code in enumerate(VALID_CODES, 1)
    ),
)
addCases(
    CloseHandling,
    refusedClose,
    ("7.3.2", b"\x03", 1002, "a close with a 1-byte payload fails the connection with 1002."),
    (
        "7.3.6",
        closePayload(1000, b"*" * 124),
        1002,
        "a 124-byte reason (too long) fails with 1002.",
    ),
    ("7.5.1", closePayload(1000, NOT_UTF8), 1007, "a reason that is not UTF-8 fails with 1007."),
    *(
        (
            f"7.9.{n}",
            closePayload(code),
            1002,
            f"a close with code {code}, reserved, fails with 1002.",
        )
        for n, code in enumerate(INVALID_CODES, 1)
    ),
    *(
        (f"7.13.{n}", closePayload(code), 1002, f"a close with code {code}, out of range: 1002.")
        for n, code in enumerate((5000, 65535), 1)
    ),
)
