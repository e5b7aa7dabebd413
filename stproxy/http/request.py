"""
The request stproxy's site makes: a body cap enforced as the bytes arrive,
HSTS on every response over TLS, and the short page the proxy answers with
itself when it refuses a request it has not read to the end.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver
from twisted.web.http import datetimeToString
from twisted.web.server import Request

from stproxy.auth.verdict import Identity
from stproxy.ops.drain import Drain

#: The longest body anything could declare: no file offset goes further, so
#: a larger C{Content-Length} or chunk size is not a length but an attack.
MAX_REAL_LENGTH = 2**63 - 1

#: The reason phrases of the answers the proxy writes itself (RFC 9110's names).
_PHRASES = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class RequestPolicy(Protocol):
    """What a L{ProxyRequest} needs of the site that made it (a L{ProxySite})."""

    reactor: IReactorTime
    maxBodySize: int
    hstsHeader: bytes | None
    logObserver: ILogObserver | None
    drain: Drain | None

    def requestEnded(self, result: object, request: ProxyRequest) -> None:
        """C{request} is finished, or its client went away."""


class Refuser(Protocol):
    """What a L{ProxyRequest} needs of its connection (a L{stproxy.http.channel.ProxyChannel})."""

    def refuse(self, status: int, detail: str, expected: int | None = None) -> None:
        """Answer the request being read with C{status} and close the connection."""


class ProxyRequest(Request):
    """
    A request whose body may not exceed the site's C{maxBodySize}.

    twisted.web reads the whole body before any resource sees the request
    and sets no limit of its own, so the cap is enforced here, as the bytes
    arrive: a declared C{Content-Length} over the cap is refused before the
    body is read, a chunked body as soon as a chunk declares a size that
    would cross it.  The answer is a 413, as nginx gives, and the connection
    is closed once the client has stopped sending (L{stproxy.http.linger}).
    """

    #: Who the request is from, once authenticated (L{stproxy.auth}): its
    #: C{user}, C{email}, C{groups}; empty for nobody.
    identity: Identity = {}

    #: The headers that tell the upstream who the request is from, added
    #: after the client's own copies of them are gone (L{stproxy.http.root}).
    upstreamHeaders: tuple[tuple[bytes, bytes], ...] = ()

    #: C{Set-Cookie} lines the auth service sent with its allow, for the response.
    authCookies: tuple[tuple[bytes, bytes], ...] = ()

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

    def _refuse(self, status: int, detail: str, expected: int | None = None) -> None:
        connection: Refuser = self.channel  # type: ignore[assignment]
        connection.refuse(status, detail, expected)

    def gotLength(self, length: int | None) -> None:
        if length is not None and not self.expectBody(length, declared=True):
            return
        super().gotLength(length)

    def expectBody(self, more: int, declared: bool = False) -> bool:
        """
        Whether a body C{more} bytes longer than what has arrived may come:
        if not, it is refused (413 over C{maxBodySize}, 400 over any real
        length).

        @param declared: C{more} is the C{Content-Length}: the client is
            sending exactly that, which is worth reading and discarding.
        """
        total = self.bodyBytes + more
        limit = self.policy.maxBodySize
        expected = more if declared else None
        if limit and total > limit:
            self._refuse(413, f"The request body is over the limit of {limit} bytes.", expected)
        elif total > MAX_REAL_LENGTH:
            self._refuse(400, "The request declares a body longer than any could be.", expected)
        else:
            return True
        return False

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self.bodyBytes += len(data)
        if self.expectBody(0):
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    #: When the request arrived (reactor time), for the duration metric and log.
    started: float = 0.0

    def track(self) -> None:
        """
        Register with the site's L{Drain} while in flight, so shutdown waits
        for it, and be counted and logged when finished.
        """
        site = self.policy
        self.started = site.reactor.seconds()
        if site.drain is not None:
            site.drain.requestStarted(self, self.channel)
            self.notifyFinish().addBoth(site.requestEnded, self)

    def process(self) -> None:
        self.track()
        super().process()

    def answer(self, status: int, detail: str, line: tuple[bytes, bytes, bytes]) -> None:
        """
        Answer with the proxy's own short text page, counted and logged like
        any response, and close the connection: what a client gets when its
        request cannot be read to the end (L{stproxy.http.channel}).

        @param line: the method, target and version of the request line, as
            far as they are known, for the status line and the logs.
        """
        self._refused = True
        self.method, self.uri, version = line
        self.path = self.uri.split(b"?", 1)[0]
        self.clientproto = version if version == b"HTTP/1.0" else b"HTTP/1.1"
        self.track()
        body = detail.encode("utf-8") + b"\n"
        self.setResponseCode(status, _PHRASES.get(status))
        headers = self.responseHeaders
        headers.setRawHeaders(b"date", [datetimeToString(int(self.started))])
        headers.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
        headers.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        headers.setRawHeaders(b"connection", [b"close"])
        self.write(body)
        self.finish()

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


__all__ = ["ProxyRequest", "RequestPolicy", "Refuser", "MAX_REAL_LENGTH"]
