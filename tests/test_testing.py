"""
Tests for L{stproxy.testing}: the fakes behave as the real things they
stand in for, so that tests built on them mean something.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, DNSLookupError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from stproxy.config import Timeouts
from stproxy.testing import (
    FakeBrowserFactory,
    FakeResponse,
    FakeStreamlitFactory,
    FakeUpstreamAgent,
    MemoryNetwork,
    MemoryUpstream,
    connectBrowser,
)
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream


class Body(Protocol):
    """Collects a response body and how it ended."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.reason = reason


class Collect(Protocol):
    """Keeps every byte received, and whether the connection ended."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


class Producer:
    """A streaming producer that records being paused and resumed."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


# --- FakeUpstreamAgent and FakeResponse ------------------------------------------


def test_the_agent_records_each_request_and_is_an_iagent() -> None:
    """Method, URI, headers and body producer are kept as the caller gave them."""
    agent = FakeUpstreamAgent()
    assert IAgent.providedBy(agent)
    headers = Headers({b"x": [b"1"]})
    d = agent.request(b"PUT", b"http://u/x", headers, None)
    [request] = agent.requests
    assert (request.method, request.uri, request.headers, request.bodyProducer) == (b"PUT", b"http://u/x", headers, None)
    assert request.deferred is d and not d.called


def test_a_request_answered_fires_with_a_fake_iresponse() -> None:
    """C{respond} gives the caller a response with the status, phrase, headers and length asked for."""
    agent = FakeUpstreamAgent()
    results: list[Any] = []
    agent.request(b"GET", b"http://u/").addCallback(results.append)
    response = agent.requests[0].respond(404, headers={b"a": [b"b"]}, length=3)
    assert results == [response] and IResponse.providedBy(response)
    assert (response.code, response.phrase, response.length) == (404, b"Not Found", 3)
    assert response.headers.getRawHeaders(b"a") == [b"b"]


def test_a_request_failed_or_cancelled_errbacks() -> None:
    """A failure reaches the caller; a cancel is recorded and fails with CancelledError."""
    agent = FakeUpstreamAgent()
    failures: list[Failure] = []
    agent.request(b"GET", b"http://u/a").addErrback(failures.append)
    agent.requests[0].fail(DNSLookupError())
    d = agent.request(b"GET", b"http://u/b")
    d.addErrback(failures.append)
    d.cancel()
    assert agent.requests[1].cancelled and not agent.requests[0].cancelled
    assert failures[0].check(DNSLookupError) and failures[1].check(CancelledError)


def test_an_upstream_given_the_agent_sends_its_requests_there() -> None:
    """The seam the HTTP tests use: C{Upstream(..., agent=...)} makes the absolute URL."""
    network = MemoryNetwork()
    agent = FakeUpstreamAgent()
    upstream = Upstream(network.reactor, UpstreamAddress("http", "10.0.0.5", 8501), Timeouts(), agent=agent)
    upstream.request(b"GET", b"/media/a.png", Headers(), None)
    assert agent.requests[0].uri == b"http://10.0.0.5:8501/media/a.png"


def test_a_body_delivered_in_pieces_then_finished() -> None:
    """Bytes sent before C{deliverBody} are kept for it; C{finish} ends with ResponseDone."""
    response = FakeResponse()
    response.deliver(b"ab")
    body = Body()
    response.deliverBody(body)
    response.deliver(b"cd")
    response.finish()
    assert body.data == b"abcd"
    assert body.reason is not None and body.reason.check(ResponseDone)


def test_a_body_broken_off_ends_with_response_failed() -> None:
    """C{breakOff} is a lost upstream connection, as Agent reports it."""
    response = FakeResponse()
    body = Body()
    response.deliverBody(body)
    response.breakOff()
    assert body.reason is not None and body.reason.check(ResponseFailed)
    assert body.reason.value.reasons[0].check(ConnectionLost)


def test_the_body_transport_shows_flow_control_and_a_stopped_body_gets_nothing_more() -> None:
    """Pause, resume and stop are visible; after stop, delivered bytes are dropped."""
    response = FakeResponse()
    body = Body()
    response.deliverBody(body)
    body.transport.pauseProducing()
    assert response.transport.paused
    body.transport.resumeProducing()
    assert not response.transport.paused
    body.transport.stopProducing()
    response.deliver(b"late")
    assert response.transport.stopped and body.data == b""


# --- MemoryNetwork and MemoryTransport -------------------------------------------


def connected() -> tuple[MemoryNetwork, Any]:
    network = MemoryNetwork()
    pump = network.connect(Collect(), Collect(), object(), object())  # type: ignore[arg-type]
    return network, pump


def test_a_paused_reader_leaves_the_data_with_the_writer() -> None:
    """Bytes wait in the writer's buffer while the reader is paused, and arrive on resume."""
    network, pump = connected()
    pump.serverIO.pauseProducing()
    pump.clientIO.write(b"hello")
    network.flush()
    assert pump.server.data == b"" and pump.clientIO.buffered() == 5
    pump.serverIO.resumeProducing()
    network.flush()
    assert pump.server.data == b"hello"


