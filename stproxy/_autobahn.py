"""
Every private or undocumented Autobahn API stproxy uses, and why; nothing
else in stproxy touches one.

Each is pinned by C{tests/test__autobahn.py}, which fails loudly (naming the
name) if an Autobahn release renames, removes or changes it; C{setup.py} caps
Autobahn below the next major version so that such a release is a decision.

What the relay needs of an Autobahn protocol, in stproxy's terms:

  - L{LeanProtocol} skips three costs of Autobahn's message path that a relay
    does not need (TWISTED.md section 12): the debug-log argument formatting
    of C{dataReceived} (C{_dataReceived} is the body without it) and of
    C{sendData} (written straight to the transport unless C{send_queue}
    holds chopped or synchronous sends), and the per-message C{"message"}
    event (L{LeanProtocol.onMessageEnd} takes C{message_data} and
    C{message_is_binary} itself).  It also reports the first close frame of
    a closing handshake (C{onCloseFrame}, Autobahn's internal hook) and
    exposes what Autobahn keeps about the close (C{failedByMe},
    C{droppedByMe}, C{closeHandshakeTimeoutCall}), sends close frames with
    any valid code (C{sendCloseFrame}: the public C{sendClose} refuses the
    1001 and 1012 a proxy must pass on) and fails a connection with a code
    (C{_fail_connection}), keeping that close frame when Autobahn's server
    would abort on the next close (C{dropConnection}).
  - L{LeanProtocol.sendWholeMessage} sends within a limit of its own
    (C{sendLimit}), where Autobahn's one C{maxMessagePayloadSize} option
    bounds both ways: the protocol's copy of it is read at the time of each
    use, by C{sendMessage} (the payload as compressed) and by the receiving
    side (each frame's declared size, and since 26.10 the most a compressed
    frame is inflated to, through C{decompress_message_data}'s
    C{max_output_len}: a deflate bomb stops at the limit).  So the browser
    leg takes messages smaller than those it sends.
  - L{UpstreamHandshake} lets the upstream leg rewrite the handshake
    Autobahn's client writes (through C{sendData}) and remember the status
    of a refused one (C{failHandshake}, C{http_status_line}).
  - L{requestHead} and L{requestPath}: the browser's handshake as received
    (C{http_request_data}, C{http_request_path}).
  - L{useReactorTimer}: the timers of a factory's connections (C{_batched_timer})
    on the reactor the proxy was given, to the millisecond; and
    L{ClientDropTimer}, the one timer of Autobahn's client that does not go
    through C{_batched_timer} (the wait for the server to drop the TCP
    connection after the closing handshake: C{serverConnectionDropTimeout},
    C{serverConnectionDropTimeoutCall}, C{onServerConnectionDropTimeout}),
    which Autobahn puts on txaio's global reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from autobahn.websocket.protocol import WebSocketProtocol

if TYPE_CHECKING:
    from autobahn.websocket.protocol import WebSocketClientFactory, WebSocketServerFactory
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

STATE_CONNECTING = WebSocketProtocol.STATE_CONNECTING
STATE_OPEN = WebSocketProtocol.STATE_OPEN
STATE_CLOSING = WebSocketProtocol.STATE_CLOSING
STATE_CLOSED = WebSocketProtocol.STATE_CLOSED


class LeanProtocol:
    """
    Mixed in before an Autobahn protocol class (C{WebSocketServerProtocol} or
    C{WebSocketClientProtocol}); see the module docstring.

    Subclasses implement L{messageReceived} and L{closeFrameReceived}.
    """

    # From the Autobahn protocol class this is mixed into.  The transport is
    # a TCP (or TLS) connection, an ITCPTransport, IConsumer and IPushProducer
    # at once, which no one Twisted interface says; Autobahn leaves the last
    # two untyped.  Autobahn annotates message_data without the None it
    # assigns (the protocol classes mixing this in ignore that conflict).
    state: int
    transport: Any
    message_data: list[bytes] | None
    message_is_binary: bool
    failedByMe: bool
    droppedByMe: bool
    send_queue: Any
    closeHandshakeTimeoutCall: Any
    maxMessagePayloadSize: int

    #: The largest message this side sends (0: no limit), when it is not the
    #: largest it receives (C{maxMessagePayloadSize}); None: the same.
    sendLimit: int | None = None

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)  # type: ignore[attr-defined]

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
        else:
            self.transport.write(data)

    def sendWholeMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        C{sendMessage}, refused (C{PayloadExceededError}) past L{sendLimit}
        rather than past the limit of what this side receives.
        """
        limit = self.sendLimit
        if limit is None:
            self.sendMessage(payload, isBinary)  # type: ignore[attr-defined]
            return
        receiving, self.maxMessagePayloadSize = self.maxMessagePayloadSize, limit
        try:
            self.sendMessage(payload, isBinary)  # type: ignore[attr-defined]
        finally:
            self.maxMessagePayloadSize = receiving

    def onMessageEnd(self) -> None:
        """A whole message arrived: hand it to L{messageReceived} (never logged)."""
        data, self.message_data = self.message_data, None
        if not self.failedByMe and data is not None:
            self.messageReceived(b"".join(data), self.message_is_binary)

    def messageReceived(self, payload: bytes, isBinary: bool) -> None:
        """A complete message arrived on this connection."""
        raise NotImplementedError

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        opening = self.state == STATE_OPEN
        stop: bool | None = super().onCloseFrame(code, reasonRaw)  # type: ignore[misc]
        self.closeFrameReceived(opening)
        return stop

    def dropConnection(self, abort: bool = False) -> None:
        """
        Once this side has failed the connection, its close frame may still
        sit in the transport's buffer: Autobahn's server drops by aborting
        when a close arrives (the refused frame itself may be one), which
        would discard it and leave the peer a reset instead of 1002/1007.
        """
        super().dropConnection(abort and not self.failedByMe)  # type: ignore[misc]

    def closeFrameReceived(self, opening: bool) -> None:
        """
        A close frame arrived and Autobahn has acted on it; C{opening} says
        whether it opened the closing handshake (rather than answered ours).
        """
        raise NotImplementedError

    @property
    def failedByProxy(self) -> bool:
        """Whether this side failed the connection (a protocol error, a message too big)."""
        return self.failedByMe

    @property
    def droppedByProxy(self) -> bool:
        """Whether this side dropped the TCP connection (a ping timeout, say)."""
        return self.droppedByMe

    def sendCloseWith(self, code: int | None, reason: bytes | None) -> None:
        """Start the closing handshake with any valid close code (1001, 1012...)."""
        self.sendCloseFrame(code=code, reasonUtf8=reason)  # type: ignore[attr-defined]

    def failWith(self, code: int, reason: str) -> None:
        """Fail the connection: a close frame with C{code}, then drop it."""
        self._fail_connection(code, reason)  # type: ignore[attr-defined]

    def stopCloseHandshakeTimer(self) -> None:
        """Cancel the close handshake's timeout: the connection is gone already."""
        timeout, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timeout is not None:
            timeout.cancel()


