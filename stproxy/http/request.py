"""
The request stproxy's site makes: a body cap enforced as the bytes arrive,
and HSTS on every response over TLS.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver
from twisted.web.server import Request

from stproxy.ops.drain import Drain
from stproxy.ops.logs import loggerFor


class RequestPolicy(Protocol):
    """What a L{ProxyRequest} needs of the site that made it (a L{ProxySite})."""

    reactor: IReactorTime
    maxBodySize: int
    hstsHeader: bytes | None
    logObserver: ILogObserver | None
    drain: Drain | None

    def requestEnded(self, result: object, request: ProxyRequest) -> None:
        """C{request} is finished, or its client went away."""


#: The message a client gets when its body is over the limit.
_TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 34\r\n"
    b"Connection: close\r\n\r\n"
    b"Request body exceeds server limit\n"
)


class ProxyRequest(Request):
    """
    A request whose body may not exceed the site's C{maxBodySize}.

    twisted.web reads the whole body before any resource sees the request
    and sets no limit of its own, so the cap is enforced here, as the bytes
    arrive: a declared C{Content-Length} over the cap is refused before the
    body is read, a chunked body as soon as it crosses it.  The answer is a
    413 and a closed connection, as nginx gives.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodyBytes = 0
        self._refused = False

    @property
    def policy(self) -> RequestPolicy:
        """The site that made this request."""
        # Site.buildProtocol sets it; HTTPChannel does not declare it.
        site: RequestPolicy = self.channel.site  # type: ignore[attr-defined]
        return site

    def _limit(self) -> int:
        """The site's cap in bytes; 0 for none."""
        return self.policy.maxBodySize

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if length is not None and limit and length > limit:
            self._refuseBody(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self.bodyBytes += len(data)
        limit = self._limit()
        if limit and self.bodyBytes > limit:
            self._refuseBody(self.bodyBytes)
            return
        super().handleContentChunk(data)

    def _refuseBody(self, size: int) -> None:
        self._refused = True
        loggerFor(self, self.policy.logObserver).warn(
            "Refused a request body of {size} bytes (limit {limit})",
            size=size,
            limit=self._limit(),
        )
        # Answered already: twisted.web must not invite the body with a
        # "100 Continue" after the 413.
        self.requestHeaders.removeHeader(b"expect")
        transport = self.channel.transport
        assert transport is not None  # the body is arriving on it
        transport.write(_TOO_LARGE)
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    #: When the request arrived (reactor time), for the duration metric and log.
    started: float = 0.0

    def process(self) -> None:
        """Register with the site's L{Drain} while in flight, so shutdown waits for it."""
        site = self.policy
        self.started = site.reactor.seconds()
        if site.drain is not None:
            site.drain.requestStarted(self, self.channel)
            self.notifyFinish().addBoth(site.requestEnded, self)
        super().process()

    def write(self, data: bytes) -> None:
        """
        Add C{Strict-Transport-Security} (C{--hsts}) as the headers go out,
        so it is on every response over TLS, proxied and error pages alike,
        whatever headers the upstream sent.
        """
        if not self.startedWriting:
            value = self.policy.hstsHeader
            if value is not None and self.isSecure():
                self.responseHeaders.setRawHeaders(b"strict-transport-security", [value])
        super().write(data)


__all__ = ["ProxyRequest", "RequestPolicy"]
