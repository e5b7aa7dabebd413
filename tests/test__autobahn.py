"""
Pins every private or undocumented Autobahn API stproxy relies on (listed in
stproxy/_autobahn.py), and exercises that adapter's L{LeanProtocol} and
L{UpstreamHandshake}: an Autobahn release that renames, removes or changes
one fails here, with a message naming it.  Connections are in memory
(C{twisted.test.iosim}) on a L{MemoryReactorClock}, never the global reactor.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from collections import deque
from typing import Any

import pytest
import txaio
from autobahn.twisted.websocket import (
    WebSocketAdapterProtocol,
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.exception import PayloadExceededError
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.compress_deflate import PerMessageDeflate
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test import iosim

from stproxy._autobahn import (
    HANDSHAKE_STATE,
    STATE_CLOSED,
    STATE_CLOSING,
    STATE_OPEN,
    ClientDropTimer,
    LeanProtocol,
    ReactorTimer,
    UpstreamHandshake,
    optionNames,
    requestHead,
    requestPath,
    useReactorTimer,
)

URL = "ws://127.0.0.1:8501/_stcore/stream"


class Transport(StringTransport):
    """A L{StringTransport} that, like a TCP transport, lets Autobahn unregister no producer."""

    def unregisterProducer(self) -> None:
        self.producer = None


def private(owner: object, name: str) -> Any:
    """C{owner.name}, or a failure naming the Autobahn API that is gone."""
    assert hasattr(owner, name), (
        f"Autobahn no longer has {getattr(owner, '__name__', owner)}.{name}"
    )
    return getattr(owner, name)


class Peer:
    """Records what a connection received (mixed into each test protocol)."""

    def connectionMade(self) -> None:
        self.received: list[tuple[bytes, bool]] = []
        self.closes: list[bool] = []
        self.closed: tuple[bool, int | None, str | None] | None = None
        self.pings: list[bytes] = []
        super().connectionMade()  # type: ignore[misc]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append((payload, isBinary))

    def onPing(self, payload: bytes) -> None:
        self.pings.append(payload)
        super().onPing(payload)  # type: ignore[misc]

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)


class LeanPeer(Peer, LeanProtocol):
    """A L{LeanProtocol} recording its messages and close frames."""

    def messageReceived(self, payload: bytes, isBinary: bool) -> None:
        self.received.append((payload, isBinary))

    def closeFrameReceived(self, opening: bool) -> None:
        self.closes.append(opening)


class LeanServer(LeanPeer, WebSocketServerProtocol):
    """The browser leg's shape: a lean server."""


class LeanClient(UpstreamHandshake, LeanPeer, WebSocketClientProtocol):
    """The upstream leg's shape: a lean client whose handshake may be rewritten."""

    extraHeader = b""

    def rewriteHandshake(self, generated: bytes) -> bytes:
        return generated[:-2] + self.extraHeader + b"\r\n"


class PlainServer(Peer, WebSocketServerProtocol):
    """An Autobahn server protocol as Autobahn ships it."""


class PlainClient(Peer, WebSocketClientProtocol):
    """An Autobahn client protocol as Autobahn ships it."""


def factories(clock: MemoryReactorClock, server: type, client: type, **serverOptions: Any):
    """A server and a client factory on C{clock} for C{server} and C{client} protocols."""
    serverFactory = WebSocketServerFactory(URL, reactor=clock)
    serverFactory.protocol = server
    serverFactory.setProtocolOptions(failByDrop=False, **serverOptions)
    clientFactory = WebSocketClientFactory(URL, reactor=clock)
    clientFactory.protocol = client
    # A client's drop timeout runs on txaio's global reactor; the server drops at once anyway.
    clientFactory.setProtocolOptions(failByDrop=False, serverConnectionDropTimeout=0)
    for factory in (serverFactory, clientFactory):
        useReactorTimer(factory, clock)
    return serverFactory, clientFactory


def connect(
    clock: MemoryReactorClock | None = None,
    server: type = LeanServer,
    client: type = LeanClient,
    **options: Any,
):
    """A server and a client protocol connected in memory, their handshake done, and the pump."""
    clock = clock or MemoryReactorClock()
    serverFactory, clientFactory = factories(clock, server, client, **options)
    serverProtocol = serverFactory.buildProtocol(None)
    clientProtocol = clientFactory.buildProtocol(None)
    pump = iosim.connect(
        serverProtocol,
        iosim.makeFakeServer(serverProtocol),
        clientProtocol,
        iosim.makeFakeClient(clientProtocol),
    )
    return serverProtocol, clientProtocol, pump


