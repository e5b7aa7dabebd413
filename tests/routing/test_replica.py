"""
One replica's state (stproxy.routing.replica): up, down and draining and the moves between
them, one log line per change and none for a non-change, its metrics, and its sessions: a
replica going down tells each to reconnect (1012), once; a draining one says when its last
session has closed.
"""

from __future__ import annotations

from routing_fakes import ADDRESSES, App, FakeLeg, RecordingUpstream, formats

from stproxy.routing.replica import DOWN, DRAINING, UP, Replica, replicaId

UP_METRIC = "stproxy_replica_up"
SESSIONS = "stproxy_replica_sessions"


def oneReplica(**kwargs) -> tuple[App, Replica]:
    app = App(count=1, prefix="/app", **kwargs)
    return app, app.replica(0)


def changes(app: App) -> list[dict]:
    return app.logged("Replica {replica} of {route} is {state}")


def test_a_new_replica_is_up_with_no_sessions() -> None:
    """A replica starts up, named by its address's id, with its up and sessions metrics set."""
    app, replica = oneReplica()
    assert (replica.state, replica.isUp, replica.sessions) == (UP, True, set())
    assert replica.id == replicaId(ADDRESSES[0]) and replica.address == ADDRESSES[0]
    assert replica.route == "/app"
    assert app.replicaSample(UP_METRIC, replica) == 1
    assert app.replicaSample(SESSIONS, replica) == 0
    assert "10.0.0.1" in repr(replica) and "up" in repr(replica)


def test_a_replica_can_start_down() -> None:
    """A replica made down is not up, and its metric says so."""
    app = App(count=0)
    upstream = RecordingUpstream(app.clock, ADDRESSES[0])
    replica = Replica(upstream, "/", app.replicaMetrics, app.log, DOWN)
    assert not replica.isUp
    assert app.replicaSample(UP_METRIC, replica) == 0


def test_failing_takes_an_up_replica_down_with_one_log_line() -> None:
    """failed() on an up replica: down, metric 0, one info line with the replica, route, state and why."""
    app, replica = oneReplica()
    replica.failed("connection refused")
    assert replica.state == DOWN and not replica.isUp
    assert app.replicaSample(UP_METRIC, replica) == 0
    [line] = changes(app)
    assert (line["replica"], line["route"], line["state"], line["why"]) == (
        "http://10.0.0.1:8501",
        "/app",
        DOWN,
        "connection refused",
    )


def test_failing_again_while_down_changes_nothing() -> None:
    """A down replica failing again logs nothing more and restarts nothing more."""
    app, replica = oneReplica()
    leg = FakeLeg()
    replica.sessionOpened(leg)
    replica.failed("one")
    replica.failed("two")
    assert len(changes(app)) == 1, formats(app.events)
    assert leg.restarts == 1


def test_a_replica_going_down_restarts_every_session_once() -> None:
    """Each WebSocket leg on it is told to restart (1012), once each."""
    _, replica = oneReplica()
    legs = [FakeLeg(str(n)) for n in range(3)]
    for leg in legs:
        replica.sessionOpened(leg)
    replica.failed("health check")
    assert [leg.restarts for leg in legs] == [1, 1, 1]


def test_a_leg_closing_while_restarted_does_not_upset_the_others() -> None:
    """Legs that close (sessionClosed) as they are restarted still leave every other one restarted."""
    _, replica = oneReplica()

    class Closing(FakeLeg):
        def restart(self) -> None:
            super().restart()
            replica.sessionClosed(self)

    legs = [Closing(str(n)) for n in range(3)]
    for leg in legs:
        replica.sessionOpened(leg)
    replica.failed("health check")
    assert [leg.restarts for leg in legs] == [1, 1, 1]
    assert replica.sessions == set()


def test_passing_brings_a_down_replica_up_with_one_log_line() -> None:
    """passed() on a down replica: up again, metric 1, one line; on an up one: nothing."""
    app, replica = oneReplica()
    replica.passed("200")
    assert changes(app) == []
    replica.failed("refused")
    replica.passed("/_stcore/health answered 200")
    replica.passed("again")
    assert replica.isUp and app.replicaSample(UP_METRIC, replica) == 1
    assert [(e["state"], e["why"]) for e in changes(app)] == [
        (DOWN, "refused"),
        (UP, "/_stcore/health answered 200"),
    ]


