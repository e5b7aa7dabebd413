"""
An app's replicas (stproxy.routing.replicaset): discovery adding and draining them, a drained
replica removed (its pool closed, its metrics forgotten) when its last session closes or at the
drain deadline (its sessions then told to restart), a replica listed again rejoining; the choice
of a replica for a new browser; the sessions learned from retries, bounded; and the health
checks started and stopped with the set.  On a clock the test advances.
"""

from __future__ import annotations

import pytest
from routing_fakes import ADDRESSES, App, FakeLeg, answer, formats

import stproxy.routing.replicaset as replicaset
from stproxy.routing.replica import DOWN, DRAINING, UP, replicaId


def test_adding_an_address_makes_an_up_replica_with_its_own_client() -> None:
    """Each address becomes one replica, up, keyed by its id, with a client of its own."""
    app = App(count=2)
    one, two = app.replica(0), app.replica(1)
    assert set(app.replicas.replicas) == {replicaId(ADDRESSES[0]), replicaId(ADDRESSES[1])}
    assert one.isUp and two.isUp
    assert (
        one.upstream is app.upstreams[ADDRESSES[0]] and two.upstream is app.upstreams[ADDRESSES[1]]
    )
    assert one.upstream is not two.upstream


def test_adding_an_address_twice_keeps_one_replica() -> None:
    """The same address again is the same replica, and no second client is made."""
    app = App(count=1)
    replica = app.replica(0)
    assert app.replicas.add(ADDRESSES[0]) is replica
    assert len(app.replicas.replicas) == 1 and len(app.upstreams) == 1


def test_update_adds_the_new_and_drains_the_vanished() -> None:
    """Discovery's list is the set: a new address is added up, one no longer listed drains."""
    app = App(count=2)
    gone = app.replica(0)
    leg = FakeLeg()
    gone.sessionOpened(leg)
    app.replicas.update([ADDRESSES[1], ADDRESSES[2]])
    assert gone.state == DRAINING
    assert app.replica(1).state == UP and app.replica(2).state == UP
    assert set(app.replicas.replicas) == {replicaId(a) for a in ADDRESSES[:3]}


def test_a_vanished_replica_with_no_session_is_removed_at_once() -> None:
    """No session to wait for: removed, its pool closed, its metric labels forgotten, one line."""
    app = App(count=2)
    gone = app.replica(0)
    gone.requested()
    assert app.replicaSample("stproxy_replica_up", gone) == 1
    app.replicas.update([ADDRESSES[1]])
    assert gone.id not in app.replicas.replicas
    assert app.upstreams[ADDRESSES[0]].closed == 1
    for name in (
        "stproxy_replica_up",
        "stproxy_replica_sessions",
        "stproxy_replica_requests_total",
    ):
        assert app.replicaSample(name, gone) is None, name
    [removed] = app.logged("removed")
    assert removed["replica"] == "http://10.0.0.1:8501"
    assert app.clock.getDelayedCalls() == []
    assert app.replicaSample("stproxy_replica_up", app.replica(1)) == 1


def test_a_draining_replica_is_removed_when_its_last_session_closes() -> None:
    """Its sessions keep it until the last one closes; then it goes, and its drain timer with it."""
    app = App(count=2, drainTimeout=30)
    gone = app.replica(0)
    one, two = FakeLeg("1"), FakeLeg("2")
    gone.sessionOpened(one)
    gone.sessionOpened(two)
    app.replicas.update([ADDRESSES[1]])
    assert len(app.clock.getDelayedCalls()) == 1
    gone.sessionClosed(one)
    assert gone.id in app.replicas.replicas
    gone.sessionClosed(two)
    assert gone.id not in app.replicas.replicas
    assert app.upstreams[ADDRESSES[0]].closed == 1
    assert app.clock.getDelayedCalls() == []
    app.clock.advance(60)
    assert (one.restarts, two.restarts) == (0, 0)