def test_the_writer_pauses_its_producer_past_the_high_water_mark() -> None:
    """A streaming producer is paused once too much is unread, and resumed when it drains."""
    network, pump = connected()
    producer = Producer()
    calls = producer.calls
    pump.clientIO.registerProducer(producer, True)
    pump.serverIO.pauseProducing()
    pump.clientIO.write(b"x" * 65536)
    assert calls == []
    pump.clientIO.write(b"x")
    assert calls == ["pause"]
    pump.serverIO.resumeProducing()
    network.flush()
    assert calls == ["pause", "resume"] and len(pump.server.data) == 65537


def test_a_lost_connection_waits_for_its_data_to_be_read_and_an_aborted_one_does_not() -> None:
    """loseConnection delivers what was written first; abortConnection drops it."""
    network, pump = connected()
    pump.serverIO.pauseProducing()
    pump.clientIO.write(b"bye")
    pump.clientIO.loseConnection()
    network.flush()
    assert pump.server.lost is None
    pump.serverIO.resumeProducing()
    network.flush()
    assert pump.server.data == b"bye" and pump.server.lost is not None
    network, pump = connected()
    pump.serverIO.pauseProducing()
    pump.clientIO.write(b"bye")
    pump.clientIO.abortConnection()
    network.flush()
    assert pump.server.data == b"" and pump.server.lost.check(ConnectionLost)


# --- MemoryUpstream, connectBrowser and the WebSocket fakes ----------------------


def test_the_memory_upstream_connects_on_the_next_turn_of_the_clock() -> None:
    """Like a real endpoint, it never connects from inside C{connect}."""
    network = MemoryNetwork()
    upstream = MemoryUpstream(network, Factory.forProtocol(Collect))
    results: list[Any] = []
    upstream.endpoint().connect(Factory.forProtocol(Collect)).addCallback(results.append)
    assert results == [] and upstream.connections == []
    network.flush()
    [pump] = upstream.connections
    assert results == [pump.client]
    assert pump.serverIO.getHost().port == 8501


def test_the_memory_upstream_refuses_without_a_server_and_can_be_cancelled() -> None:
    """None stands for nothing listening; a cancelled attempt never connects."""
    network = MemoryNetwork()
    upstream = MemoryUpstream(network, None)
    failures: list[Failure] = []
    upstream.endpoint().connect(Factory.forProtocol(Collect)).addErrback(failures.append)
    network.flush()
    assert failures[0].check(ConnectionRefusedError)
    upstream.server = Factory.forProtocol(Collect)
    d = upstream.endpoint().connect(Factory.forProtocol(Collect))
    d.addErrback(failures.append)
    d.cancel()
    network.flush()
    assert failures[1].check(CancelledError) and upstream.connections == []


def test_a_fake_browser_and_a_fake_streamlit_talk_directly() -> None:
    """The two fakes complete a handshake and record each other's messages and close."""
    network = MemoryNetwork()
    streamlit = FakeStreamlitFactory(network.reactor, echo=True)
    browser = FakeBrowserFactory(network.reactor).buildProtocol(None)
    connectBrowser(network, streamlit, browser)
    network.flush()
    assert browser.opened and browser.response.protocol == "streamlit"
    [server] = streamlit.connections
    assert server.head.startswith(b"GET /_stcore/stream HTTP/1.1\r\n")
    browser.sendMessage(b"ping", isBinary=True)
    network.flush()
    assert server.messages == [(b"ping", True)] and browser.messages == [(b"ping", True)]
    browser.sendClose(1000)
    network.flush()
    assert browser.closed == (True, 1000, None) and server.closed is not None


def test_a_refusing_fake_streamlit_answers_with_its_status() -> None:
    """C{refuse} makes the fake Streamlit answer the handshake with that HTTP status."""
    network = MemoryNetwork()
    browser = FakeBrowserFactory(network.reactor).buildProtocol(None)
    connectBrowser(network, FakeStreamlitFactory(network.reactor, refuse=403), browser)
    network.flush()
    assert browser.http_status_line.startswith("HTTP/1.1 403") and not browser.opened


def test_the_fakes_use_only_the_memory_clock() -> None:
    """The fake Streamlit's handshake timeout is on the test's clock: a silent browser is dropped."""
    network = MemoryNetwork()
    silent = Collect()
    streamlit = FakeStreamlitFactory(network.reactor, openHandshakeTimeout=2)
    connectBrowser(network, streamlit, silent)
    network.advance(1.9)
    assert silent.lost is None
    network.advance(0.2)
    assert silent.lost is not None


def test_importing_stproxy_testing_leaves_the_global_reactor_alone() -> None:
    """Embedding programs may install a reactor after importing the fakes."""
    code = "import sys, stproxy.testing; sys.exit('twisted.internet.reactor' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_flush_refuses_to_spin_for_ever() -> None:
    """Two protocols that echo for ever make flush fail rather than hang the test run."""

    class Echo(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    network = MemoryNetwork()
    pump = network.connect(Echo(), Echo(), object(), object())  # type: ignore[arg-type]
    pump.clientIO.write(b"x")
    with pytest.raises(AssertionError, match="after 1000 rounds"):
        network.flush()


def test_a_paused_reader_does_not_see_its_peer_leave_until_it_reads() -> None:
    """As with TCP, the end of a connection is seen by a paused reader only once it reads again."""
    network, pump = connected()
    pump.serverIO.pauseProducing()
    pump.clientIO.loseConnection()
    network.flush()
    assert pump.server.lost is None
    pump.serverIO.resumeProducing()
    network.flush()
    assert pump.server.lost is not None
