"""
Every private or undocumented Autobahn API stproxy uses, and why; nothing else in stproxy
touches one.  Each is pinned by C{tests/test__autobahn.py}, which names any an Autobahn
release renames, removes or changes; C{setup.py} caps Autobahn below its next major version.

  - L{LeanProtocol}: Autobahn's message path without the debug-log formatting and the
    per-message event a relay does not need (TWISTED.md section 12: C{_dataReceived};
    C{sendData} straight to the transport unless C{send_queue} holds chopped or synchronous
    sends; C{message_data} and C{message_is_binary} at C{onMessageEnd}).  Closes: the first
    close frame of a closing handshake (C{onCloseFrame}), C{failedByMe}, C{droppedByMe},
    C{closeHandshakeTimeoutCall}, any valid code (C{sendCloseFrame}; C{sendClose} refuses
    the 1001 and 1012 a proxy passes on), failing with one (C{_fail_connection}) and keeping
    that close frame where Autobahn's server would abort (C{dropConnection}).  A send limit
    of its own: C{maxMessagePayloadSize}, read at each use, bounds sending and receiving
    (since 26.10 inflating too: C{decompress_message_data}'s C{max_output_len}).
  - Raw passage (L{stproxy.websocket.passthrough} says why): C{takeUnparsed}
    (C{current_frame}, C{inside_message}, the receive buffer C{data}), C{autobahnReceived}
    (C{_dataReceived}), C{trafficReceived} (C{autoPingTimeoutCall},
    C{_cancelAutoPingTimeoutCall}), C{heldWrites} (C{_closeConnection}), C{extensionsInUse}
    (C{websocket_extensions_in_use}).
  - Memory (L{stproxy.websocket.footprint} says why): C{_connectionMade} copies onto a
    connection only the options it lacks (L{optionNames}: C{CONFIG_ATTRS}); Autobahn's
    per-connection state at its starting values (L{LeanProtocol}'s class attributes), and
    what it keeps of the handshake (L{HANDSHAKE_STATE}, L{LeanProtocol.forgetHandshake}).
  - L{UpstreamHandshake} rewrites the handshake Autobahn's client writes (C{sendData}),
    keeps a refusal's status (C{failHandshake}, C{http_status_line}) and checks the
    subprotocol selected against its own offer (C{processHandshake} reads the factory's
    C{protocols}).  L{requestHead}, L{requestPath}: C{http_request_data}, C{http_request_path}.
  - L{useReactorTimer}: a factory's connections' timers (C{_batched_timer}) on the proxy's
    reactor, to the millisecond; L{ClientDropTimer}: the one Autobahn's client puts on
    txaio's (C{serverConnectionDropTimeout}, C{serverConnectionDropTimeoutCall},
    C{onServerConnectionDropTimeout}).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Sequence

from autobahn.websocket.protocol import WebSocketProtocol

from stproxy.websocket.timers import ReactorTimer

if TYPE_CHECKING:
    from autobahn.websocket.protocol import WebSocketClientFactory, WebSocketServerFactory
    from twisted.internet.interfaces import IReactorTime

STATE_CONNECTING = WebSocketProtocol.STATE_CONNECTING
STATE_OPEN = WebSocketProtocol.STATE_OPEN
STATE_CLOSING = WebSocketProtocol.STATE_CLOSING
STATE_CLOSED = WebSocketProtocol.STATE_CLOSED

_NONE: Any = None  # None, typed as whatever Autobahn assigns in its place

#: What Autobahn keeps of an opening handshake and reads no more once open.
HANDSHAKE_STATE = [
    "http_request_data", "http_status_line", "http_headers", "http_request_uri", "_wskey",
    "http_request_params", "http_request_host", "http_response_data", "websocket_protocols",
    "websocket_origin", "websocket_extensions",
]  # fmt: skip


class LeanProtocol:
    """
    Mixed in before C{WebSocketServerProtocol} or C{WebSocketClientProtocol} (see the
    module docstring).  Subclasses implement L{messageReceived} and L{closeFrameReceived}.
    """

    # From the Autobahn class this is mixed into.  The transport is an ITCPTransport, IConsumer
    # and IPushProducer (no one interface says so); message_data may be None.
    state: int
    transport: Any
    message_data: list[bytes] | None
    message_is_binary: bool
    maxMessagePayloadSize: int
    # Autobahn's per-connection state as each connection starts (footprint.lighten).
    closedByMe = failedByMe = triggered = wasCloseHandshakeTimeout = wasOpenHandshakeTimeout = False
    droppedByMe = wasClean = wasServerConnectionDropTimeout = wasMaxFramePayloadSizeExceeded = False
    inside_message = wasServingFlashSocketPolicyFile = wasMaxMessagePayloadSizeExceeded = False
    localCloseCode = localCloseReason = remoteCloseCode = remoteCloseReason = current_frame = _NONE
    openHandshakeTimeoutCall = closeHandshakeTimeoutCall = serverConnectionDropTimeoutCall = _NONE
    autoPingTimeoutCall = autoPingPending = autoPingPendingCall = autoPingPendingSent = _NONE
    _perMessageCompress = trackedTimings = websocket_protocol_in_use = wasNotCleanReason = _NONE
    autoPingPendingSeq, send_state, data = 0, 0, b""
    send_queue: Any = ()  # a deque while used

    #: The largest message this side sends (0: no limit), when not the largest it receives
    #: (C{maxMessagePayloadSize}); None: the same.
    sendLimit: int | None = None
    #: Autobahn's frames, held while the other leg's frame is half written here (or None).
    heldWrites: list[bytes] | None = None
    _closeWhenReleased = False
    #: A complete message arrived on this connection.
    messageReceived: Callable[[bytes, bool], None]
    #: A close frame arrived, Autobahn acted on it; whether it opened the closing handshake.
    closeFrameReceived: Callable[[bool], None]

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)  # type: ignore[attr-defined]

    autobahnReceived = dataReceived

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self.heldWrites is not None:
            self.heldWrites.append(data)
        elif sync or chopsize or self.send_queue:
            if not isinstance(self.send_queue, deque):
                self.send_queue = deque()
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
        else:
            self.transport.write(data)

    def forgetHandshake(self) -> None:
        """Once open: drop L{HANDSHAKE_STATE}, and C{send_queue} if empty."""
        for name in HANDSHAKE_STATE:
            self.__dict__.pop(name, None)
        if isinstance(self.send_queue, deque) and not self.send_queue:
            del self.send_queue

    @property
    def extensionsInUse(self) -> bool:
        return bool(self.websocket_extensions_in_use)  # type: ignore[attr-defined]

    @property
    def receiveLimit(self) -> int:
        return self.maxMessagePayloadSize

    @property
    def betweenMessages(self) -> bool:
        return self.current_frame is None and not self.inside_message

    def takeUnparsed(self) -> bytes:
        """What Autobahn received and has not parsed yet, taken from it."""
        data, self.data = self.data, b""
        return data

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
        """C{sendMessage}, refused (C{PayloadExceededError}) past L{sendLimit}."""
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

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        opening = self.state == STATE_OPEN
        stop: bool | None = super().onCloseFrame(code, reasonRaw)  # type: ignore[misc]
        self.closeFrameReceived(opening)
        return stop

    def dropConnection(self, abort: bool = False) -> None:
        """
        No abort once this side failed: Autobahn's server aborts when a close arrives (the
        refused frame may be one), losing this side's close frame: a reset, not 1002/1007.
        """
        super().dropConnection(abort and not self.failedByMe)  # type: ignore[misc]

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
    Mixed in before L{LeanProtocol} on the client side: the handshake Autobahn writes goes
    through L{rewriteHandshake}, a refused one leaves its HTTP status in L{refusedStatus},
    and the server's subprotocol must be one of L{offered} (not the factory's C{protocols}).
    """

    state: int
    factory: Any
    #: The HTTP status of a refused handshake (None: no status line seen).
    refusedStatus: int | None = None
    #: The subprotocols this connection asked for.
    offered: Sequence[str] = ()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self.state == STATE_CONNECTING and data.startswith(b"GET "):
            data = self.rewriteHandshake(data)
        super().sendData(data, sync, chopsize)  # type: ignore[misc]

    def rewriteHandshake(self, generated: bytes) -> bytes:
        """The handshake to send instead of the one Autobahn C{generated}."""
        return generated

    def processHandshake(self) -> None:
        factory = self.factory
        shared, factory.protocols = factory.protocols, self.offered
        try:
            super().processHandshake()  # type: ignore[misc]
        finally:
            factory.protocols = shared

    def failHandshake(self, reason: str) -> None:
        statusLine = getattr(self, "http_status_line", None) or ""
        status = statusLine.split(None, 2)[1:2]
        if status and status[0].isdigit():
            self.refusedStatus = int(status[0])
        super().failHandshake(reason)  # type: ignore[misc]


