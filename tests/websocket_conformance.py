"""
What the WebSocket conformance cases (``tests/websocket/test_conformance_*.py``) share: an
Autobahn echo server as the upstream, and L{ConformanceTestCase}, a L{RelayTestCase} whose
helpers finish a case the way the Autobahn TestSuite's fuzzing client judges it.  The raw
client that writes the frames is in ``tests/websocket_wire.py``.

The cases are the fuzzing client's (``wstest -m fuzzingclient``; ids as in its report) that
make sense against a proxy in front of an echo server, one trial test each, named after the id
(``test_5_19`` is case 5.19), in one class per group of the suite.  The suite itself
(autobahntestsuite 25.10.1 on PyPI) is Python 2 code, pinned to Autobahn 0.10.9 and Twisted
19.10: pip installs it into a Python 3 environment, but it does not import there (20 of its
modules are not Python 3), and CI runs Python 3 alone.  Each case runs the real relay
(L{webSocketResource} behind a twisted.web C{Site}) on 127.0.0.1:0 in front of a fresh echo
upstream, over loopback sockets on the global reactor.

Two things set a proxy apart from the echo servers the suite was written for, and the cases
account for them:

  - a message comes back only after a round trip to the upstream, while a protocol error is
    answered by the proxy at once, so where the suite sends a message and an invalid frame in
    one write and hopes for the echo first (NON-STRICT when it loses that race), the case here
    waits for the echo before it sends the invalid frame;
  - a close from the client is answered by the proxy and passed on to the upstream, so a case
    checks both: the close the client gets back, and the one that reached the echo server.

Every wait is on a condition (L{Watch}), re-checked whenever the client or the upstream sees
something, with a deadline; nothing sleeps.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Generator

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from websocket_harness import RelayTestCase, upgradeRequest
from websocket_wire import RawWebSocket

from stproxy._autobahn import ReactorTimer

__all__ = [
    "ConformanceTestCase",
    "EchoUpstream",
    "Watch",
    "addCase",
    "addCases",
]

#: How long a case waits for any one thing before it fails.
DEADLINE = 10.0



class Watch:
    """Deferreds that fire once a condition holds, re-checked whenever L{changed} is called."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], Any], defer.Deferred, Any]] = []

    def until(
        self, condition: Callable[[], Any], what: str, timeout: float = DEADLINE
    ) -> defer.Deferred:
        """Fires once C{condition()} is true; fails after C{timeout} seconds, naming C{what}."""
        if condition():
            return defer.succeed(None)
        waiting: defer.Deferred = defer.Deferred()
        deadline = reactor.callLater(timeout, self._expire, waiting, what)
        self._waiting.append((condition, waiting, deadline))
        return waiting

    def changed(self) -> None:
        """Something happened: fire the waits whose condition now holds."""
        for entry in list(self._waiting):
            condition, waiting, deadline = entry
            if entry in self._waiting and condition():
                self._waiting.remove(entry)
                deadline.cancel()
                waiting.callback(None)

    def cancelAll(self) -> None:
        """Forget every wait (a failed case leaves no timer behind)."""
        waiting, self._waiting = self._waiting, []
        for _, _, deadline in waiting:
            deadline.cancel()

    def _expire(self, waiting: defer.Deferred, what: str) -> None:
        self._waiting = [entry for entry in self._waiting if entry[1] is not waiting]
        waiting.errback(AssertionError(f"timed out waiting for {what}"))


class EchoUpstream(WebSocketServerProtocol):
    """Echoes every message; records them and the close it got."""

    closed: tuple | None = None

    def onConnect(self, request: Any) -> str | None:
        self.messages: list[tuple[bytes, bool]] = []
        self.factory.connections.append(self)
        return request.protocols[0] if request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)
        self.factory.watch.changed()


def echoUpstreamFactory(watch: Watch) -> WebSocketServerFactory:
    """The upstream's factory: L{EchoUpstream}s, no size limit, clean close codes."""
    factory = WebSocketServerFactory()
    factory.protocol = EchoUpstream
    factory.connections = []
    factory.watch = watch
    factory._batched_timer = ReactorTimer(reactor)
    factory.setProtocolOptions(maxMessagePayloadSize=0, failByDrop=False, echoCloseCodeReason=True)
    return factory


def digest(events: list[tuple]) -> list[tuple]:
    """C{events} with large payloads as (length, SHA-256), so a failure prints readably."""
    return [
        (e[0], len(e[1]), hashlib.sha256(e[1]).hexdigest()[:16]) + e[2:]
        if len(e) > 1 and isinstance(e[1], bytes) and len(e[1]) > 256
        else e
        for e in events
    ]