SIGNATURES = [
    (WebSocketProtocol, "_dataReceived", ["data"]),
    (WebSocketProtocol, "_fail_connection", ["code", "reason"]),
    (WebSocketProtocol, "sendCloseFrame", ["code", "reasonUtf8", "isReply"]),
    (WebSocketProtocol, "onCloseFrame", ["code", "reasonRaw"]),
    (WebSocketProtocol, "onMessageEnd", []),
    (WebSocketProtocol, "sendData", ["data", "sync", "chopsize"]),
    (WebSocketClientProtocol, "failHandshake", ["reason"]),
    (WebSocketProtocol, "onServerConnectionDropTimeout", []),
    (WebSocketClientProtocol, "processHandshake", []),
    (PerMessageDeflate, "decompress_message_data", ["data", "max_output_len"]),
]


@pytest.mark.parametrize(
    ("owner", "name", "parameters"), SIGNATURES, ids=[s[1] for s in SIGNATURES]
)
def test_private_methods_keep_their_signatures(owner, name, parameters):
    """Each Autobahn method stproxy calls or overrides takes the parameters stproxy passes."""
    method = private(owner, name)
    found = list(inspect.signature(method).parameters)[1:]
    assert found[: len(parameters)] == parameters, f"{owner.__name__}.{name}{found}"
    assert all(
        inspect.signature(method).parameters[p].default is not inspect.Parameter.empty
        for p in found[len(parameters) :]
    ), f"{owner.__name__}.{name} takes more required parameters: {found}"


def test_connection_state_lean_protocol_reads():
    """Once connected, both sides have send_queue, failedByMe, droppedByMe and closeHandshakeTimeoutCall."""
    server, client, pump = connect(server=PlainServer, client=PlainClient)
    for protocol in (server, client):
        assert protocol.state == STATE_OPEN
        queue = private(protocol, "send_queue")
        assert len(queue) == 0 and not queue, "send_queue is not an empty sequence"
        assert private(protocol, "failedByMe") is False
        assert private(protocol, "droppedByMe") is False
        assert private(protocol, "closeHandshakeTimeoutCall") is None


def test_message_end_finds_message_data_and_is_binary():
    """By onMessageEnd, a message's frames are in message_data and its type in message_is_binary."""
    seen: list[tuple[list[bytes], bool]] = []

    class Recording(PlainServer):
        def onMessageEnd(self) -> None:
            data = private(self, "message_data")
            seen.append((list(data), private(self, "message_is_binary")))
            super().onMessageEnd()

    server, client, pump = connect(server=Recording, client=PlainClient)
    client.sendMessage(b"\x00\x01", isBinary=True)
    pump.flush()
    assert b"".join(seen[0][0]) == b"\x00\x01" and seen[0][1] is True
    assert server.message_data is None, "onMessageEnd no longer resets message_data"
    assert server.received == [(b"\x00\x01", True)]


def test_lean_protocol_hands_messages_to_message_received():
    """LeanProtocol passes each whole message, text or binary, to messageReceived, and sends straight."""
    server, client, pump = connect(client=PlainClient)
    client.sendMessage("héllo".encode())
    client.sendMessage(b"\xff" * 70000, isBinary=True)
    pump.flush()
    assert server.received == [("héllo".encode(), False), (b"\xff" * 70000, True)]
    assert server.message_data is None
    server.sendMessage(b"back")
    pump.flush()
    assert client.received == [(b"back", False)]


def test_peer_initiated_close_is_reported_as_opening():
    """A close the peer starts reaches closeFrameReceived(opening=True), and the server then drops TCP."""
    server, client, pump = connect(client=PlainClient)
    client.sendClose(1000, "bye")
    pump.flush()
    assert server.closes == [True]
    assert server.droppedByProxy and not server.failedByProxy
    assert client.closed is not None and client.closed[:2] == (True, 1000)
    assert server.state == client.state == STATE_CLOSED