def test_a_draining_replica_past_the_drain_timeout_restarts_its_sessions_and_goes() -> None:
    """At the deadline (not before) each remaining session gets restart() (1012) and the replica is removed."""
    app = App(count=2, drainTimeout=30)
    gone = app.replica(0)
    legs = [FakeLeg("1"), FakeLeg("2")]
    for leg in legs:
        gone.sessionOpened(leg)
    app.replicas.update([ADDRESSES[1]])
    app.clock.advance(29.9)
    assert gone.id in app.replicas.replicas and [leg.restarts for leg in legs] == [0, 0]
    app.clock.advance(0.1)
    assert [leg.restarts for leg in legs] == [1, 1]
    assert gone.id not in app.replicas.replicas
    assert app.upstreams[ADDRESSES[0]].closed == 1
    [timeout] = app.logged("drain timeout")
    assert timeout["count"] == 2
    assert app.replicaSample("stproxy_replica_sessions", gone) is None


def test_sessions_closing_after_the_drain_timeout_do_not_remove_it_twice() -> None:
    """A restarted session closing after its replica was removed closes nothing a second time."""
    app = App(count=2, drainTimeout=5)
    gone = app.replica(0)
    leg = FakeLeg()
    gone.sessionOpened(leg)
    app.replicas.update([ADDRESSES[1]])
    app.clock.advance(5)
    gone.sessionClosed(leg)
    assert app.upstreams[ADDRESSES[0]].closed == 1
    assert len(app.logged("removed")) == 1, formats(app.events)


def test_a_draining_replica_listed_again_rejoins() -> None:
    """Listed again before it is gone: up again, the same replica, its drain timer cancelled."""
    app = App(count=2, drainTimeout=30)
    back = app.replica(0)
    leg = FakeLeg()
    back.sessionOpened(leg)
    app.replicas.update([ADDRESSES[1]])
    app.clock.advance(10)
    app.replicas.update([ADDRESSES[0], ADDRESSES[1]])
    assert back.state == UP and app.replica(0) is back
    assert app.clock.getDelayedCalls() == []
    app.clock.advance(60)
    assert leg.restarts == 0 and back.id in app.replicas.replicas
    assert app.upstreams[ADDRESSES[0]].closed == 0
    assert len(app.upstreams) == 2


def test_a_replica_drained_twice_is_drained_once() -> None:
    """A draining replica still missing from the next list is not drained (or timed) again."""
    app = App(count=2, drainTimeout=30)
    gone = app.replica(0)
    gone.sessionOpened(FakeLeg())
    app.replicas.update([ADDRESSES[1]])
    app.clock.advance(20)
    app.replicas.update([ADDRESSES[1]])
    assert len(app.clock.getDelayedCalls()) == 1
    app.clock.advance(10)
    assert gone.id not in app.replicas.replicas


def test_an_empty_list_drains_every_replica() -> None:
    """Discovery finding nothing leaves an app with no replica to choose."""
    app = App(count=2)
    app.replicas.update([])
    assert app.replicas.replicas == {}
    assert app.replicas.choose() is None and not app.replicas.anyUp


# ------------------------------------------------------------------------------------ choose


def test_a_new_browser_goes_to_the_up_replica_with_fewest_sessions() -> None:
    """Sessions decide first: the replica with the fewest open ones wins."""
    app = App(count=3)
    for number, count in ((0, 2), (1, 0), (2, 1)):
        for _ in range(count):
            app.replica(number).sessionOpened(FakeLeg())
    assert [app.replicas.choose() for _ in range(4)] == [app.replica(1)] * 4


def test_ties_are_taken_in_turn() -> None:
    """Browsers arriving together, before any WebSocket opens, spread over every replica."""
    app = App(count=3)
    chosen = [app.replicas.choose() for _ in range(6)]
    assert set(chosen) == {app.replica(0), app.replica(1), app.replica(2)}
    assert chosen[:3] == chosen[3:]


