"""
One client request and its upstream response, streamed: the request goes
upstream, the response comes back as it arrives.

Bodies never sit whole in memory on the way back: the upstream connection is
the producer and the client connection the consumer, so a slow browser pauses
the read from Streamlit.

What the upstream does wrong is its fault, not the browser's: while nothing
has been sent to the client (twisted.web writes the status line and headers
with the first body byte), any failure is answered with a 502 or 504 page and
one log line naming the upstream and the reason; once bytes have gone out, the
client connection is closed so that the browser sees a truncated body, never a
complete-looking one, and the log names the upstream.
"""

from __future__ import annotations

from typing import Protocol as Interface

from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.pages import errorPage
from twisted.web.server import Request
from zope.interface import implementer

from stproxy._twisted import MALFORMED_RESPONSE
from stproxy.config import Timeouts
from stproxy.http.headers import responseHeadersForClient
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics
from stproxy.upstream.client import InvalidResponse, ResponseTimeout


class Forwarding(Interface):
    """
    Where an exchange's request goes: one request's way to the upstream
    (L{stproxy.routing.forwarding.ReplicaForwarding} chooses the replica and
    retries), which knows the request's method, target and body.
    """

    @property
    def reactor(self) -> IReactorTime: ...

    @property
    def timeouts(self) -> Timeouts: ...

    def where(self) -> str:
        """The upstream the request went to, for log lines and error pages."""

    def send(self, headers: Headers) -> Deferred[IResponse]:
        """Send the request with C{headers}; fires with the response once its headers are in."""

    def answering(self, headers: Headers) -> None:
        """Add what the proxy itself says to the client response's C{headers}."""