def test_close_with_any_code_is_answered():
    """sendCloseWith sends codes sendClose refuses (1001), and the reply reaches closeFrameReceived(opening=False)."""
    with pytest.raises(Exception):
        LeanServer.sendClose(object(), 1001, "going away")  # type: ignore[arg-type]
    server, client, pump = connect(client=PlainClient)
    server.sendCloseWith(1001, b"going away")
    assert server.closeHandshakeTimeoutCall is not None, "sendCloseFrame set no close timer"
    pump.flush()
    assert client.closed == (True, 1001, "going away")
    assert server.closes == [False]
    assert server.closeHandshakeTimeoutCall is None


def test_stop_close_handshake_timer_cancels_it():
    """The close handshake timer sendCloseFrame starts is in closeHandshakeTimeoutCall, and stopping it cancels it."""
    clock = MemoryReactorClock()
    server, client, pump = connect(clock, closeHandshakeTimeout=3)
    server.sendCloseWith(1012, b"service restart")
    assert [call.getTime() for call in clock.getDelayedCalls()] == [3]
    server.stopCloseHandshakeTimer()
    server.stopCloseHandshakeTimer()
    assert server.closeHandshakeTimeoutCall is None
    assert clock.getDelayedCalls() == []


def test_fail_with_sends_the_code_and_marks_the_failure():
    """failWith (_fail_connection) sends a close frame with the code and sets failedByMe."""
    server, client, pump = connect(client=PlainClient)
    server.failWith(1009, "message too big")
    pump.flush()
    assert server.failedByProxy
    assert client.closed == (True, 1009, "message too big")


def test_server_keeps_the_request_head_and_path():
    """A server protocol keeps its handshake in http_request_data and its path in http_request_path."""
    protocol = WebSocketServerFactory(URL, reactor=MemoryReactorClock()).buildProtocol(None)
    assert requestPath(protocol) is None
    server, client, pump = connect(client=PlainClient)
    head = private(server, "http_request_data")
    assert requestHead(server) is head
    assert head.startswith(b"GET /_stcore/stream HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n")
    assert private(server, "http_request_path") == requestPath(server) == "/_stcore/stream"


def test_rewritten_handshake_is_what_is_sent():
    """UpstreamHandshake sends what rewriteHandshake makes of the handshake Autobahn generated."""

    class Rewriting(LeanClient):
        extraHeader = b"X-Forwarded-For: 203.0.113.7\r\n"

    server, client, pump = connect(client=Rewriting)
    assert b"\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n" in requestHead(server)
    assert client.state == server.state == STATE_OPEN


@pytest.mark.parametrize(
    ("response", "statusLine", "status"),
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 403 Forbidden", 403),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "SSH-2.0-OpenSSH", None),
    ],
)
def test_refused_handshake_leaves_its_status(response, statusLine, status):
    """A refused client handshake sets http_status_line before failHandshake, which UpstreamHandshake reads."""
    clock = MemoryReactorClock()
    _, clientFactory = factories(clock, LeanServer, LeanClient)
    client = clientFactory.buildProtocol(None)
    transport = Transport()
    client.makeConnection(transport)
    assert transport.value().startswith(b"GET /_stcore/stream HTTP/1.1\r\n")
    client.dataReceived(response)
    assert private(client, "http_status_line") == statusLine
    assert client.refusedStatus == status
    assert client.state == STATE_CLOSED and transport.disconnecting, "failHandshake did not drop"


def test_factories_keep_their_timer_in_batched_timer():
    """Autobahn factories keep their connections' timer in _batched_timer, which useReactorTimer replaces."""
    clock = MemoryReactorClock()
    for factory in (
        WebSocketServerFactory(URL, reactor=clock),
        WebSocketClientFactory(URL, reactor=clock),
    ):
        assert callable(private(private(factory, "_batched_timer"), "call_later"))
        useReactorTimer(factory, clock)
        assert isinstance(factory._batched_timer, ReactorTimer)


def test_open_handshake_timeout_runs_on_the_reactor_given():
    """The open handshake timeout Autobahn sets through _batched_timer fires on the given clock, to the millisecond."""
    clock = MemoryReactorClock()
    serverFactory, _ = factories(clock, LeanServer, LeanClient, openHandshakeTimeout=1.5)
    server = serverFactory.buildProtocol(None)
    transport = Transport()
    server.makeConnection(transport)
    clock.advance(1.499)
    assert not transport.disconnecting
    clock.advance(0.001)
    assert transport.disconnecting and server.wasOpenHandshakeTimeout