class ConformanceTestCase(RelayTestCase):
    """One conformance case per test: a proxy, its echo upstream and a raw client."""

    @defer.inlineCallbacks
    def connect(self, *headers: bytes, **settings: Any) -> Generator:
        """
        Start a proxy (with C{settings}) in front of a new echo upstream and open a raw
        WebSocket through it, with C{headers} added to the upgrade; fires with the client.
        """
        self.watch = Watch()
        self.addCleanup(self.watch.cancelAll)
        upstreams = echoUpstreamFactory(self.watch)
        port = self.startProxy(self.listenUpstream(upstreams), **settings)
        client = RawWebSocket(upgradeRequest(port, *headers), self.watch.changed)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.closeAtEnd(client)
        yield self.watch.until(lambda: client.status is not None or client.gone, "the 101")
        self.assertEqual(client.status, 101, client.head)
        self.upstream: EchoUpstream = upstreams.connections[0]
        self.closeAtEnd(self.upstream)
        return client

    def expectEvents(self, client: RawWebSocket, *events: tuple) -> defer.Deferred:
        """Wait until the client has seen as many events as C{events}, which they must be."""

        def check(_: object) -> RawWebSocket:
            self.assertEqual(digest(client.events[: len(events)]), digest(list(events)))
            return client

        waiting = self.watch.until(
            lambda: len(client.events) >= len(events) or client.gone, f"{len(events)} events"
        )
        return waiting.addCallback(check)

    @defer.inlineCallbacks
    def closeNormally(
        self, client: RawWebSocket, code: int | None = 1000, reason: bytes = b""
    ) -> Generator:
        """
        The client closes with C{code} and C{reason}: it gets them back (nothing else after
        the events it has seen), the proxy drops the TCP connection, and the upstream got the
        same close.
        """
        seen = len(client.events)
        client.sendClose(code, reason)
        yield self.watch.until(lambda: client.gone, "the proxy to drop the connection")
        self.assertEqual(client.events[seen:], [("close", code, reason)])
        yield self.upstreamClosedWith(code, reason.decode("utf-8") or None)
        self.assertEqual(client.violations, [])

    @defer.inlineCallbacks
    def expectFailure(self, client: RawWebSocket, code: int, *before: tuple) -> Generator:
        """
        The proxy fails the connection: after C{before}, the client gets a close with C{code}
        and nothing more, and the upstream is closed with C{code} too.

        The client answers with the same code, as a browser does, then closes its end: a
        proxy that failed the connection reads nothing more, the answer included (RFC 6455
        section 7.1.7), so it would drop the connection only after its close handshake
        timeout.
        """
        yield self.watch.until(lambda: client.closed or client.gone, "a close frame")
        self.assertEqual(digest(client.events[: len(before)]), digest(list(before)))
        self.assertEqual([e[:2] for e in client.events[len(before) :]], [("close", code)])
        client.sendClose(code)
        client.transport.loseConnection()
        yield self.watch.until(lambda: client.gone, "the connection to end")
        self.assertEqual(len(client.events), len(before) + 1, client.events[len(before) :])
        yield self.upstreamClosedWith(code)
        self.assertEqual(client.violations, [])

    @defer.inlineCallbacks
    def upstreamClosedWith(self, code: int, reason: Any = ...) -> Generator:
        """The echo upstream's connection ended with a close carrying C{code} (and C{reason})."""
        yield self.watch.until(lambda: self.upstream.closed, "the upstream to be closed")
        _, gotCode, gotReason = self.upstream.closed
        self.assertEqual(gotCode, code)
        if reason is not ...:
            self.assertEqual(gotReason, reason)


def addCase(
    cls: type,
    caseId: str,
    doc: str,
    run: Callable[..., Generator],
    *args: Any,
    xfail: str | None = None,
) -> None:
    """
    Add C{run(self, *args)} (a generator, run with C{inlineCallbacks}) to C{cls} as the test
    C{test_<caseId with underscores>}, whose docstring is C{"Case <caseId>: <doc>"}; with
    C{xfail}, as a strict expected failure for that reason (a known stproxy bug).
    """

    def test(self: ConformanceTestCase) -> defer.Deferred:
        return defer.inlineCallbacks(run)(self, *args)

    test.__name__ = "test_" + caseId.replace(".", "_")
    test.__qualname__ = f"{cls.__name__}.{test.__name__}"
    test.__doc__ = f"Case {caseId}: {doc}"
    if xfail is not None:
        test = pytest.mark.xfail(strict=True, reason=xfail)(test)
    assert not hasattr(cls, test.__name__), caseId
    setattr(cls, test.__name__, test)


def addCases(
    cls: type, run: Callable[..., Generator], *rows: tuple, xfail: dict[str, str] | None = None
) -> None:
    """
    L{addCase} for each row of a table, C{(caseId, *args, doc)}; the cases named in C{xfail}
    are expected to fail, for the reason given.
    """
    for caseId, *args, doc in rows:
        addCase(cls, caseId, doc, run, *args, xfail=(xfail or {}).get(caseId))