class UpstreamHandshake:
    """
    Mixed in before L{LeanProtocol} on the client side: the handshake
    Autobahn writes goes through L{rewriteHandshake}, and a refused one
    leaves its HTTP status in L{refusedStatus}.
    """

    state: int

    #: The HTTP status of a refused handshake (None: no status line seen).
    refusedStatus: int | None = None

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self.state == STATE_CONNECTING and data.startswith(b"GET "):
            data = self.rewriteHandshake(data)
        super().sendData(data, sync, chopsize)  # type: ignore[misc]

    def rewriteHandshake(self, generated: bytes) -> bytes:
        """The handshake to send instead of the one Autobahn C{generated}."""
        return generated

    def failHandshake(self, reason: str) -> None:
        statusLine = getattr(self, "http_status_line", None) or ""
        status = statusLine.split(None, 2)[1:2]
        if status and status[0].isdigit():
            self.refusedStatus = int(status[0])
        super().failHandshake(reason)  # type: ignore[misc]


class ClientDropTimer:
    """
    Mixed in before an Autobahn client protocol class: once the server has
    answered this side's close, the wait for it to drop the TCP connection
    (the C{serverConnectionDropTimeout} option) runs on the factory's timer,
    like every other timer of the connection (L{useReactorTimer}).

    Autobahn's client schedules that one wait alone with
    C{txaio.call_later}, on txaio's global reactor, from C{onCloseFrame}: so
    the option is hidden from it for that call, and the same wait is
    scheduled here, in C{serverConnectionDropTimeoutCall} (which Autobahn
    cancels when the connection is lost), calling its
    C{onServerConnectionDropTimeout}.
    """

    state: int
    wasClean: bool
    factory: Any
    serverConnectionDropTimeout: float
    serverConnectionDropTimeoutCall: Any

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        answered = self.state == STATE_CLOSING
        timeout, self.serverConnectionDropTimeout = self.serverConnectionDropTimeout, 0
        try:
            stop: bool | None = super().onCloseFrame(code, reasonRaw)  # type: ignore[misc]
        finally:
            self.serverConnectionDropTimeout = timeout
        if answered and timeout > 0 and self.state == STATE_CLOSING and self.wasClean:
            self.serverConnectionDropTimeoutCall = self.factory._batched_timer.call_later(
                timeout,
                self.onServerConnectionDropTimeout,  # type: ignore[attr-defined]
            )
        return stop


def requestHead(protocol: WebSocketProtocol) -> bytes:
    """The browser's opening handshake (request line and headers) as received."""
    head: bytes = protocol.http_request_data  # type: ignore[attr-defined]
    return head


def requestPath(protocol: WebSocketProtocol) -> str | None:
    """The path of the browser's handshake, once it was parsed."""
    return getattr(protocol, "http_request_path", None)


class ReactorTimer:
    """
    Stands in for the batched timer Autobahn's factories keep in
    C{_batched_timer} (open/close handshake timeouts, auto-ping).

    Autobahn's own batches timers into buckets of whole seconds on the global
    reactor, truncating: a 0.2 s ping interval then fires either at once
    (a ping after every pong) or at the next full second.  This one calls
    C{callLater} on the reactor given, to the millisecond, and its calls may
    be cancelled after they ran.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor

    def call_later(
        self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> _Call:
        return _Call(self._reactor.callLater(delay, func, *args, **kwargs))


class _Call:
    """A delayed call whose C{cancel} is harmless once it ran or was cancelled."""

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()

    def getTime(self) -> float:
        """When the call is due, in the reactor's seconds."""
        return self._call.getTime()


def useReactorTimer(
    factory: WebSocketServerFactory | WebSocketClientFactory, reactor: IReactorTime
) -> None:
    """Run the timers of C{factory}'s connections on C{reactor} (see L{ReactorTimer})."""
    factory._batched_timer = ReactorTimer(reactor)


__all__ = [
    "STATE_CLOSED",
    "STATE_CLOSING",
    "STATE_CONNECTING",
    "STATE_OPEN",
    "ClientDropTimer",
    "LeanProtocol",
    "ReactorTimer",
    "UpstreamHandshake",
    "requestHead",
    "requestPath",
    "useReactorTimer",
]