class ClientDropTimer:
    """
    Mixed in before an Autobahn client protocol class: the wait for the server to drop TCP
    after answering this side's close runs on the factory's timer (L{useReactorTimer}), not
    where Autobahn's C{onCloseFrame} puts it (txaio's global reactor): the option is hidden
    from that call, the wait put in C{serverConnectionDropTimeoutCall} (cancelled on loss).
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


def optionNames(protocol: type[WebSocketProtocol]) -> Sequence[str]:
    """The options C{_connectionMade} copies from the factory onto a connection lacking them."""
    return protocol.CONFIG_ATTRS  # type: ignore[attr-defined,no-any-return]


def requestHead(protocol: WebSocketProtocol) -> bytes:
    """The browser's opening handshake (request line and headers) as received."""
    return protocol.http_request_data  # type: ignore[attr-defined,no-any-return]


def requestPath(protocol: WebSocketProtocol) -> str | None:
    """The path of the browser's handshake, once it was parsed."""
    return getattr(protocol, "http_request_path", None)


def useReactorTimer(
    factory: WebSocketServerFactory | WebSocketClientFactory, reactor: IReactorTime
) -> None:
    """Run the timers of C{factory}'s connections on C{reactor} (see L{ReactorTimer})."""
    factory._batched_timer = ReactorTimer(reactor)


__all__ = [
    "STATE_CLOSED", "STATE_CLOSING", "STATE_CONNECTING", "STATE_OPEN", "HANDSHAKE_STATE",
    "ClientDropTimer", "LeanProtocol", "ReactorTimer", "UpstreamHandshake", "optionNames",
    "requestHead", "requestPath", "useReactorTimer",
]  # fmt: skip
