"""
The configuration of routing (stproxy.routing.settings): what a route prefix may be and its
normal form, which prefixes overlap, a route's stickiness and health path, and the replica
settings refused with a one-line reason.
"""

from __future__ import annotations

import pytest

from stproxy.routing.settings import (
    ReplicaSettings,
    RouteSpec,
    RoutingError,
    checkRoutes,
    normalPrefix,
    overlap,
)
from stproxy.upstream.address import UpstreamAddress

ONE = UpstreamAddress("http", "10.0.0.1", 8501)
TWO = UpstreamAddress("http", "10.0.0.2", 8501)
DNS = UpstreamAddress("http", "app.internal", 8501)


@pytest.mark.parametrize(
    "text, prefix",
    [
        ("/", "/"),
        ("", "/"),
        ("//", "/"),
        ("/app", "/app"),
        ("app", "/app"),
        ("/app/", "/app"),
        ("app/", "/app"),
        ("/team/app", "/team/app"),
        ("/my-app_2.v~1", "/my-app_2.v~1"),
        ("/.well", "/.well"),
    ],
)
def test_a_prefix_gets_one_leading_slash_and_no_trailing_one(text: str, prefix: str) -> None:
    """C{app/} is C{/app}; C{/} stays C{/}."""
    assert normalPrefix(text) == prefix


@pytest.mark.parametrize(
    "text",
    [
        "/a b",
        "/app?x=1",
        "/app#x",
        "/a//b",
        "/../etc",
        "/app/..",
        "/./app",
        "/.",
        "/caf\u00e9",
        "/a%2fb",
        "/a:b",
    ],
)
def test_a_prefix_that_is_no_plain_path_is_refused(text: str) -> None:
    """Spaces, queries, empty, dot and dot-dot segments and non-URL-safe characters: a one-line error."""
    with pytest.raises(RoutingError, match="is not a path prefix such as / or /app"):
        normalPrefix(text)


@pytest.mark.parametrize(
    "one, other, overlaps",
    [
        ("/", "/", True),
        ("/", "/app", True),
        ("/app", "/", True),
        ("/app", "/app", True),
        ("/app", "/app/admin", True),
        ("/app/admin", "/app", True),
        ("/app", "/apple", False),
        ("/apple", "/app", False),
        ("/app", "/other", False),
        ("/a/b", "/a/c", False),
        ("/a/b", "/a/b/c", True),
    ],
)
def test_overlap_is_whether_one_prefix_contains_the_others_paths(
    one: str, other: str, overlaps: bool
) -> None:
    """Segment by segment: /app and /app/admin overlap, /app and /apple do not, / overlaps all."""
    assert overlap(one, other) is overlaps


def test_overlapping_routes_are_refused_naming_both() -> None:
    """checkRoutes refuses two apps where one's paths fall in the other's."""
    routes = (RouteSpec("/app", (ONE,)), RouteSpec("/other", (TWO,)), RouteSpec("/app/x", (TWO,)))
    with pytest.raises(RoutingError, match="routes /app and /app/x overlap"):
        checkRoutes(routes)


def test_routes_side_by_side_are_accepted() -> None:
    """Disjoint prefixes, even sharing their first letters, pass."""
    checkRoutes((RouteSpec("/app", (ONE,)), RouteSpec("/apple", (TWO,)), RouteSpec("/b", (ONE,))))
    checkRoutes((RouteSpec("/", (ONE,)),))


def test_a_route_prefix_must_be_written_normally() -> None:
    """RouteSpec takes only the normal form, and says what it should be."""
    with pytest.raises(RoutingError, match="write it as /app"):
        RouteSpec("/app/", (ONE,))


def test_a_route_needs_an_upstream() -> None:
    """A route with neither an address nor a name has no replica to ever find."""
    with pytest.raises(RoutingError, match="route /app: no upstream"):
        RouteSpec("/app")


@pytest.mark.parametrize(
    "upstreams, discover, sticky",
    [
        ((ONE,), (), False),
        ((ONE, TWO), (), True),
        ((), (DNS,), True),
        ((ONE,), (DNS,), True),
    ],
)
def test_a_route_is_sticky_when_it_can_have_more_than_one_replica(
    upstreams: tuple, discover: tuple, sticky: bool
) -> None:
    """One address: no cookie, as before replicas; several, or any DNS name: pinned."""
    assert RouteSpec("/", upstreams, discover).sticky is sticky


@pytest.mark.parametrize(
    "prefix, path",
    [("/", b"/_stcore/health"), ("/app", b"/app/_stcore/health"), ("/a/b", b"/a/b/_stcore/health")],
)
def test_a_routes_health_path_is_streamlits_below_its_prefix(prefix: str, path: bytes) -> None:
    """Streamlit with baseUrlPath answers its health check below the prefix."""
    assert RouteSpec(prefix, (ONE,)).healthPath == path


def test_replica_settings_have_the_documented_defaults() -> None:
    """5 s discovery, 30 s drain, the stproxy_replica cookie, a random key, the system resolver."""
    settings = ReplicaSettings()
    assert (settings.discoveryInterval, settings.drainTimeout) == (5.0, 30.0)
    assert settings.cookie == "stproxy_replica"
    assert settings.secret is None and settings.resolver is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"discoveryInterval": 0}, "--discovery-interval must be positive"),
        ({"discoveryInterval": -1}, "--discovery-interval must be positive"),
        ({"drainTimeout": -0.1}, "--replica-drain-timeout must not be negative"),
        ({"cookie": "a b"}, "--affinity-cookie 'a b': not a cookie name"),
        ({"cookie": "a;b"}, "not a cookie name"),
        ({"cookie": "a=b"}, "not a cookie name"),
        ({"cookie": ""}, "not a cookie name"),
        ({"secret": b"x" * 15}, "at least 16 bytes"),
    ],
)
def test_replica_settings_that_cannot_work_are_refused(kwargs: dict, message: str) -> None:
    """Each bad setting fails with a message naming its flag."""
    with pytest.raises(RoutingError, match=message):
        ReplicaSettings(**kwargs)


def test_replica_settings_at_their_limits_are_accepted() -> None:
    """A zero drain timeout (1012 at once), a 16-byte key and any token as cookie name pass."""
    settings = ReplicaSettings(drainTimeout=0, secret=b"x" * 16, cookie="St.Proxy-id_1")
    assert settings.drainTimeout == 0


def test_the_secret_is_not_in_the_settings_repr() -> None:
    """A logged or printed configuration never shows the affinity key."""
    assert "supersecretvalue" not in repr(ReplicaSettings(secret=b"supersecretvalue"))
