"""
The routes while the proxy runs (stproxy.routing.service): an app's replicas are those given
by address plus what each of its DNS names lists now (Membership); the service starts and stops
the health checks and discovery, closes every replica's pool before it has stopped, and says in
the log when sticky routes sign with a key of this process only.
"""

from __future__ import annotations

from routing_fakes import ADDRESSES, App, RecordingUpstream, formats
from twisted.internet.defer import Deferred

from stproxy.routing.replica import DRAINING
from stproxy.routing.route import Routes
from stproxy.routing.service import Membership, RoutingService
from stproxy.upstream.address import UpstreamAddress

NAME = UpstreamAddress("http", "app.internal", 8501)
OTHER = UpstreamAddress("https", "other.internal", 9000)
RANDOM_KEY = "signed with a random key"


def addresses(app: App) -> set[str]:
    """The replicas of C{app} not draining, as text."""
    return {str(r.address) for r in app.replicas.replicas.values() if r.state != DRAINING}


def test_found_adds_what_a_name_lists_to_the_static_replicas() -> None:
    """A DNS name's addresses become replicas at its scheme and port, beside those given by address."""
    app = App(count=1)
    membership = Membership(app.replicas, (ADDRESSES[0],))
    membership.found(NAME, frozenset({"10.1.0.1", "10.1.0.2"}))
    assert addresses(app) == {
        "http://10.0.0.1:8501",
        "http://10.1.0.1:8501",
        "http://10.1.0.2:8501",
    }


def test_found_unions_every_name_and_replaces_only_that_names_list() -> None:
    """Each name's latest list is kept apart: one name changing leaves the other's replicas alone."""
    app = App(count=1)
    membership = Membership(app.replicas, (ADDRESSES[0],))
    membership.found(NAME, frozenset({"10.1.0.1", "10.1.0.2"}))
    membership.found(OTHER, frozenset({"10.2.0.1", "fd00::1"}))
    assert addresses(app) == {
        "http://10.0.0.1:8501",
        "http://10.1.0.1:8501",
        "http://10.1.0.2:8501",
        "https://10.2.0.1:9000",
        "https://[fd00::1]:9000",
    }
    membership.found(NAME, frozenset({"10.1.0.2"}))
    assert addresses(app) == {
        "http://10.0.0.1:8501",
        "http://10.1.0.2:8501",
        "https://10.2.0.1:9000",
        "https://[fd00::1]:9000",
    }


def test_a_name_listing_nothing_leaves_the_static_replicas() -> None:
    """Zero records for a name drains its replicas, never those given by address."""
    app = App(count=1)
    membership = Membership(app.replicas, (ADDRESSES[0],))
    membership.found(NAME, frozenset({"10.1.0.1"}))
    membership.found(NAME, frozenset())
    assert addresses(app) == {"http://10.0.0.1:8501"}


def test_a_name_listing_a_static_address_makes_no_second_replica() -> None:
    """An address both given and listed is one replica, kept when the name stops listing it."""
    app = App(count=1)
    membership = Membership(app.replicas, (ADDRESSES[0],))
    membership.found(NAME, frozenset({"10.0.0.1"}))
    assert len(app.replicas.replicas) == 1
    membership.found(NAME, frozenset())
    assert app.replica(0).isUp


class FakeDiscovery:
    """A DNSDiscovery as the service sees it: counts its starts and stops."""

    def __init__(self) -> None:
        self.started = self.stopped = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1


def service(*apps: App, sharedSecret: bool = False) -> tuple[RoutingService, list[FakeDiscovery]]:
    discoveries = [FakeDiscovery(), FakeDiscovery()]
    routes = Routes([app.route for app in apps], apps[0].clock)
    return RoutingService(routes, discoveries, apps[0].log, sharedSecret), discoveries


def test_start_starts_every_replicas_checks_and_every_discovery() -> None:
    """startService: each replica's client and health check, and each discovery, start."""
    app = App(count=2, prefix="/app", healthPath=b"/app/_stcore/health")
    other = App(count=1, prefix="/other", clock=app.clock)
    svc, discoveries = service(app, other)
    svc.startService()
    assert svc.running and svc.name == "upstream"
    assert [d.started for d in discoveries] == [1, 1]
    for upstream in list(app.upstreams.values()) + list(other.upstreams.values()):
        assert upstream.started == 1 and len(upstream.requests) == 1
    assert app.upstreams[ADDRESSES[0]].requests[0].uri.endswith(b"/app/_stcore/health")


def test_stop_stops_discovery_and_checks_and_closes_every_pool() -> None:
    """stopService: discoveries and checks stop, every pool closes, and nothing runs later."""
    app = App(count=2)
    svc, discoveries = service(app)
    svc.startService()
    done = svc.stopService()
    assert [d.stopped for d in discoveries] == [1, 1]
    assert [u.closed for u in app.upstreams.values()] == [1, 1]
    assert done.called and not svc.running
    app.clock.advance(60)
    assert all(len(u.requests) == 1 for u in app.upstreams.values())


class SlowClose(RecordingUpstream):
    """A replica's client whose pool takes its time to close."""

    def close(self) -> Deferred[None]:
        super().close()
        self.closing: Deferred[None] = Deferred()
        return self.closing


def test_stop_waits_for_every_pool_to_close() -> None:
    """The service has stopped only once the last replica's connections are closed."""
    app = App(count=2, upstream=SlowClose)
    svc, _ = service(app)
    svc.startService()
    done = svc.stopService()
    first, second = app.upstreams.values()
    first.closing.callback(None)
    assert not done.called
    second.closing.callback(None)
    assert done.called


def test_sticky_routes_without_a_shared_secret_are_said_to_use_this_processs_key() -> None:
    """One line names the sticky routes (not the others) and says what to give every stproxy."""
    sticky = App(count=2, prefix="/app")
    single = App(count=1, prefix="/one", sticky=False, clock=sticky.clock)
    svc, _ = service(sticky, single)
    svc.startService()
    [line] = sticky.logged(RANDOM_KEY)
    assert line["routes"] == "/app"
    assert "--affinity-secret-file" in line["log_format"]


def test_a_shared_secret_says_nothing() -> None:
    """With --affinity-secret-file, no line about the key."""
    app = App(count=2)
    svc, _ = service(app, sharedSecret=True)
    svc.startService()
    assert app.replicas.running
    assert app.logged(RANDOM_KEY) == [], formats(app.events)


def test_no_sticky_route_says_nothing_about_the_key() -> None:
    """A single --upstream sets no cookie, so its random key matters to nobody."""
    app = App(count=1, sticky=False)
    svc, _ = service(app)
    svc.startService()
    assert app.logged(RANDOM_KEY) == []
