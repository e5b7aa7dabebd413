"""
The connection a client opens: twisted.web's L{HTTPChannel} with the limits
stproxy puts on what arrives before a request is handed on, and a proper
answer whenever one is crossed.

twisted.web accepts a head (request line and headers) of 16 KB and lines of
16 KB, and past those drops the connection without a word (a line) or with a
bare C{400} status line (the head).  Streamlit's C{st.login} splits its
identity cookie into chunks that together reach 5-22 KB, so heads up to
C{--max-header-size} (64 KB by default) are accepted here, WebSocket
handshakes included (they arrive through this channel first), and every
limit crossed gets an answer that is counted and logged like any response:

  - a request line longer than the head may be, or a target over 16 KB: 414;
  - a head over the limit (one line or all of them), or too many fields: 431;
  - a line ended by a bare LF: 400 at once (twisted.web would wait for a
    CRLF until its idle timeout, then close without an answer);
  - anything else twisted.web cannot parse: 400;
  - a body, or one chunk of it, declared larger than C{--max-body-size}:
    413 before it is read (L{stproxy.http.request});
  - a head not complete within C{--header-timeout}, or a body arriving
    slower than C{--min-body-rate}: 408 (L{stproxy.http.timeouts}, whose
    timer replaces twisted.web's, and also closes idle connections).

After such an answer nothing more is read as HTTP (where the next request
would start is unknown) and the connection is closed once the client has
stopped sending (L{stproxy.http.linger}); its next request on a new
connection is served as usual.
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from stproxy._twisted import BadRequestHook, chunkRemaining
from stproxy.buffers import useTransferBuffer
from stproxy.config import ClientLimits
from stproxy.http.addresses import RememberedAddresses
from stproxy.http.linger import Linger
from stproxy.http.request import ProxyRequest, RequestPolicy
from stproxy.http.timeouts import RequestTimer
from stproxy.ops.logs import loggerFor

#: The longest request target accepted (then 414).
MAX_TARGET_LENGTH = 16 * 1024

#: How much of an over-long target the logs get.
_LOGGED_TARGET = 1024

#: The request line of a request whose request line has not arrived.
_UNKNOWN_LINE = (b"-", b"-", b"HTTP/1.1")


class ProxyChannel(BadRequestHook, RememberedAddresses, HTTPChannel):
    """
    An L{HTTPChannel} that enforces C{maxHeaderSize} on request heads,
    refuses what it cannot read with a proper answer (L{refuse}), and tells
    its site's L{Drain} when it opens and closes.

    Lines are split on LF, and each must end in CR: for well-formed input
    that is exactly twisted.web's CRLF split, and a bare LF is seen at once.
    The head's size is counted here, line endings included, and
    C{MAX_LENGTH} (twisted's limit for the line being buffered) follows what
    is left of it, so no more than C{maxHeaderSize} is ever buffered.
    """

    site: RequestPolicy
    delimiter = b"\n"

    def __init__(self, maxHeaderSize: int, limits: ClientLimits, reactor: IReactorTime) -> None:
        super().__init__()
        self.maxHeaderSize = maxHeaderSize
        # twisted.web's own count leaves line endings out, so it never trips first.
        self.totalHeadersSize = maxHeaderSize
        self.MAX_LENGTH = maxHeaderSize
        self._inHead = False
        self._headBytes = 0
        self._headFields = 0
        self._requestLine = _UNKNOWN_LINE
        self._linger: Linger | None = None
        self.timer = RequestTimer(reactor, limits, self.loseConnection, self._abort, self._timedOut)

    def connectionMade(self) -> None:
        super().connectionMade()
        useTransferBuffer(self.transport)
        self.timer.connected()
        if self.site.drain is not None:
            self.site.drain.connectionOpened(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._linger is not None:
            self._linger.stop()
        if self.site.drain is not None:
            self.site.drain.connectionClosed(self)
        try:
            super().connectionLost(reason)
        finally:  # last: what the requests do on their way out may close the channel
            self.timer.stop()

    def dataReceived(self, data: bytes) -> None:
        if self._linger is not None:
            self._linger.discard(len(data))
            return
        self.timer.received(len(data))
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._linger is not None:
            self._linger.discard(len(line) + 1)
            return
        bare = not line.endswith(b"\r")
        if not bare:
            line = line[:-1]
        starting = not self._inHead
        if starting:  # a request line (or the stray empty line before one)
            self._requestLine = _describe(line)
            self._inHead = bool(line)
            self._headBytes = self._headFields = 0
        if bare:
            self.refuse(400, "Lines must end with CRLF, not a bare LF.")
            return
        if starting and not line:
            super().lineReceived(line)  # forgiven once by twisted.web
            return
        self._headBytes += len(line) + 2
        if self._headBytes > self.maxHeaderSize:
            self._headTooLarge(starting)
            return
        if starting:
            parts = line.split(b" ")  # twisted.web refuses any other number than three
            if len(parts) == 3 and len(parts[1]) > MAX_TARGET_LENGTH:
                self.refuse(414, f"The request target is over {MAX_TARGET_LENGTH} bytes.")
                return
        elif not line:  # the end of the head; a body may follow, counted elsewhere
            self._inHead = False
            self._headBytes = 0
            self.timer.headReceived()
        elif line[:1] not in (b" ", b"\t"):  # a field, not the continuation of one
            self._headFields += 1
            if self._headFields > self.maxHeaders:
                self.refuse(431, f"The request has over {self.maxHeaders} header fields.")
                return
        self.MAX_LENGTH = self.maxHeaderSize - self._headBytes
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._linger is not None:
            self._linger.discard(len(line))
            return
        starting = not self._inHead
        if starting:
            self._requestLine = _describe(line)
        self._headTooLarge(starting)

    def _headTooLarge(self, requestLine: bool) -> None:
        """The head went over C{maxHeaderSize}: in its request line (414) or in its headers (431)."""
        if requestLine:
            self.refuse(414, f"The request line is over {self.maxHeaderSize} bytes.")
        else:
            self.refuse(431, f"The request head is over {self.maxHeaderSize} bytes.")

    def rawDataReceived(self, data: bytes) -> None:
        if self._linger is not None:
            self._linger.discard(len(data))
            return
        super().rawDataReceived(data)
        remaining = chunkRemaining(self)
        if remaining is not None and self._linger is None and self.requests:
            request = self.requests[-1]
            if isinstance(request, ProxyRequest):
                request.expectBody(remaining)

    def allContentReceived(self) -> None:
        if self._linger is None:  # else refused: the request must not be processed
            self.timer.stop()
            super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        """Wait for the next request, whose bytes may have arrived already (then replayed)."""
        self._requestLine = _UNKNOWN_LINE
        if self._linger is None:  # else closing within the lingering's bounds, then aborted
            self.timer.requestDone() if self.persistent else self.timer.closing()
        super().requestDone(request)

    def _timedOut(self, detail: str) -> None:
        """The head or body being read is too slow (L{RequestTimer})."""
        self.refuse(408, detail)

    def _abort(self) -> None:
        if self.transport is not None:  # TCP's, TLS's and UNIX's all abort
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        """
        Close after the response when any C{Connection} token is C{close}:
        twisted.web looks only at the first C{Connection} header, split on
        spaces, so C{Connection: close, X-Foo} kept the connection open.
        """
        tokens = {
            token.strip(b" \t").lower()
            for value in request.requestHeaders.getRawHeaders(b"connection", [])
            for token in value.split(b",")
        }
        if b"close" in tokens:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def badRequest(self) -> None:
        """What twisted.web cannot parse (a bad field name, two lengths...)."""
        self.refuse(400, "The request is not valid HTTP/1.1.")

    def refuse(self, status: int, detail: str, expected: int | None = None) -> None:
        """
        Answer the request being read with the proxy's own page, read no
        more of it as HTTP, and close the connection once the client has
        stopped sending.

        @param expected: how many more bytes the client declared it would
            send (a C{Content-Length} body), if known.
        """
        if self._linger is not None or self.transport is None:
            return  # answered already
        self._linger = Linger(self.site.reactor, self.loseConnection, expected)
        self.persistent = False
        self.timer.stop()  # the lingering has bounds of its own, and its close an abort
        request = self._currentRequest()
        # Answered: twisted.web must not invite the body with a 100 Continue.
        request.requestHeaders.removeHeader(b"expect")
        method, target, _ = self._requestLine
        loggerFor(self, self.site.logObserver).info(
            "Refused {method} {uri} from {peer}: {status} {detail}",
            method=method.decode("latin-1"),
            uri=target.decode("latin-1"),
            peer=getattr(self.transport.getPeer(), "host", "-"),
            status=status,
            detail=detail,
        )
        request.answer(status, detail, self._requestLine)
        self._linger.start()  # already, when finishing the request closed the connection
        if not self._linger.done:
            self._halfClose()

    def _halfClose(self) -> None:
        """
        End the answer with a FIN while still reading, as nginx does, so a
        client reading to the end of the connection need not wait for the
        lingering to end.  Not over TLS: Twisted would shut the socket down
        under the TLS layer, without a C{close_notify}.
        """
        loseWriteConnection = getattr(self.transport, "loseWriteConnection", None)
        if loseWriteConnection is not None and not self.isSecure():
            loseWriteConnection()

    def _currentRequest(self) -> ProxyRequest:
        """The request whose head or body is arriving, made if its request line was not parsed."""
        if not self.requests:
            self.requests.append(self.requestFactory(self, len(self.requests)))
        request = self.requests[-1]
        assert isinstance(request, ProxyRequest)  # what ProxySite's requestFactory makes
        return request

    def loseConnection(self) -> None:
        """
        Close, once any lingering is over, and abort if the close does not
        end in time (L{RequestTimer.closed}): every close comes through
        here (idle, refused, an exchange cut short), and over TLS a close
        waits for the client's C{close_notify}, which a silent client never
        sends.
        """
        if self._linger is not None and not self._linger.done:
            self._linger.start()  # closes when the client is done sending
            return
        if self.transport is not None:  # else handed over (a WebSocket): not ours to abort
            self.timer.closed()
        super().loseConnection()


def _describe(line: bytes) -> tuple[bytes, bytes, bytes]:
    """
    The method, target and version of a request line, as far as it goes, for
    the status line and the logs: cut short, and with bytes a URI may not
    hold escaped, since it has not been checked.
    """
    line = line.split(b"\n", 1)[0].split(b"\r", 1)[0]
    parts = line.split(b" ", 2)
    method = _UNPRINTABLE.sub(_escape, parts[0][:16]) or b"-"
    target = parts[1] if len(parts) > 1 else b"-"
    if len(target) > MAX_TARGET_LENGTH:
        target = target[:_LOGGED_TARGET] + b"..."
    version = parts[2] if len(parts) > 2 else b"HTTP/1.1"
    return method, _UNPRINTABLE.sub(_escape, target), version


#: Bytes a logged request line shows escaped, as C{%XX}.
_UNPRINTABLE = re.compile(rb"[^\x21-\x7e]")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


__all__ = ["ProxyChannel", "MAX_TARGET_LENGTH"]
