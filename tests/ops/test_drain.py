"""
Graceful shutdown's bookkeeping (stproxy.ops.drain): which connections and requests are open,
waited for, or aborted at the shutdown timeout.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from fake_upstream import FakeResponse, Proxy
from stproxy.ops.metrics import Metrics


def test_drain_waits_for_requests_and_aborts_them_at_the_timeout() -> None:
    """Draining fires once in-flight requests end, or aborts their connections at the deadline."""
    from stproxy.ops.drain import Drain
    from stproxy.ops.metrics import Metrics

    class Transport:
        lost = aborted = False

        def loseConnection(self) -> None:
            self.lost = True

        def abortConnection(self) -> None:
            self.aborted = True

    class Channel:
        def __init__(self) -> None:
            self.transport = Transport()

    class Request:
        def __init__(self, channel: Channel) -> None:
            self.channel = channel

    clock = Clock()
    drain = Drain(clock, Metrics())
    busy, idle = Channel(), Channel()
    drain.connectionOpened(busy)
    drain.connectionOpened(idle)
    request = Request(busy)
    drain.requestStarted(request, busy)
    done = drain.drain(5.0)
    assert idle.transport.lost and not busy.transport.lost
    assert not done.called
    drain.requestEnded(request)
    assert done.called and busy.transport.lost

    clock2 = Clock()
    drain = Drain(clock2, Metrics())
    stuck = Request(Channel())
    drain.requestStarted(stuck, stuck.channel)
    done = drain.drain(5.0)
    clock2.advance(5.0)
    assert stuck.channel.transport.aborted
    assert not done.called
    drain.requestEnded(stuck)  # the abort's connectionLost
    assert done.called


def test_shutdown_waits_for_a_request_whose_body_is_still_arriving() -> None:
    """An upload half sent when the drain starts is finished and answered, then the connection closes."""
    proxy = Proxy(metrics=Metrics())
    drain = proxy.drain
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nhello")
    drained = drain.drain(30)
    assert not drained.called and not proxy.transport.disconnecting
    proxy.send(b"world")
    response = FakeResponse(length=2)
    proxy.agent.requests[0].deferred.callback(response)
    response.protocol.dataReceived(b"ok")
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert proxy.output().endswith(b"\r\n\r\nok")
    assert drained.called
    assert proxy.transport.disconnecting