def test_auto_ping_runs_on_the_reactor_given():
    """Auto-pings Autobahn schedules through _batched_timer are sent as the given clock advances."""
    clock = MemoryReactorClock()
    server, client, pump = connect(
        clock, client=PlainClient, autoPingInterval=0.2, autoPingTimeout=1
    )
    clock.advance(0.199)
    pump.flush()
    assert client.pings == []
    clock.advance(0.001)
    pump.flush()
    assert len(client.pings) == 1
    clock.advance(0.2)
    pump.flush()
    assert len(client.pings) == 2, "the pong did not reschedule the next ping"


def test_reactor_timer_calls_may_be_cancelled_after_they_ran():
    """A call ReactorTimer made can be cancelled once it ran, or twice."""
    clock = MemoryReactorClock()
    ran: list[int] = []
    call = ReactorTimer(clock).call_later(0.25, ran.append, 1)
    clock.advance(0.25)
    call.cancel()
    assert ran == [1]
    call = ReactorTimer(clock).call_later(1, ran.append, 2)
    call.cancel()
    call.cancel()
    clock.advance(2)
    assert ran == [1]


class DropTimedClient(ClientDropTimer, LeanClient):
    """The upstream leg's shape, with its wait for the server's drop on the factory's timer."""


def test_the_wait_for_the_servers_drop_runs_on_the_factory_timer(monkeypatch):
    """
    After the server answers our close, Autobahn's client waits
    serverConnectionDropTimeout for the drop; with ClientDropTimer that wait
    is serverConnectionDropTimeoutCall on the given clock (txaio's global
    reactor is never asked), and it aborts the connection when due.
    """
    scheduled: list[Any] = []
    monkeypatch.setattr(txaio, "call_later", lambda *args, **kwargs: scheduled.append(args))
    clock = MemoryReactorClock()
    _, clientFactory = factories(clock, LeanServer, DropTimedClient)
    clientFactory.setProtocolOptions(serverConnectionDropTimeout=1.5)
    client = clientFactory.buildProtocol(None)
    transport = Transport()
    client.makeConnection(transport)
    request = transport.value().decode("ascii")
    key = next(
        line.split(": ", 1)[1]
        for line in request.split("\r\n")
        if line.startswith("Sec-WebSocket-Key:")
    )
    guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    accept = base64.b64encode(hashlib.sha1((key + guid).encode()).digest())
    client.dataReceived(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    assert client.state == STATE_OPEN
    assert private(client, "serverConnectionDropTimeoutCall") is None
    client.sendCloseWith(1000, None)
    client.dataReceived(b"\x88\x02\x03\xe8")  # the server's close reply, code 1000
    assert client.state == STATE_CLOSING and client.wasClean
    assert client.serverConnectionDropTimeout == 1.5, "the option was not restored"
    assert scheduled == [], "Autobahn scheduled its drop wait on txaio's reactor"
    call = client.serverConnectionDropTimeoutCall
    assert call is not None and call.getTime() == 1.5
    clock.advance(1.499)
    assert not transport.disconnected
    clock.advance(0.001)
    assert transport.disconnected and private(client, "wasServerConnectionDropTimeout")


def test_send_whole_message_holds_to_its_own_limit_and_receiving_to_the_option():
    """
    sendMessage reads the protocol's maxMessagePayloadSize when called, so
    sendWholeMessage sends up to sendLimit, and the option (restored) still
    bounds what is received.
    """
    server, client, pump = connect(client=PlainClient, maxMessagePayloadSize=100)
    server.sendLimit = 1000
    server.sendWholeMessage(b"d" * 1000, True)
    with pytest.raises(PayloadExceededError):
        server.sendWholeMessage(b"d" * 1001, True)
    assert private(server, "maxMessagePayloadSize") == 100
    pump.flush()
    assert client.received == [(b"d" * 1000, True)]
    client.sendMessage(b"u" * 101, isBinary=True)
    pump.flush()
    assert client.closed is not None and client.closed[1] == 1009


def test_a_compressed_message_is_inflated_no_further_than_max_message_payload_size(monkeypatch):
    """
    Since Autobahn 26.10 a compressed frame is inflated at most to what is
    left of maxMessagePayloadSize (decompress_message_data's max_output_len):
    a 10 MB message of zeros against a 64 KiB limit gets 1009, no call
    having inflated more than 64 KiB and a byte.  (Autobahn goes on
    inflating, and dropping, what follows of the refused frame: the relay
    stops feeding a leg that failed.)
    """
    inflated: list[int] = []
    decompress = PerMessageDeflate.decompress_message_data

    def counting(self, data, max_output_len=None):
        before = private(self, "_decompress_message_size")
        try:
            return decompress(self, data, max_output_len)
        finally:
            inflated.append(self._decompress_message_size - before)

    monkeypatch.setattr(PerMessageDeflate, "decompress_message_data", counting)
    clock = MemoryReactorClock()
    serverFactory, clientFactory = factories(
        clock,
        LeanServer,
        PlainClient,
        maxMessagePayloadSize=65536,
        perMessageCompressionAccept=lambda offers: PerMessageDeflateOfferAccept(offers[0]),
    )
    clientFactory.setProtocolOptions(
        perMessageCompressionOffers=[PerMessageDeflateOffer()],
        perMessageCompressionAccept=PerMessageDeflateResponseAccept,
    )
    server = serverFactory.buildProtocol(None)
    client = clientFactory.buildProtocol(None)
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client)
    )
    assert server.websocket_extensions_in_use, "permessage-deflate was not negotiated"
    client.sendMessage(b"\0" * (10 << 20), isBinary=True)
    pump.flush()
    assert server.failedByProxy and server.localCloseCode == 1009
    assert server.received == [] and 0 < inflated[0] and max(inflated) <= 65537
    clock.advance(1)  # its parser, stuck on the refused frame, never reads the close reply
    pump.flush()
    assert client.closed is not None and client.closed[1] == 1009


