"""
A replica's active health check (stproxy.routing.health): C{GET} of its health path every
interval through its own client; a 200 passes, two failures in a row (a status, an error or no
answer within the interval) take it down and one 200 brings it back; checks never overlap; each
failure is counted; a 404 says once that Streamlit's baseUrlPath looks wrong.  On a clock.
"""

from __future__ import annotations

import pytest
from routing_fakes import App, FakeLeg, answer, formats, respond
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import LogLevel

from stproxy.routing.health import FALL, HealthCheck
from stproxy.routing.replica import DOWN, UP

INTERVAL = 5.0
FAILURES = "stproxy_replica_health_failures_total"


class Checked:
    """One replica of an app at C{prefix} and its health check (not started)."""

    def __init__(self, prefix: str = "/app", path: bytes = b"/app/_stcore/health") -> None:
        self.app = App(count=1, prefix=prefix)
        self.replica = self.app.replica(0)
        self.upstream = self.replica.upstream
        self.check = HealthCheck(self.replica, path, INTERVAL, self.app.replicaMetrics)

    @property
    def requests(self):
        return self.upstream.requests

    def pending(self):
        """The one check waiting for its answer."""
        [request] = [r for r in self.requests if not r.deferred.called]
        return request

    def answerWith(self, code: int) -> None:
        answer(self.pending(), code)

    def refuse(self) -> None:
        self.pending().fail(ConnectionRefusedError())

    def next(self) -> None:
        """The next interval passes: the next check goes out."""
        self.app.clock.advance(INTERVAL)

    def failures(self) -> float | None:
        return self.app.replicaSample(FAILURES, self.replica)


def test_fall_is_two() -> None:
    """HAProxy's fall 2: one slow answer must not close every session with 1012."""
    assert FALL == 2


def test_the_check_asks_the_health_path_at_once_and_every_interval() -> None:
    """start(): GET of the path on the replica now, then once per interval."""
    c = Checked()
    c.check.start()
    [first] = c.requests
    assert (first.method, first.uri) == (b"GET", b"http://10.0.0.1:8501/app/_stcore/health")
    assert first.bodyProducer is None
    c.answerWith(200)
    c.app.clock.advance(INTERVAL - 0.1)
    assert len(c.requests) == 1
    c.app.clock.advance(0.1)
    assert len(c.requests) == 2
    c.check.start()
    assert len(c.requests) == 2


def test_a_200_keeps_an_up_replica_up_and_counts_no_failure() -> None:
    """Passing checks change nothing and log nothing."""
    c = Checked()
    c.check.start()
    for _ in range(3):
        c.answerWith(200)
        c.next()
    assert c.replica.state == UP and c.check.failures == 0
    assert c.failures() is None
    assert c.app.logged("is {state}") == []


@pytest.mark.parametrize("fail", ["500", "refused"])
def test_one_failure_does_not_take_a_replica_down(fail: str) -> None:
    """A single failed check (a 500, a refused connection) is counted, and the replica stays up."""
    c = Checked()
    c.check.start()
    c.answerWith(500) if fail == "500" else c.refuse()
    assert c.replica.state == UP
    assert c.check.failures == 1 and c.failures() == 1


@pytest.mark.parametrize("fail", ["503", "refused"])
def test_two_failures_in_a_row_take_it_down_and_restart_its_sessions(fail: str) -> None:
    """The second failure in a row: down, one log line saying why, its sessions restarted."""
    c = Checked()
    leg = FakeLeg()
    c.replica.sessionOpened(leg)
    c.check.start()
    for _ in range(2):
        c.answerWith(503) if fail == "503" else c.refuse()
        c.next()
    assert c.replica.state == DOWN and leg.restarts == 1
    [line] = c.app.logged("is {state}")
    assert line["state"] == DOWN and line["why"].startswith("health check: ")
    assert ("answered 503" if fail == "503" else "refused") in line["why"]
    assert c.failures() == 2


def test_a_pass_between_failures_resets_the_count() -> None:
    """fail, pass, fail: never two in a row, so the replica stays up."""
    c = Checked()
    c.check.start()
    for code in (500, 200, 500, 200, 500):
        c.answerWith(code)
        c.next()
    assert c.replica.state == UP and c.failures() == 3