def test_a_down_replica_gets_no_new_browser_while_another_is_up() -> None:
    """Down replicas are passed over, even with fewer sessions."""
    app = App(count=2)
    app.replica(1).sessionOpened(FakeLeg())
    app.replica(0).failed("refused")
    assert {app.replicas.choose() for _ in range(4)} == {app.replica(1)}


def test_with_no_replica_up_a_down_one_is_tried_anyway() -> None:
    """Fail open, as nginx does: a down replica (the fewest sessions) rather than no answer."""
    app = App(count=2)
    app.replica(0).sessionOpened(FakeLeg())
    app.replica(0).failed("refused")
    app.replica(1).failed("refused")
    assert app.replicas.choose() is app.replica(1)
    assert not app.replicas.anyUp


def test_a_draining_replica_is_never_chosen() -> None:
    """Not while others are up, and not even when it is the only one left."""
    app = App(count=2)
    app.replica(0).sessionOpened(FakeLeg())
    app.replica(1).sessionOpened(FakeLeg())
    app.replica(1).sessionOpened(FakeLeg())
    app.replicas.update([ADDRESSES[1]])
    assert app.replica(0).state == DRAINING
    assert {app.replicas.choose() for _ in range(3)} == {app.replica(1)}
    app.replica(1).failed("refused")
    assert app.replicas.choose() is app.replica(1)
    app.replicas.update([])
    assert app.replicas.choose() is None


def test_choose_leaves_out_the_excluded() -> None:
    """The replicas already tried are left out; None once every one is."""
    app = App(count=3)
    one, two, three = app.replica(0), app.replica(1), app.replica(2)
    assert {app.replicas.choose(exclude=[one, two]) for _ in range(3)} == {three}
    three.failed("refused")
    assert app.replicas.choose(exclude=[one, two]) is three
    assert app.replicas.choose(exclude=[one, two, three]) is None


def test_no_replica_means_no_choice() -> None:
    """An app with no replica at all (discovery found none yet) chooses None."""
    assert App(count=0).replicas.choose() is None


def test_get_finds_a_replica_by_id() -> None:
    """get() takes what the cookie names: an id, or None."""
    app = App(count=1)
    assert app.replicas.get(app.replica(0).id) is app.replica(0)
    assert app.replicas.get("0123456789ab") is None
    assert app.replicas.get(None) is None


# ------------------------------------------------------------------------------------ learn


def test_a_learned_session_names_its_replica() -> None:
    """A session learned on a replica is found there; an unknown one is not."""
    app = App(count=2)
    app.replicas.learn("s1", app.replica(1))
    assert app.replicas.learned("s1") is app.replica(1)
    assert app.replicas.learned("s2") is None


def test_a_learned_session_on_a_removed_replica_names_none() -> None:
    """Once its replica is gone, a learned session leads nowhere."""
    app = App(count=2)
    app.replicas.learn("s1", app.replica(0))
    app.replicas.update([ADDRESSES[1]])
    assert app.replicas.learned("s1") is None


def test_learned_sessions_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past LEARNED_SESSIONS the least recently learned is forgotten; learning again refreshes."""
    monkeypatch.setattr(replicaset, "LEARNED_SESSIONS", 2)
    app = App(count=2)
    one, two = app.replica(0), app.replica(1)
    app.replicas.learn("a", one)
    app.replicas.learn("b", one)
    app.replicas.learn("a", two)
    app.replicas.learn("c", one)
    assert app.replicas.learned("b") is None
    assert app.replicas.learned("a") is two
    assert app.replicas.learned("c") is one


def test_the_default_bound_holds_ten_thousand_sessions() -> None:
    """The bound is what the module says, and it holds."""
    app = App(count=1)
    for n in range(replicaset.LEARNED_SESSIONS + 5):
        app.replicas.learn(str(n), app.replica(0))
    assert app.replicas.learned("4") is None
    assert app.replicas.learned("5") is app.replica(0)


# ------------------------------------------------------------------------------- start, stop


def healthChecks(app: App, number: int) -> list[bytes]:
    return [r.uri for r in app.upstreams[ADDRESSES[number]].requests]


def test_start_starts_each_replicas_client_and_health_check() -> None:
    """Each replica's lookups start and its health path is asked at once."""
    app = App(count=2, healthPath=b"/_stcore/health")
    app.replicas.start()
    assert app.replicas.running
    for number in (0, 1):
        assert app.upstreams[ADDRESSES[number]].started == 1
        assert healthChecks(app, number) == [
            f"http://10.0.0.{number + 1}:8501/_stcore/health".encode()
        ]


