"""
The connection cap (stproxy.edge.connections): connections past --max-connections get a short 503
and are closed, counted and logged once per burst; WebSockets count until they close; the count
is one for every public listener.  Connections are StringTransports through the factory a
LimitedEndpoint listens with.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request, Site

from site_connection import Connection, Server, listenedFactory, parse
from stproxy.config import ClientLimits, WebSocketSettings
from stproxy.edge.connections import LOG_INTERVAL, MAX_REFUSING, REFUSAL, REFUSAL_SECONDS, ConnectionLimit
from stproxy.ops.metrics import Metrics
from stproxy.testing import FakeBrowserFactory, FakeStreamlitFactory, MemoryNetwork, memoryRelay
from stproxy.testing.websocket import BROWSER, PROXY
from stproxy.websocket.resource import RelayResource

HEAD = b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n"


def capped(maximum: int, **kwargs: object) -> Server:
    return Server(limits=ClientLimits(maxConnections=maximum), **kwargs)  # type: ignore[arg-type]


def refused(server: Server) -> float:
    return server.metrics.registry.get_sample_value("stproxy_connections_refused_total") or 0.0


def gauge(server: Server, name: str) -> float | None:
    return server.metrics.registry.get_sample_value(name)


def lose(client: Connection) -> None:
    client.protocol.connectionLost(Failure(ConnectionDone()))


def test_a_connection_past_the_cap_gets_503_and_is_closed() -> None:
    """With two connections open and a cap of 2, the third reads a 503 page, a FIN, and is closed within 2 s."""
    server = capped(2)
    first, second = server.connect(), server.connect()
    third = server.connect(halfClose=True)
    [answer] = parse(third.output())
    assert (answer.status, answer.header(b"connection")) == (503, b"close")
    assert answer.header(b"content-type") == b"text/plain; charset=utf-8"
    assert third.output() == REFUSAL
    assert third.transport.writeClosed and not third.closed
    third.send(HEAD)  # read and thrown away: never served
    server.clock.advance(REFUSAL_SECONDS)
    assert third.closed
    assert server.http.requests == []
    assert refused(server) == 1
    for client in (first, second):
        client.send(HEAD)
        assert [a.status for a in parse(client.output())] == [200]


def test_a_closed_connection_makes_room() -> None:
    """Once a connection under the cap closes, the next one is served."""
    server = capped(1)
    first = server.connect()
    assert parse(server.connect().output())[0].status == 503
    lose(first)
    client = server.connect()
    client.send(HEAD)
    assert [a.status for a in parse(client.output())] == [200]
    assert gauge(server, "stproxy_client_connections") == 1
    assert gauge(server, "stproxy_connection_limit") == 1


def test_a_refused_client_sending_a_lot_is_closed_at_once() -> None:
    """A refused client that keeps sending is closed after 64 KB rather than read for 2 s."""
    server = capped(1)
    server.connect()
    client = server.connect()
    client.send(b"x" * 65536)
    assert client.closed


def test_a_websocket_counts_until_its_connection_closes() -> None:
    """A connection handed to the WebSocket relay still holds its place under the cap until it closes."""
    server = capped(1)

    def takeOver(request: Request) -> object:
        request.channel.transport = None  # what Autobahn's resource does
        return NOT_DONE_YET

    server.webSocket.render = takeOver  # type: ignore[method-assign]
    webSocket = server.connect()
    webSocket.send(b"GET /_stcore/stream HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n\r\n")
    assert gauge(server, "stproxy_open_connections") == 0  # no longer an HTTP connection
    assert parse(server.connect().output())[0].status == 503
    lose(webSocket)
    assert server.connect().output() == b""


def test_the_channel_still_sees_tls_through_the_count() -> None:
    """Counted connections over TLS are still TLS to the channel: --hsts is sent."""
    client = capped(5, hsts=600).connect(secure=True)
    client.send(HEAD)
    [answer] = parse(client.output())
    assert answer.header(b"strict-transport-security") == b"max-age=600"


def test_over_tls_the_refusal_ends_without_a_half_close() -> None:
    """Over TLS the 503 is not followed by a bare FIN, which would come without a close_notify."""
    server = capped(1)
    server.connect(secure=True)
    client = server.connect(secure=True)
    assert client.output() == REFUSAL and not client.transport.writeClosed


def test_a_refused_tls_client_that_never_reads_is_aborted() -> None:
    """A refused client whose TLS close could wait for ever is aborted after 2 s, not closed."""
    server = capped(1)
    server.connect(secure=True)
    client = server.connect(secure=True)
    server.clock.advance(REFUSAL_SECONDS)
    assert client.transport.disconnected  # StringTransport.abortConnection's mark


def test_refusals_in_flight_are_bounded() -> None:
    """Past MAX_REFUSING refusals being answered, a new connection is closed at once without a word."""
    server = capped(1)
    server.connect()
    answering = [server.connect() for _ in range(MAX_REFUSING)]
    assert all(client.output() == REFUSAL for client in answering)
    assert server.listener.buildProtocol(None) is None  # the port closes it: no descriptor held
    assert refused(server) == MAX_REFUSING + 1
    lose(answering[0])
    assert server.connect().output() == REFUSAL


def test_one_count_for_every_listener_sharing_the_limit() -> None:
    """Two listeners counting in the same limit (two --listen, or the redirect one) share one count."""
    server, other = capped(2), Server()
    other.listener = listenedFactory(server.limit, other.site)
    server.connect()
    other.connect()
    assert parse(other.connect().output())[0].status == 503
    assert parse(server.connect().output())[0].status == 503


def test_refusals_are_logged_once_per_burst() -> None:
    """A burst of 100 refusals writes one line at its start, one summary per 10 s, and one at its end."""
    server = capped(1)
    server.connect()
    for _ in range(100):
        lose(server.connect())
    warnings = [e for e in server.events if "maximum" in e]
    assert len(warnings) == 1 and warnings[0]["maximum"] == 1
    server.clock.advance(LOG_INTERVAL)
    assert server.events[-1]["count"] == 99
    server.clock.advance(LOG_INTERVAL)
    assert server.events[-1]["count"] == 100  # over: the total
    assert len([e for e in server.events if "count" in e]) == 2
    assert refused(server) == 100


def test_a_websocket_relayed_through_the_count_relays_and_counts_until_it_closes() -> None:
    """Autobahn takes over a counted connection (replacing the count's wrapped protocol): messages cross, and the count drops when the WebSocket closes."""
    network = MemoryNetwork()
    streamlit = FakeStreamlitFactory(network.reactor)
    metrics = Metrics()
    relay = memoryRelay(network, streamlit, WebSocketSettings(pingInterval=0), metrics=metrics)
    limit = ConnectionLimit(5, network.reactor, metrics)
    counting = listenedFactory(limit, Site(RelayResource(relay), reactor=network.reactor))
    browser = FakeBrowserFactory(network.reactor).buildProtocol(None)
    server = counting.buildProtocol(BROWSER)
    assert server is not None
    network.connect(server, browser, PROXY, BROWSER)
    network.flush()
    assert browser.opened and limit.open == 1
    browser.sendMessage(b"up", isBinary=True)
    network.flush()
    assert streamlit.connections[0].messages == [(b"up", True)]
    browser.sendClose(1000)
    network.flush()
    network.advance(5)
    assert browser.closed is not None
    assert limit.open == 0
