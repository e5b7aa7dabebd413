"""
One client request and its upstream response, streamed: the request goes
upstream, the response comes back as it arrives.

Bodies never sit whole in memory on the way back: the upstream connection is
the producer and the client connection the consumer, so a slow browser pauses
the read from Streamlit.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from twisted.web.pages import errorPage
from twisted.web.server import Request
from zope.interface import implementer

from stproxy.http.headers import responseHeadersForClient
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics
from stproxy.upstream.client import ResponseTimeout, Upstream


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
        upstream: Upstream,
        logObserver: ILogObserver | None,
        metrics: Metrics,
    ) -> None:
        self._request = request
        self._metrics = metrics
        self._upstream = upstream
        self._log = loggerFor(self, logObserver)
        self._clientGone = False
        self._pending: Deferred[IResponse] | None = None
        self._idle: IDelayedCall | None = None

    def send(self, headers: Headers, body: IBodyProducer | None) -> None:
        request = self._request
        request.notifyFinish().addErrback(self._lostClient)
        self._pending = pending = self._upstream.request(request.method, request.uri, headers, body)
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
        request.setResponseCode(response.code, response.phrase)
        request.responseHeaders = responseHeadersForClient(response.headers)
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
        """Answer 502 or 504, once, with a page and a log line that say why."""
        self._pending = None
        if self._clientGone:
            return
        request = self._request
        upstream = str(self._upstream.address)
        if failure.check(ResponseTimeout, TimeoutError):
            status, title, what = 504, "Gateway Timeout", "did not answer in time"
            self._metrics.upstreamTimeouts.inc()
        else:
            status, title, what = 502, "Bad Gateway", "could not be reached"
            self._metrics.upstreamConnectErrors.inc()
        reason = _describe(failure)
        self._log.error(
            "{status} for {method} {uri}: upstream {upstream} {what}: {reason}",
            status=status,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            upstream=upstream,
            what=what,
            reason=reason,
        )
        errorPage(status, title, f"The Streamlit server at {upstream} {what} ({reason}).").render(
            request
        )

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
        if not self._clientGone:
            self._progress()
            self._request.write(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self._stopIdleTimer()
        if self._clientGone:
            return
        request = self._request
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            return
        self._log.warn(
            "Upstream response to {uri} broke off after the headers: {reason}",
            uri=request.uri.decode("latin-1"),
            reason=_describe(reason),
        )
        request.channel.loseConnection()


def _describe(failure: Failure) -> str:
    """A short human reason for an upstream failure, for the page and the log."""
    value = failure.value
    if isinstance(value, (ResponseFailed, ResponseNeverReceived)):
        reasons = [r.getErrorMessage() or r.type.__name__ for r in value.reasons]
        return "connection lost: " + "; ".join(reasons)
    if failure.check(DNSLookupError):
        return "host name not found"
    return failure.getErrorMessage() or failure.value.__class__.__name__


__all__ = ["Exchange"]
