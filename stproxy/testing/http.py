"""
A fake upstream for the HTTP leg: L{FakeUpstreamAgent}, passed as
C{Upstream(reactor, address, timeouts, agent=FakeUpstreamAgent())}, records
each request and leaves its answer to the test, a L{FakeResponse} whose body
arrives in pieces when the test says so, with the proxy's flow control on it
visible.  Refusals, timeouts, cancellation and backpressure are then reached
at once, where real sockets reach them slowly or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer


@implementer(IPushProducer)
class BodyTransport:
    """What a response body arrives over: records the proxy's flow control."""

    paused = False
    stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IResponse)
class FakeResponse:
    """
    An upstream response whose body the test delivers in pieces, then ends
    (L{finish}) or breaks (L{breakOff}).  As with Twisted's own, bytes that
    arrive before C{deliverBody} are kept for it; once the proxy has stopped
    the body (C{transport.stopped}) nothing more arrives.
    """

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse: IResponse | None = None

    def __init__(
        self,
        code: int = 200,
        headers: Headers | dict[bytes, list[bytes]] | None = None,
        length: int | object = UNKNOWN_LENGTH,
        phrase: bytes | None = None,
    ) -> None:
        self.code = code
        self.phrase = RESPONSES.get(code, b"Unknown") if phrase is None else phrase
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or {})
        self.length = length
        self.transport = BodyTransport()
        self.protocol: IProtocol | None = None
        self._pending: list[bytes] = []
        self._end: Failure | None = None

    def deliverBody(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)  # type: ignore[arg-type]
        pending, self._pending = self._pending, []
        for data in pending:
            protocol.dataReceived(data)
        if self._end is not None:
            protocol.connectionLost(self._end)

    def deliver(self, data: bytes) -> None:
        """Body bytes arrive from the upstream."""
        if self.transport.stopped:
            return
        if self.protocol is None:
            self._pending.append(data)
        else:
            self.protocol.dataReceived(data)

    def finish(self) -> None:
        """The body is complete."""
        self._stop(Failure(ResponseDone()))

    def breakOff(self, reason: Exception | None = None) -> None:
        """The upstream connection is lost mid-body."""
        self._stop(Failure(ResponseFailed([Failure(reason or ConnectionLost())])))

    def _stop(self, reason: Failure) -> None:
        self._end = reason
        if self.protocol is not None:
            self.protocol.connectionLost(reason)

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response


@dataclass
class UpstreamRequest:
    """One request a L{FakeUpstreamAgent} received, waiting for its answer."""

    method: bytes
    uri: bytes
    headers: Headers
    bodyProducer: IBodyProducer | None
    deferred: Deferred[IResponse] = field(repr=False)
    cancelled: bool = False

    def respond(self, code: int = 200, **kwargs: Any) -> FakeResponse:
        """Answer with a L{FakeResponse}(C{code}, C{**kwargs}), and return it."""
        response = FakeResponse(code, **kwargs)
        self.deferred.callback(response)
        return response

    def fail(self, reason: Exception) -> None:
        """Fail the request, as a refused connection or a DNS error would."""
        self.deferred.errback(Failure(reason))


@implementer(IAgent)
class FakeUpstreamAgent:
    """
    An L{IAgent} that records each request in L{requests} and leaves its
    answer to the test; cancelling one (the proxy gave up) sets C{cancelled}.
    """

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        def cancel(d: Deferred[IResponse]) -> None:
            entry.cancelled = True

        entry = UpstreamRequest(method, uri, headers or Headers(), bodyProducer, Deferred(cancel))
        self.requests.append(entry)
        return entry.deferred


__all__ = ["BodyTransport", "FakeResponse", "FakeUpstreamAgent", "UpstreamRequest"]
