"""
Every private or undocumented Autobahn API stproxy uses, and why; nothing
else in stproxy touches one.

Each is pinned by C{tests/test__autobahn.py}, which fails loudly (naming the
name) if an Autobahn release renames, removes or changes it; C{setup.py} caps
Autobahn below the next major version so that such a release is a decision.

What the relay needs of an Autobahn protocol, in stproxy's terms:

  - L{LeanProtocol} skips three costs of Autobahn's message path a relay
    does not need (TWISTED.md section 12): the debug-log argument formatting
    of C{dataReceived} (C{_dataReceived} is the body without it) and of
    C{sendData} (written straight to the transport unless C{send_queue}
    holds chopped or synchronous sends), and the per-message C{"message"}
    event (L{LeanProtocol.onMessageEnd} takes C{message_data} and
    C{message_is_binary} itself).  It reports the first close frame of a
    closing handshake (C{onCloseFrame}), exposes what Autobahn keeps about
    the close (C{failedByMe}, C{droppedByMe}, C{closeHandshakeTimeoutCall}),
    sends close frames with any valid code (C{sendCloseFrame}: C{sendClose}
    refuses the 1001 and 1012 a proxy passes on) and fails a connection with
    a code (C{_fail_connection}), keeping that close frame when Autobahn's
    server would abort on the next close (C{dropConnection}).
  - L{LeanProtocol.sendWholeMessage} sends within a limit of its own
    (C{sendLimit}): Autobahn's one C{maxMessagePayloadSize} option, read at
    each use, bounds both what C{sendMessage} sends and what is received
    (each frame's declared size, and since 26.10 the most a compressed frame
    is inflated to: C{decompress_message_data}'s C{max_output_len}).
  - Raw passage (L{stproxy.websocket.passthrough}): C{takeUnparsed} takes
    over from Autobahn's parser between messages (C{current_frame},
    C{inside_message}, its receive buffer C{data}), C{autobahnReceived}
    gives it back control frames (C{_dataReceived}), C{trafficReceived}
    counts passing data as traffic for auto-ping (C{autoPingTimeoutCall},
    C{_cancelAutoPingTimeoutCall}), C{heldWrites} keeps Autobahn's frames
    and graceful close (C{_closeConnection}) out of the middle of the other
    leg's frames; C{extensionsInUse} reads C{websocket_extensions_in_use}.
  - L{UpstreamHandshake} lets the upstream leg rewrite the handshake
    Autobahn's client writes (through C{sendData}) and remember the status
    of a refused one (C{failHandshake}, C{http_status_line}).
  - L{requestHead} and L{requestPath}: the browser's handshake as received
    (C{http_request_data}, C{http_request_path}).
  - L{useReactorTimer}: the timers of a factory's connections
    (C{_batched_timer}) on the proxy's reactor, to the millisecond; and
    L{ClientDropTimer}, for the one timer of Autobahn's client that is not
    (the wait for the server to drop TCP after the closing handshake:
    C{serverConnectionDropTimeout}, C{serverConnectionDropTimeoutCall},
    C{onServerConnectionDropTimeout}), which it puts on txaio's reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.websocket.protocol import WebSocketProtocol

from stproxy.websocket.timers import ReactorTimer

if TYPE_CHECKING:
    from autobahn.websocket.protocol import WebSocketClientFactory, WebSocketServerFactory
    from twisted.internet.interfaces import IReactorTime

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
    # an ITCPTransport, IConsumer and IPushProducer at once (no one interface
    # says so).  Autobahn annotates message_data without the None it assigns.
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
    #: Autobahn's own frames, held while the other leg's frame is half
    #: written to this transport (None: none is; see the module docstring).
    heldWrites: list[bytes] | None = None
    _closeWhenReleased = False

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)  # type: ignore[attr-defined]

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self.heldWrites is not None:
            self.heldWrites.append(data)
        elif sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
        else:
            self.transport.write(data)

    @property
    def extensionsInUse(self) -> bool:
        return bool(self.websocket_extensions_in_use)  # type: ignore[attr-defined]

    @property
    def receiveLimit(self) -> int:
        return self.maxMessagePayloadSize

    @property
    def betweenMessages(self) -> bool:
        return self.current_frame is None and not self.inside_message  # type: ignore[attr-defined]

    def takeUnparsed(self) -> bytes:
        """What Autobahn received and has not parsed yet, taken from it."""
        data, self.data = self.data, b""  # type: ignore[has-type]
        return data  # type: ignore[no-any-return]

    def autobahnReceived(self, data: bytes) -> None:
        self._dataReceived(data)  # type: ignore[attr-defined]

    def trafficReceived(self) -> None:
        if self.autoPingTimeoutCall is not None and self.autoPingRestartOnAnyTraffic:  # type: ignore[attr-defined]
            self._cancelAutoPingTimeoutCall()  # type: ignore[attr-defined]

    def releaseWrites(self) -> None:
        held, self.heldWrites = self.heldWrites, None
        if held:
            self.transport.write(b"".join(held))
        if self._closeWhenReleased:
            self._closeWhenReleased = False
            super()._closeConnection(False)  # type: ignore[misc]

    def breakOff(self) -> None:
        """The frame half written here will never end: write nothing more, close TCP."""
        self.heldWrites, self._closeWhenReleased = [], False
        self.transport.loseConnection()

    def _closeConnection(self, abort: bool = False) -> None:
        if self.heldWrites is not None and not abort:
            self._closeWhenReleased = True
        else:
            super()._closeConnection(abort)  # type: ignore[misc]

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

    Autobahn schedules that one wait with C{txaio.call_later}, on txaio's
    global reactor, from C{onCloseFrame}: so the option is hidden from it
    for that call, and the same wait is put in
    C{serverConnectionDropTimeoutCall} here (Autobahn cancels it when the
    connection is lost).
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


def useReactorTimer(
    factory: WebSocketServerFactory | WebSocketClientFactory, reactor: IReactorTime
) -> None:
    """Run the timers of C{factory}'s connections on C{reactor} (see L{ReactorTimer})."""
    factory._batched_timer = ReactorTimer(reactor)


__all__ = [
    "STATE_CLOSED", "STATE_CLOSING", "STATE_CONNECTING", "STATE_OPEN", "ClientDropTimer",
    "LeanProtocol", "ReactorTimer", "UpstreamHandshake", "requestHead", "requestPath",
    "useReactorTimer",
]  # fmt: skip