# Raw passage (stproxy.websocket.passthrough).


def test_close_connection_keeps_its_signature():
    """Twisted's adapter closes the transport in _closeConnection(abort), which LeanProtocol defers."""
    method = private(WebSocketAdapterProtocol, "_closeConnection")
    assert list(inspect.signature(method).parameters)[1:] == ["abort"]
    assert callable(private(WebSocketProtocol, "_cancelAutoPingTimeoutCall"))


def written(protocol: Any) -> bytes:
    """What C{protocol} has written to its iosim transport and the pump has not moved yet."""
    return b"".join(protocol.transport.stream)


def test_an_open_connection_stands_between_messages_with_nothing_unparsed():
    """Once open, current_frame is None, inside_message False and data (the unparsed bytes) empty."""
    server, client, pump = connect()
    for protocol in (server, client):
        assert private(protocol, "current_frame") is None
        assert private(protocol, "inside_message") is False
        assert private(protocol, "data") == b""
        assert protocol.betweenMessages
        assert private(protocol, "websocket_extensions_in_use") == []
        assert not protocol.extensionsInUse
    client.sendMessage(b"x" * 100, isBinary=True)
    server.transport.write(b"\x82\x05hel")  # half a frame: inside it
    pump.flush()
    assert not client.betweenMessages and client.current_frame is not None


def test_bytes_behind_the_101_wait_unparsed_in_data_during_on_connect():
    """
    A client's onConnect runs before Autobahn parses what came with the 101: it is all in
    data, which takeUnparsed empties, so Autobahn then parses nothing of it.
    """
    taken: list[bytes] = []

    class Taking(LeanClient):
        def onConnect(self, response):
            taken.append(self.takeUnparsed())

    class Eager(LeanServer):
        def onOpen(self):
            self.sendMessage(b"early", isBinary=True)

    server, client, pump = connect(server=Eager, client=Taking)
    assert taken == [b"\x82\x05early"]
    assert client.received == [] and client.data == b""


def test_frames_behind_a_handshake_wait_unparsed_in_data_during_on_open():
    """A server's onOpen runs before Autobahn parses the frames that came behind the request."""
    taken: list[bytes] = []

    class Taking(LeanServer):
        def onOpen(self):
            taken.append(self.takeUnparsed())

    clock = MemoryReactorClock()
    serverFactory, clientFactory = factories(clock, Taking, LeanClient)
    server = serverFactory.buildProtocol(None)
    transport = Transport()
    server.makeConnection(transport)
    server.dataReceived(
        b"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:8501\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n\x82\x81abcd\x00"
    )
    assert server.state == STATE_OPEN
    assert taken == [b"\x82\x81abcd\x00"] and server.received == []


def test_a_control_frame_handed_to_autobahn_is_acted_on():
    """autobahnReceived (_dataReceived) of a whole ping frame gets it answered with a pong."""
    server, client, pump = connect(client=PlainClient)
    server.autobahnReceived(b"\x89\x84abcd" + bytes(b ^ k for b, k in zip(b"ping", b"abcd")))
    assert written(server).endswith(b"\x8a\x04ping")


