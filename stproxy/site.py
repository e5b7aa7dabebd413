"""
The twisted.web side of the proxy: the L{Site}, its request class and the
root resource that sends each request down the HTTP or the WebSocket leg.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import ILogObserver
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from stproxy.logs import loggerFor

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
        self._bodyBytes = 0
        self._refused = False

    def _limit(self) -> int:
        return getattr(self.channel.site, "maxBodySize", 0) or 0

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if length is not None and limit and length > limit:
            self._refuseBody(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._bodyBytes += len(data)
        limit = self._limit()
        if limit and self._bodyBytes > limit:
            self._refuseBody(self._bodyBytes)
            return
        super().handleContentChunk(data)

    def _refuseBody(self, size: int) -> None:
        self._refused = True
        loggerFor(self, self.channel.site.logObserver).warn(
            "Refused a request body of {size} bytes (limit {limit})",
            size=size,
            limit=self._limit(),
        )
        transport = self.channel.transport
        transport.write(_TOO_LARGE)
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)


def isWebSocketUpgrade(request: IRequest) -> bool:
    """Whether C{request} asks to switch to the WebSocket protocol (RFC 6455 section 4.1)."""
    upgrade = request.getHeader(b"upgrade") or b""
    tokens = {token.strip().lower() for token in upgrade.split(b",")}
    return b"websocket" in tokens


class ProxyRoot(Resource):
    """
    Sends WebSocket upgrades to the relay and everything else to the HTTP
    reverse proxy, whatever the path.

    Autobahn's resource is a leaf that takes over every request under its
    path, upgrade or not, so it is only ever asked to render upgrades.
    """

    isLeaf = True

    def __init__(self, http: IResource, webSocket: IResource) -> None:
        super().__init__()
        self._http = http
        self._webSocket = webSocket

    def render(self, request: Request) -> Any:
        if isWebSocketUpgrade(request) and request.uri.startswith(b"/"):
            return self._webSocket.render(request)
        return self._http.render(request)


class _StdoutLog:
    """
    An access log file that is the process's real standard output (twistd
    replaces C{sys.stdout} with its log), flushed per line and never closed.
    """

    def write(self, line: str) -> None:
        sys.__stdout__.write(line)
        sys.__stdout__.flush()

    def flush(self) -> None:
        sys.__stdout__.flush()

    def close(self) -> None:
        pass


class ProxySite(Site):
    """
    The L{Site} stproxy listens with: transparent to bodies and headers,
    with a request body cap and an optional combined-format access log
    (a file path, or C{"-"} for standard output).
    """

    requestFactory = ProxyRequest

    def __init__(
        self,
        root: IResource,
        reactor: Any,
        maxBodySize: int = 0,
        accessLog: str | None = None,
        logObserver: ILogObserver | None = None,
    ) -> None:
        toStdout = accessLog == "-"
        super().__init__(
            root,
            logPath=None if toStdout else accessLog,
            reactor=reactor,
            parsePOSTFormSubmission=False,
        )
        if toStdout:
            self.logPath = "-"  # set after __init__, which would make it a path
        self.maxBodySize = maxBodySize
        self.logObserver = logObserver
        self.noisy = False

    def _openLogFile(self, path: str | bytes) -> Any:
        if path in ("-", b"-"):
            return _StdoutLog()
        return super()._openLogFile(path)

    def acceptableProtocols(self) -> list[bytes]:
        """HTTP/1.1 only: a WebSocket upgrade cannot happen over HTTP/2."""
        return [b"http/1.1"]


def buildSite(
    http: IResource,
    webSocket: IResource,
    reactor: Any,
    maxBodySize: int,
    accessLog: str | None,
    logObserver: ILogObserver | None = None,
) -> ProxySite:
    """Assemble the resource tree and the L{Site} around it."""
    site = ProxySite(ProxyRoot(http, webSocket), reactor, maxBodySize, accessLog, logObserver)
    site.displayTracebacks = False
    return site