def test_draining_keeps_the_sessions_and_takes_no_new_browsers() -> None:
    """drain(): draining, not up (metric 0), one line; its sessions are not restarted."""
    app, replica = oneReplica()
    leg = FakeLeg()
    replica.sessionOpened(leg)
    replica.drain("gone from DNS")
    replica.drain("again")
    assert replica.state == DRAINING and not replica.isUp
    assert app.replicaSample(UP_METRIC, replica) == 0
    assert leg.restarts == 0
    assert [(e["state"], e["why"]) for e in changes(app)] == [(DRAINING, "gone from DNS")]


def test_a_draining_replica_stays_draining_whatever_its_health() -> None:
    """Neither a passing nor a failing health check moves a draining replica, nor restarts its sessions."""
    app, replica = oneReplica()
    leg = FakeLeg()
    replica.sessionOpened(leg)
    replica.drain("gone")
    replica.passed("200")
    replica.failed("refused")
    assert replica.state == DRAINING and leg.restarts == 0
    assert len(changes(app)) == 1


def test_a_down_replica_can_drain() -> None:
    """A replica that vanishes while down drains (it is then removed, not brought back up)."""
    _, replica = oneReplica()
    replica.failed("refused")
    replica.drain("gone")
    assert replica.state == DRAINING


def test_rejoining_brings_a_draining_replica_up_and_nothing_else() -> None:
    """rejoin() only acts on a draining replica: up again, one line."""
    app, replica = oneReplica()
    replica.rejoin("listed")
    assert changes(app) == []
    replica.drain("gone")
    replica.rejoin("listed again")
    assert replica.isUp and app.replicaSample(UP_METRIC, replica) == 1
    replica.failed("refused")
    replica.rejoin("listed")
    assert replica.state == DOWN
    assert [e["state"] for e in changes(app)] == [DRAINING, UP, DOWN]


def test_sessions_are_counted_in_and_out() -> None:
    """Each opened session counts in the metric; a close takes it off; closing twice is harmless."""
    app, replica = oneReplica()
    one, two = FakeLeg("1"), FakeLeg("2")
    replica.sessionOpened(one)
    replica.sessionOpened(two)
    assert replica.sessions == {one, two}
    assert app.replicaSample(SESSIONS, replica) == 2
    replica.sessionClosed(one)
    replica.sessionClosed(one)
    assert replica.sessions == {two}
    assert app.replicaSample(SESSIONS, replica) == 1


def test_a_draining_replica_says_when_its_last_session_closes() -> None:
    """drained is called once the last session of a draining replica closes, not before."""
    _, replica = oneReplica()
    seen: list[Replica] = []
    replica.drained = seen.append
    one, two = FakeLeg("1"), FakeLeg("2")
    replica.sessionOpened(one)
    replica.sessionOpened(two)
    replica.drain("gone")
    replica.sessionClosed(one)
    assert seen == []
    replica.sessionClosed(two)
    assert seen == [replica]


def test_an_up_replica_losing_its_last_session_is_not_drained() -> None:
    """Only a draining replica reports being empty."""
    _, replica = oneReplica()
    seen: list[Replica] = []
    replica.drained = seen.append
    leg = FakeLeg()
    replica.sessionOpened(leg)
    replica.sessionClosed(leg)
    replica.failed("refused")
    replica.sessionOpened(leg)
    replica.sessionClosed(leg)
    assert seen == []


def test_requests_are_counted() -> None:
    """Each HTTP request sent to a replica counts in its requests metric."""
    app, replica = oneReplica()
    replica.requested()
    replica.requested()
    assert app.replicaSample("stproxy_replica_requests_total", replica) == 2


def test_a_leg_that_never_opened_closing_changes_nothing() -> None:
    """A refused handshake's leg closing neither counts nor reports a drained replica."""
    app, replica = oneReplica()
    seen: list[Replica] = []
    replica.drained = seen.append
    replica.drain("gone")
    app.replicaMetrics.forget(replica)
    replica.sessionClosed(FakeLeg("never opened"))
    assert seen == []
    assert app.replicaSample(SESSIONS, replica) is None


def test_a_session_opening_on_a_retired_replica_is_sent_elsewhere_at_once() -> None:
    """A replica that has left the set for good restarts (1012) a session that opens on it late."""
    app, replica = oneReplica()
    app.replicas.update([])
    assert replica.retired
    leg = FakeLeg()
    replica.sessionOpened(leg)
    assert leg.restarts == 1 and replica.sessions == set()
    assert app.replicaSample(SESSIONS, replica) is None