def test_a_down_replica_comes_back_on_one_200() -> None:
    """rise 1: the first passing check brings a down replica back up, with a line."""
    c = Checked()
    c.replica.failed("connection refused")
    c.check.start()
    c.answerWith(200)
    assert c.replica.state == UP
    assert [e["state"] for e in c.app.logged("is {state}")] == [DOWN, UP]


def test_a_down_replica_failing_again_stays_down_quietly() -> None:
    """Failing checks of a down replica are counted but change and restart nothing."""
    c = Checked()
    leg = FakeLeg()
    c.replica.sessionOpened(leg)
    c.replica.failed("refused")
    c.check.start()
    c.refuse()
    c.next()
    c.answerWith(500)
    assert c.replica.state == DOWN and leg.restarts == 1
    assert len(c.app.logged("is {state}")) == 1 and c.failures() == 2


def test_a_hanging_check_fails_at_the_interval_and_the_next_one_goes_out() -> None:
    """No answer within the interval is a failure; its request is cancelled; then the next check runs."""
    c = Checked()
    c.check.start()
    [hanging] = c.requests
    c.app.clock.advance(INTERVAL - 0.1)
    assert c.check.failures == 0 and not hanging.cancelled
    c.app.clock.advance(0.1)
    assert hanging.cancelled
    assert c.check.failures == 1 and c.failures() == 1
    assert len(c.requests) == 2
    c.app.clock.advance(INTERVAL)
    assert c.replica.state == DOWN, formats(c.app.events)


def test_a_response_whose_body_never_ends_is_a_hanging_check() -> None:
    """The body is read too: a 200 whose body stalls past the interval fails."""
    c = Checked()
    c.check.start()
    response = respond(c.pending(), 200)
    response.deliver(b"o")
    c.app.clock.advance(INTERVAL)
    assert c.check.failures == 1 and c.replica.state == UP
    assert response.transport.aborted


def test_checks_never_overlap() -> None:
    """A check asked for while one is still waiting is skipped."""
    c = Checked()
    c.check.check()
    c.check.check()
    assert len(c.requests) == 1
    c.answerWith(200)
    c.check.check()
    assert len(c.requests) == 2


def test_stop_stops_the_checks() -> None:
    """After stop, no check goes out, and a waiting one is cancelled."""
    c = Checked()
    c.check.start()
    c.answerWith(200)
    c.next()
    c.check.stop()
    assert c.requests[-1].cancelled
    c.app.clock.advance(10 * INTERVAL)
    assert len(c.requests) == 2
    c.check.stop()


def test_stopping_a_check_in_flight_is_not_a_failed_check() -> None:
    """The proxy stopping (or the replica leaving) is no verdict on the replica's health."""
    c = Checked()
    leg = FakeLeg()
    c.replica.sessionOpened(leg)
    c.check.start()
    c.answerWith(500)
    c.next()
    c.check.stop()
    assert c.check.failures == 1 and c.failures() == 1
    assert c.replica.state == UP and leg.restarts == 0
    assert c.app.logged("is {state}") == []


def test_a_404_says_once_that_the_base_url_path_looks_wrong() -> None:
    """Streamlit without the route's baseUrlPath answers 404 at PREFIX/_stcore/health: one error, naming it."""
    c = Checked(prefix="/app")
    c.check.start()
    c.answerWith(404)
    c.next()
    c.answerWith(404)
    [error] = c.app.logged("answers 404")
    assert error["log_level"] == LogLevel.error
    assert (error["route"], error["path"]) == ("/app", "/app/_stcore/health")
    assert "--server.baseUrlPath=app" in error["hint"]
    assert c.replica.state == DOWN and c.failures() == 2


def test_a_404_on_the_root_route_suggests_a_route() -> None:
    """At /, a 404 means the Streamlit has a baseUrlPath: the hint says to route it."""
    c = Checked(prefix="/", path=b"/_stcore/health")
    c.check.start()
    c.answerWith(404)
    [error] = c.app.logged("answers 404")
    assert "--route" in error["hint"]