def test_held_writes_and_a_graceful_close_wait_for_release():
    """
    While heldWrites is a list, Autobahn's frames go there and a graceful drop
    (_closeConnection) waits; releaseWrites writes them, then closes.
    """
    server, client, pump = connect(client=PlainClient)
    transport = server.transport
    sent = len(written(server))
    server.heldWrites = []
    server.sendPing(b"held")
    server.sendCloseWith(1000, None)
    server.dropConnection(abort=False)
    assert len(written(server)) == sent and len(server.heldWrites) == 2
    assert not transport.disconnecting
    transport.write(b"<the end of the other leg's frame>")
    server.releaseWrites()
    assert written(server)[sent:].startswith(b"<the end of the other leg's frame>\x89\x04held")
    assert transport.disconnecting and server.heldWrites is None


def test_an_abort_does_not_wait_for_held_writes():
    """An abort (_closeConnection(abort=True)) goes through at once, held writes or not."""
    server, client, pump = connect(client=PlainClient)
    server.heldWrites = []
    server.dropConnection(abort=True)
    assert server.transport.disconnecting


def test_break_off_closes_tcp_and_writes_nothing_more():
    """breakOff: the half-written frame cannot end, so the connection closes with no close frame."""
    server, client, pump = connect(client=PlainClient)
    sent = len(written(server))
    server.breakOff()
    server.sendCloseWith(1001, b"going away")
    assert len(written(server)) == sent
    assert server.transport.disconnecting


def test_traffic_received_cancels_a_pending_auto_ping_timeout():
    """
    trafficReceived does what a data frame does in Autobahn (autoPingRestartOnAnyTraffic):
    the pending auto-ping's timeout (autoPingTimeoutCall) is cancelled and the next scheduled.
    """
    clock = MemoryReactorClock()
    server, client, pump = connect(clock, autoPingInterval=1, autoPingTimeout=2)
    clock.advance(1)
    assert private(server, "autoPingTimeoutCall") is not None
    assert private(server, "autoPingRestartOnAnyTraffic") is True
    server.trafficReceived()
    assert server.autoPingTimeoutCall is None
    clock.advance(2.5)
    assert not server.transport.disconnecting


def test_the_receive_limit_is_max_message_payload_size():
    """receiveLimit reads maxMessagePayloadSize, the limit Autobahn enforces on what it receives."""
    server, client, pump = connect(maxMessagePayloadSize=1234)
    assert server.receiveLimit == 1234


# Memory per idle connection (stproxy.websocket.footprint).


def test_connection_made_copies_only_the_options_a_connection_lacks():
    """
    _connectionMade copies every option (CONFIG_ATTRS: optionNames) from the factory onto
    the connection, but none the connection has already, from its class say: a class that
    holds the options costs a connection nothing, and its values are the ones read.
    """
    serverNames, clientNames = optionNames(WebSocketServerProtocol), optionNames(PlainClient)
    assert {"maxMessagePayloadSize", "perMessageCompressionAccept", "versions"} <= set(serverNames)
    assert {"serverConnectionDropTimeout", "perMessageCompressionOffers"} <= set(clientNames)
    server, client, pump = connect(server=PlainServer, client=PlainClient)
    assert set(serverNames) <= set(vars(server)) and set(clientNames) <= set(vars(client))

    options = {name: getattr(server.factory, name) for name in serverNames}
    options["maxMessagePayloadSize"] = 7
    accept = options["perMessageCompressionAccept"]
    options["perMessageCompressionAccept"] = staticmethod(accept)
    Optioned = type("Optioned", (LeanServer,), options)
    server, client, pump = connect(server=Optioned, client=PlainClient, maxMessagePayloadSize=100)
    assert not set(serverNames) & set(vars(server)), "options were copied onto the connection"
    assert server.maxMessagePayloadSize == 7 and server.perMessageCompressionAccept is accept
    client.sendMessage(b"12345678", isBinary=True)
    pump.flush()
    assert server.failedByProxy and client.closed is not None and client.closed[1] == 1009