@implementer(IPushProducer)
class Exchange(Protocol):
    """
    One client request and its upstream response, from sending the request
    to the last byte of the response body.

    Once the response headers are in, it is both the client request's
    producer (a slow browser pauses the upstream read) and the protocol the
    upstream body is delivered to.  If the browser goes away at any point,
    the upstream request is cancelled or its connection closed, so nothing
    keeps reading for nobody.
    """

    # What Twisted delivers a response body through: a producer for the
    # upstream connection, which Protocol annotates as an ITransport.
    transport: IPushProducer | None  # type: ignore[assignment]

    def __init__(
        self,
        request: Request,
        upstream: Forwarding,
        logObserver: ILogObserver | None,
        metrics: Metrics,
    ) -> None:
        self._request = request
        self._metrics = metrics
        self._upstream = upstream
        self._log = loggerFor(self, logObserver)
        self._clientGone = False
        self._answered = False  # with an error page, after the response headers
        self._ownHeaders: Headers | None = None  # the proxy's, while the upstream's stand in
        self._pending: Deferred[IResponse] | None = None
        self._idle: IDelayedCall | None = None

    def send(self, headers: Headers) -> None:
        request = self._request
        request.notifyFinish().addErrback(self._lostClient)
        self._pending = pending = self._upstream.send(headers)
        pending.addCallbacks(self._gotResponse, self._failed)
        pending.addErrback(
            lambda failure: self._log.failure("Proxying {uri} failed", failure, uri=request.uri)
        )

    def _lostClient(self, failure: Failure) -> None:
        self._clientGone = True
        if self._pending is not None:
            self._pending.cancel()
        self.stopProducing()

    def _gotResponse(self, response: IResponse) -> None:
        self._pending = None
        if self._clientGone:
            response.deliverBody(self)
            self.stopProducing()
            return
        request = self._request
        # The standard reason phrase, never the upstream's: browsers ignore it
        # (RFC 9110 section 15), and its bytes (a bare CR) could split the
        # status line.  Twisted's own phrase for the code, or "Unknown Status".
        request.setResponseCode(response.code)
        self._ownHeaders = request.responseHeaders
        request.responseHeaders = responseHeadersForClient(response.headers)
        self._upstream.answering(request.responseHeaders)
        for name, value in getattr(request, "authCookies", ()):
            request.responseHeaders.addRawHeader(name, value)
        request.defaultContentType = None
        if request.method == b"HEAD":
            length = response.headers.getRawHeaders(b"content-length")
            if length:
                request.responseHeaders.setRawHeaders(b"content-length", length[-1:])
        elif response.length is not UNKNOWN_LENGTH and response.code not in (204, 304):
            request.setHeader(b"content-length", b"%d" % (response.length,))
        request.registerProducer(self, True)
        self._progress()
        response.deliverBody(self)

    def _progress(self) -> None:
        """
        Bytes moved: (re)start the idle timer.  Like nginx's
        C{proxy_read_timeout} and C{send_timeout} together, it ends an
        exchange that moves nothing for C{--upstream-timeout} seconds, a
        stalled upstream or a client that stopped reading, so neither keeps
        two connections open for ever.
        """
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._upstream.timeouts.response)
        else:
            self._idle = self._upstream.reactor.callLater(
                self._upstream.timeouts.response, self._stalled
            )

    def _stopIdleTimer(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _stalled(self) -> None:
        self._idle = None
        request = self._request
        if not request.startedWriting:  # the client read everything: the upstream is silent
            self._answered = True
            self.stopProducing()
            request.unregisterProducer()
            reason = f"no response body within {self._upstream.timeouts.response:g} s"
            self._answer(504, "sent nothing after the response headers", reason)
            return
        self._log.warn(
            "Closing {method} {uri}: nothing moved for {timeout} s ({side})",
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            timeout=self._upstream.timeouts.response,
            side="the client is not reading" if self._paused else "the upstream sent nothing",
        )
        self.stopProducing()
        request.channel.forceAbortClient()

    def _failed(self, failure: Failure) -> None:
        """No usable response: answer 502 or 504, once."""
        self._pending = None
        if self._clientGone:
            return
        if failure.check(ResponseTimeout, TimeoutError):
            self._answer(504, "did not answer in time", _describe(failure))
        elif failure.check(InvalidResponse) or _malformed(failure):
            self._answer(502, "sent an invalid response", _describe(failure))
        else:
            self._answer(502, "could not be reached", _describe(failure))

    def _answer(self, status: int, what: str, reason: str) -> None:
        """
        Answer with an error page in place of the upstream's response, and
        one log line that says why; the upstream's headers, if any, are gone.
        """
        self._answered = True
        request = self._request
        upstream = self._upstream.where()
        if status == 504:
            self._metrics.upstreamTimeouts.inc()
        else:
            self._metrics.upstreamConnectErrors.inc()
        self._log.error(
            "{status} for {method} {uri}: upstream {upstream} {what}: {reason}",
            status=status,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            upstream=upstream,
            what=what,
            reason=reason,
        )
        if self._ownHeaders is not None:
            request.responseHeaders = self._ownHeaders
        title = "Gateway Timeout" if status == 504 else "Bad Gateway"
        detail = f"The Streamlit server at {upstream} {what} ({reason})."
        errorPage(status, title, detail).render(request)

    # IPushProducer: the client side asks us to slow down or stop.
    _paused = False

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._idle is not None:
            self._progress()
        if self.transport is not None:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """Close the upstream connection this body is read from; it is not reusable now."""
        self._stopIdleTimer()
        if self.transport is not None:
            self.transport.stopProducing()

    # IProtocol: the upstream body.
    def dataReceived(self, data: bytes) -> None:
        if not (self._clientGone or self._answered):
            self._progress()
            self._request.write(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self._stopIdleTimer()
        if self._clientGone or self._answered:
            return
        request = self._request
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            return
        if not request.startedWriting:  # nothing sent yet: the client can still be told
            what = "sent an invalid response" if _malformed(reason) else "broke off its response"
            self._answer(502, what, _describe(reason))
            return
        self._log.warn(
            "Cut off {method} {uri} after {sent} bytes: upstream {upstream} broke off its response: {reason}",
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            sent=request.sentLength,
            upstream=self._upstream.where(),
            reason=_describe(reason),
        )
        request.channel.loseConnection()


def _malformed(failure: Failure) -> Failure | None:
    """What in C{failure} says the upstream sent something that is not HTTP, if anything."""
    value = failure.value
    if isinstance(value, (ResponseFailed, ResponseNeverReceived)):
        return next((r for r in value.reasons if r.check(*MALFORMED_RESPONSE)), None)
    return None


def _describe(failure: Failure) -> str:
    """A short human reason for an upstream failure, for the page and the log."""
    value = failure.value
    malformed = _malformed(failure)
    if malformed is not None:
        return _message(malformed)
    if isinstance(value, (ResponseFailed, ResponseNeverReceived)):
        # The first reason is the cause; any later one (the body's decoder
        # noticing it is incomplete) is its consequence.
        return "connection lost: " + _message(value.reasons[0])
    if failure.check(DNSLookupError):
        return "host name not found"
    return _message(failure)


def _message(failure: Failure) -> str:
    """
    C{failure}'s message; Twisted's parse errors carry the offending line as
    bytes, shown escaped and cut short (it came from the upstream).
    """
    args: tuple[object, ...] = getattr(failure.value, "args", ())
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], bytes):
        return f"{args[0]}: {args[1][:80]!r}"
    return failure.getErrorMessage() or failure.value.__class__.__name__


__all__ = ["Exchange", "Forwarding"]