def test_a_replica_added_while_running_is_started_and_checked() -> None:
    """A replica discovery adds to a running set is checked at once; one added before start waits."""
    app = App(count=1)
    assert healthChecks(app, 0) == [] and app.upstreams[ADDRESSES[0]].started == 0
    app.replicas.start()
    app.replicas.add(ADDRESSES[1])
    assert app.upstreams[ADDRESSES[1]].started == 1
    assert len(healthChecks(app, 1)) == 1


def test_stop_stops_health_checks_and_drain_timers() -> None:
    """After stop, no check is made and no drain deadline fires."""
    app = App(count=2, healthInterval=5, drainTimeout=30)
    app.replicas.start()
    for number in (0, 1):
        for request in app.upstreams[ADDRESSES[number]].requests:
            answer(request)
    leg = FakeLeg()
    app.replica(0).sessionOpened(leg)
    app.replicas.update([ADDRESSES[1]])
    app.replicas.stop()
    assert not app.replicas.running
    app.clock.advance(60)
    assert len(healthChecks(app, 1)) == 1
    assert leg.restarts == 0


def test_close_closes_every_replicas_pool() -> None:
    """close() closes each replica's client and hands back the Deferreds of the closes."""
    app = App(count=2)
    closing = app.replicas.close()
    assert len(closing) == 2
    assert [app.upstreams[a].closed for a in ADDRESSES[:2]] == [1, 1]


def test_any_up_is_whether_some_replica_is_up() -> None:
    """anyUp is false once every replica is down or draining."""
    app = App(count=2)
    assert app.replicas.anyUp
    app.replica(0).failed("refused")
    assert app.replicas.anyUp
    app.replica(1).drain("gone")
    assert not app.replicas.anyUp
    assert app.replica(0).state == DOWN


def test_a_set_without_health_path_checks_nothing() -> None:
    """healthPath None (a server that is not Streamlit): started and emptied with no check at all."""
    app = App(count=1, healthPath=None)
    app.replicas.start()
    app.replicas.add(ADDRESSES[1])
    app.clock.advance(60)
    assert [len(u.requests) for u in app.upstreams.values()] == [0, 0]
    assert [u.started for u in app.upstreams.values()] == [1, 1]
    app.replicas.update([ADDRESSES[1]])
    assert app.upstreams[ADDRESSES[0]].closed == 1
    app.replicas.stop()


def test_a_removed_replica_is_retired() -> None:
    """Removal marks the replica as gone for good; draining alone does not."""
    app = App(count=2)
    draining, removed = app.replica(0), app.replica(1)
    draining.sessionOpened(FakeLeg())
    app.replicas.update([])
    assert not draining.retired and removed.retired


def test_a_replica_added_while_running_is_started_and_logged_up() -> None:
    """A replica discovery adds to a running set: its lookups and check start, and one line says it is up."""
    app = App(count=1)
    app.replicas.start()
    added = app.replicas.add(ADDRESSES[1])
    [line] = app.logged("is up (new)")
    assert line["replica"] == str(added.address) and line["route"] == app.replicas.route
    assert app.upstreams[ADDRESSES[1]].started == 1
    app.replicas.stop()


def test_replicas_given_before_the_start_are_not_logged_as_new() -> None:
    """The replicas the command line names are announced by the proxy's start, not as new ones."""
    app = App(count=2)
    app.replicas.start()
    assert app.logged("is up (new)") == []
    app.replicas.stop()