def test_lean_protocol_has_autobahns_starting_state_as_class_attributes():
    """
    The values LeanProtocol's class has for Autobahn's per-connection state are the ones
    every open connection starts with (_connectionMade, the handshake): a connection's own
    copy, identical, may go (stproxy.websocket.footprint.lighten).  Only a client has a
    serverConnectionDropTimeoutCall.
    """
    own = {"sendLimit", "heldWrites", "_closeWhenReleased"}
    starting = {
        name: value
        for name, value in vars(LeanProtocol).items()
        if isinstance(value, (type(None), int, bytes)) and name not in own
    }
    assert len(starting) >= 30 and starting["failedByMe"] is False
    server, client, pump = connect(server=PlainServer, client=PlainClient)
    for protocol, absent in ((server, {"serverConnectionDropTimeoutCall"}), (client, set())):
        state = vars(protocol)
        assert set(starting) - set(state) == absent, "Autobahn no longer sets these"
        found = {name: state[name] for name in starting if name in state}
        assert found == {name: starting[name] for name in found}


class Unreadable:
    """A class attribute that fails the test when read: an instance's own is gone."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        pytest.fail(f"{self.name} was read once the connection was open")


def test_nothing_reads_the_handshake_state_once_open(monkeypatch):
    """
    Autobahn's opening handshake sets every name of HANDSHAKE_STATE, and once
    forgetHandshake has dropped them nothing reads one: messages, pings, auto-pings and the
    closing handshake, either way.
    """
    monkeypatch.setattr(txaio, "call_later", lambda *args, **kwargs: None)
    Server = type("Server", (LeanServer,), {name: Unreadable() for name in HANDSHAKE_STATE})
    Client = type("Client", (LeanClient,), {name: Unreadable() for name in HANDSHAKE_STATE})
    clock = MemoryReactorClock()
    server, client, pump = connect(
        clock, server=Server, client=Client, autoPingInterval=1, autoPingTimeout=2
    )
    assert set(HANDSHAKE_STATE) <= set(vars(server)) | set(vars(client))
    for protocol in (server, client):
        protocol.forgetHandshake()
        assert not set(HANDSHAKE_STATE) & set(vars(protocol))
    client.sendMessage("to the server".encode())
    server.sendMessage(b"to the client", isBinary=True)
    client.sendPing(b"ping")
    pump.flush()
    clock.advance(1)
    pump.flush()
    assert server.received == [(b"to the server", False)]
    assert client.received == [(b"to the client", True)]
    assert server.pings == [b"ping"] and len(client.pings) == 1, "no auto-ping after a second"
    server.sendCloseWith(1001, b"going away")
    pump.flush()
    assert client.closed == (True, 1001, "going away") and server.state == STATE_CLOSED


def test_an_empty_send_queue_goes_and_a_queued_send_makes_another(monkeypatch):
    """
    forgetHandshake drops an empty send_queue (the class's empty tuple reads the same); a
    send Autobahn queues (sync) gets a new deque, and what follows keeps its order.
    """
    monkeypatch.setattr(txaio, "call_later", lambda *args, **kwargs: None)
    server, client, pump = connect(client=PlainClient)
    assert isinstance(private(server, "send_queue"), deque) and not server.send_queue
    server.forgetHandshake()
    assert "send_queue" not in vars(server) and server.send_queue == ()
    server.sendMessage(b"first", isBinary=True, sync=True)
    assert isinstance(vars(server)["send_queue"], deque)
    server.sendMessage(b"second", isBinary=True)
    pump.flush()
    assert client.received == [(b"first", True), (b"second", True)]


@pytest.mark.parametrize(("offered", "opens"), [(["b", "a"], True), ([], False)])
def test_the_subprotocol_selected_is_checked_against_the_connections_own_offer(offered, opens):
    """
    Autobahn's client checks the server's subprotocol against its factory's protocols
    (processHandshake); UpstreamHandshake puts its offered ones there for that check,
    and leaves the factory's list as it was.
    """

    class Selecting(LeanServer):
        def onConnect(self, request):
            return "a"

    class Offering(LeanClient):
        extraHeader = b"Sec-WebSocket-Protocol: a, b\r\n"

    clock = MemoryReactorClock()
    serverFactory, clientFactory = factories(clock, Selecting, Offering)
    shared = clientFactory.protocols
    server, client = serverFactory.buildProtocol(None), clientFactory.buildProtocol(None)
    client.offered = offered
    iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client))
    assert clientFactory.protocols is shared and shared == []
    if opens:
        assert client.state == STATE_OPEN and client.websocket_protocol_in_use == "a"
    else:
        assert client.state == STATE_CLOSED and client.refusedStatus == 101
