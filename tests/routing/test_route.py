"""
The routing decision (stproxy.routing.route): for one request, the replica its affinity cookie
names while that one may take it, else the replica its learned session is on, else a new choice
with a Set-Cookie; a forged cookie is no cookie, a stale one (a replica down, draining or gone)
is re-pinned with one log line and a metric; and the routes by prefix: which app a path is for,
the WebSocket's 404/503, and readiness.
"""

from __future__ import annotations

import pytest
from routing_fakes import ADDRESSES, App, FakeLeg, formats

from stproxy.routing.affinity import DEFAULT_COOKIE
from stproxy.routing.route import Route, Routes

REPINS = "stproxy_replica_repins_total"
REPINNED = "Re-pinned a browser"


def namedBy(app: App, setCookie: bytes | None) -> str | None:
    """The replica id a Set-Cookie value names (verified), or None for no Set-Cookie."""
    if setCookie is None:
        return None
    pair = setCookie.split(b";", 1)[0]
    return app.affinity.replicaIn([pair])


def test_a_valid_cookie_naming_an_up_replica_is_followed_without_set_cookie() -> None:
    """The browser's own replica, whichever it is, pinned; nothing is set; no re-pin."""
    app = App(count=3)
    for number in (0, 1, 2, 1, 0):
        replica = app.replica(number)
        pin = app.route.pin([app.cookie(replica)], secure=False)
        assert pin is not None
        assert (pin.replica, pin.pinned, pin.setCookie, pin.route) == (
            replica,
            True,
            None,
            app.route,
        )
    assert app.logged(REPINNED) == [] and app.sample(REPINS, route="/") is None


def test_a_browser_without_cookie_gets_a_new_replica_and_a_set_cookie_naming_it() -> None:
    """No cookie: a choice of the set (unpinned: answers may be retried), with a Set-Cookie for it."""
    app = App(count=2)
    pin = app.route.pin(None, secure=False)
    assert pin is not None and not pin.pinned
    assert namedBy(app, pin.setCookie) == pin.replica.id
    assert b"Secure" not in pin.setCookie
    assert app.logged(REPINNED) == []


def test_new_browsers_spread_over_the_replicas() -> None:
    """Browsers with no cookie arriving together land on every replica."""
    app = App(count=3)
    chosen = {app.route.pin(None, secure=False).replica for _ in range(3)}
    assert chosen == {app.replica(0), app.replica(1), app.replica(2)}


def test_the_set_cookie_is_secure_over_tls() -> None:
    """A browser on TLS is pinned with a Secure cookie."""
    app = App(count=2)
    pin = app.route.pin(None, secure=True)
    assert pin.setCookie.endswith(b"; Secure")


def test_a_forged_cookie_is_ignored_and_re_pinned_with_one_line() -> None:
    """A value that does not verify names nothing: a new choice with a Set-Cookie, logged and counted as a re-pin."""
    app = App(count=2)
    forged = app.cookie(app.replica(0))[:-3] + b"AAA"
    pin = app.route.pin([forged], secure=False)
    assert pin is not None and not pin.pinned
    assert namedBy(app, pin.setCookie) == pin.replica.id
    [line] = app.logged(REPINNED)
    assert line["previous"] == "(unverified)" and "does not verify" in line["why"]
    assert app.sample(REPINS, route="/") == 1


def test_a_browser_with_no_cookie_is_pinned_without_a_re_pin() -> None:
    """No cookie of the name at all (another cookie only): pinned, nothing logged or counted."""
    app = App(count=2)
    pin = app.route.pin([b"_streamlit_xsrf=abc"], secure=False)
    assert pin is not None and pin.setCookie is not None
    assert app.logged(REPINNED) == [] and app.sample(REPINS, route="/") is None


def test_another_secrets_cookie_is_a_forged_one() -> None:
    """A cookie signed under another key names nothing here, whatever replica it claims."""
    app = App(count=2)
    other = App(count=2, secret=b"x" * 32)
    pin = app.route.pin([other.cookie(other.replica(1))], secure=False)
    assert not pin.pinned and pin.setCookie is not None
    [line] = app.logged(REPINNED)
    assert line["previous"] == "(unverified)"


def test_a_stale_cookie_naming_a_gone_replica_is_re_pinned_with_one_line() -> None:
    """A valid signature for an id no replica has (it left): a new replica, a log line, a counted re-pin."""
    app = App(count=2, prefix="/app")
    pin = app.route.pin([app.cookie("0123456789ab")], secure=False)
    assert pin is not None and not pin.pinned
    assert namedBy(app, pin.setCookie) == pin.replica.id
    [line] = app.logged(REPINNED)
    assert (line["route"], line["previous"], line["why"]) == ("/app", "0123456789ab", "gone")
    assert pin.replica.id in line["replica"] and str(pin.replica.address) in line["replica"]
    assert app.sample(REPINS, route="/app") == 1


def test_a_cookie_naming_a_down_replica_is_re_pinned_to_an_up_one() -> None:
    """The browser's replica is down: it moves to one that is up, said once in the log."""
    app = App(count=2)
    down = app.replica(0)
    down.failed("refused")
    pin = app.route.pin([app.cookie(down)], secure=False)
    assert pin.replica is app.replica(1) and not pin.pinned
    assert namedBy(app, pin.setCookie) == app.replica(1).id
    [line] = app.logged(REPINNED)
    assert (line["previous"], line["why"]) == (down.id, "down")
    assert app.sample(REPINS, route="/") == 1


def test_a_cookie_naming_the_only_replica_while_it_is_down_stays_there_without_re_pin() -> None:
    """Fail open: with none up, the down replica is tried; that is no move, so no re-pin line."""
    app = App(count=1)
    replica = app.replica(0)
    replica.failed("refused")
    pin = app.route.pin([app.cookie(replica)], secure=False)
    assert pin.replica is replica
    assert app.logged(REPINNED) == [] and app.sample(REPINS, route="/") is None


def test_a_draining_replica_keeps_its_browsers_http_requests() -> None:
    """Uploads and media of a draining replica's sessions live there: its HTTP requests stay, pinned."""
    app = App(count=2)
    draining = app.replica(0)
    draining.sessionOpened(FakeLeg())
    app.replicas.update([ADDRESSES[1]])
    pin = app.route.pin([app.cookie(draining)], secure=False)
    assert (pin.replica, pin.pinned, pin.setCookie) == (draining, True, None)
    assert app.logged(REPINNED) == []


def test_a_new_session_of_a_draining_replicas_browser_moves_with_a_re_pin() -> None:
    """A new WebSocket (a session) does not start on a draining replica: re-pinned, why=draining."""
    app = App(count=2)
    draining = app.replica(0)
    draining.sessionOpened(FakeLeg())
    app.replicas.update([ADDRESSES[1]])
    pin = app.route.pin([app.cookie(draining)], secure=False, newSession=True)
    assert pin.replica is app.replica(1) and not pin.pinned
    assert namedBy(app, pin.setCookie) == app.replica(1).id
    [line] = app.logged(REPINNED)
    assert line["why"] == "draining"


def test_a_new_session_on_an_up_replica_stays() -> None:
    """newSession changes nothing for a browser whose replica is up."""
    app = App(count=2)
    pin = app.route.pin([app.cookie(app.replica(1))], secure=False, newSession=True)
    assert (pin.replica, pin.pinned, pin.setCookie) == (app.replica(1), True, None)


def test_a_learned_session_is_followed_when_there_is_no_cookie() -> None:
    """A cookieless request naming a session learned on a replica goes there, pinned, and sets the cookie."""
    app = App(count=3)
    app.replicas.learn("s1", app.replica(2))
    for _ in range(3):
        pin = app.route.pin(None, secure=False, session="s1")
        assert (pin.replica, pin.pinned) == (app.replica(2), True)
        assert namedBy(app, pin.setCookie) == app.replica(2).id
    assert app.logged(REPINNED) == []


def test_a_learned_session_is_followed_past_a_forged_cookie() -> None:
    """A forged cookie is no cookie, so the learned session decides."""
    app = App(count=2)
    app.replicas.learn("s1", app.replica(1))
    pin = app.route.pin([f"{DEFAULT_COOKIE}=nonsense.x".encode()], secure=False, session="s1")
    assert pin.replica is app.replica(1) and pin.pinned


def test_a_valid_cookie_wins_over_a_learned_session() -> None:
    """The cookie is the browser's word; the learned session only helps browsers without one."""
    app = App(count=2)
    app.replicas.learn("s1", app.replica(1))
    pin = app.route.pin([app.cookie(app.replica(0))], secure=False, session="s1")
    assert (pin.replica, pin.setCookie) == (app.replica(0), None)


def test_a_learned_session_on_a_down_replica_is_not_followed() -> None:
    """A learned replica that is down gives way to a new choice (unpinned)."""
    app = App(count=2)
    app.replicas.learn("s1", app.replica(0))
    app.replica(0).failed("refused")
    pin = app.route.pin(None, secure=False, session="s1")
    assert pin.replica is app.replica(1) and not pin.pinned


def test_an_unknown_session_gets_a_new_choice() -> None:
    """A session id nobody learned is just a new browser."""
    app = App(count=2)
    pin = app.route.pin(None, secure=False, session="nobody")
    assert not pin.pinned and pin.setCookie is not None


def test_a_route_that_is_not_sticky_never_sets_a_cookie() -> None:
    """One --upstream: its one replica, pinned (never retried), no Set-Cookie, cookie or not."""
    app = App(count=1, sticky=False)
    for cookies in (None, [app.cookie(app.replica(0))], [b"stproxy_replica=forged.x"]):
        pin = app.route.pin(cookies, secure=True, newSession=True)
        assert (pin.replica, pin.pinned, pin.setCookie) == (app.replica(0), True, None)
    app.replica(0).failed("refused")
    assert app.route.pin(None, secure=False).replica is app.replica(0)


def test_a_route_with_no_replica_pins_nothing() -> None:
    """Discovery found nothing (yet): no pin, sticky or not."""
    assert App(count=0).route.pin(None, secure=False) is None
    assert App(count=0, sticky=False).route.pin(None, secure=False) is None
    app = App(count=0)
    assert app.route.pin([app.cookie("0123456789ab")], secure=False) is None


# ------------------------------------------------------------------------------------ repin


def test_repin_chooses_an_untried_replica_and_re_pins_a_pinned_browser() -> None:
    """A pinned request whose replica failed moves to another: a new cookie, one re-pin line."""
    app = App(count=2)
    first = app.route.pin([app.cookie(app.replica(0))], secure=False)
    moved = app.route.repin(first, [app.replica(0)], secure=True, why="connection failed")
    assert moved.replica is app.replica(1) and not moved.pinned
    assert namedBy(app, moved.setCookie) == app.replica(1).id and moved.setCookie.endswith(
        b"Secure"
    )
    [line] = app.logged(REPINNED)
    assert (line["previous"], line["why"]) == (app.replica(0).id, "connection failed")


def test_repin_of_an_unpinned_request_logs_no_re_pin() -> None:
    """A browser that had no replica of its own is not "re-pinned": no line, no metric."""
    app = App(count=2)
    first = app.route.pin(None, secure=False)
    moved = app.route.repin(first, [first.replica], secure=False, why="answered 400")
    assert moved.replica is not first.replica
    assert app.logged(REPINNED) == [] and app.sample(REPINS, route="/") is None


def test_repin_gives_none_once_every_replica_was_tried() -> None:
    """Nothing left to try: None, and nothing logged."""
    app = App(count=2)
    first = app.route.pin([app.cookie(app.replica(0))], secure=False)
    assert app.route.repin(first, [app.replica(0), app.replica(1)], False, "refused") is None
    assert app.logged(REPINNED) == []


# ------------------------------------------------------------------------------- the prefix


@pytest.mark.parametrize(
    "path, matches",
    [
        (b"/app", True),
        (b"/app/", True),
        (b"/app/x", True),
        (b"/app/_stcore/stream", True),
        (b"/apple", False),
        (b"/ap", False),
        (b"/", False),
        (b"/other/app", False),
    ],
)
def test_a_prefix_route_matches_its_own_paths_only(path: bytes, matches: bool) -> None:
    """/app is /app and below it, segment by segment: never /apple."""
    assert App(count=1, prefix="/app").route.matches(path) is matches


def test_the_root_route_matches_everything() -> None:
    """The app at / (one --upstream) takes every path."""
    route = App(count=1, prefix="/").route
    assert all(route.matches(p) for p in (b"/", b"/x", b"/app/_stcore/health"))


@pytest.mark.parametrize(
    "prefix, path, relative",
    [
        ("/app", b"/app", b"/"),
        ("/app", b"/app/", b"/"),
        ("/app", b"/app/_stcore/upload_file/s/f", b"/_stcore/upload_file/s/f"),
        ("/a/b", b"/a/b/media/x.png", b"/media/x.png"),
        ("/", b"/media/x.png", b"/media/x.png"),
        ("/", b"/", b"/"),
    ],
)
def test_relative_is_the_path_below_the_prefix(prefix: str, path: bytes, relative: bytes) -> None:
    """What Streamlit's own routes look like, for the retry rules."""
    assert App(count=1, prefix=prefix).route.relative(path) == relative


def twoApps() -> tuple[App, App, Routes]:
    app = App(count=2, prefix="/app")
    other = App(count=1, prefix="/other", clock=app.clock)
    return app, other, Routes([app.route, other.route], app.clock)


def test_routes_find_the_app_of_a_path() -> None:
    """Each path goes to the app whose prefix it is under, or to none."""
    app, other, routes = twoApps()
    assert routes.find(b"/app") is app.route
    assert routes.find(b"/app/x") is app.route
    assert routes.find(b"/other/_stcore/health") is other.route
    assert routes.find(b"/apple") is None
    assert routes.find(b"/") is None


def test_a_root_route_beside_none_takes_every_path() -> None:
    """With only the app at /, every path finds it."""
    app = App(count=1)
    assert app.routes.find(b"/anything/at/all") is app.route


def test_each_app_has_its_own_cookie_path() -> None:
    """An app's cookie is set for its own prefix, and another app's cookie is nothing to it."""
    app, other, routes = twoApps()
    pin = app.route.pin(None, secure=False)
    assert b"; Path=/app;" in pin.setCookie
    assert other.route.pin([pin.setCookie.split(b";")[0]], secure=False).setCookie is not None
    assert b"; Path=/other;" in other.route.pin(None, secure=False).setCookie


def protocols(session: str | None = None) -> list[str]:
    return ["streamlit", "xsrf"] + ([session] if session else [])


def test_a_websocket_outside_every_app_is_404() -> None:
    """No app at the path: 404, before any replica is chosen."""
    _, _, routes = twoApps()
    assert routes.pinSession(b"/nowhere/_stcore/stream", None, False, protocols()) == 404


def test_a_websocket_to_an_app_with_no_replica_is_503() -> None:
    """An app with no replica: 503."""
    app = App(count=0, prefix="/app")
    assert app.routes.pinSession(b"/app/_stcore/stream", None, False, protocols()) == 503


def test_a_websocket_pin_ignores_the_query() -> None:
    """The target's query string is not part of the path matched."""
    app, _, routes = twoApps()
    pin = routes.pinSession(b"/app/_stcore/stream?x=/other", None, False, protocols())
    assert pin.route is app.route


def test_a_websocket_resumes_the_session_in_its_third_subprotocol_where_it_was_learned() -> None:
    """Streamlit's frontend names its last session id third: a cookieless browser goes back there."""
    app, _, routes = twoApps()
    app.replicas.learn("sess-1", app.replica(1))
    for _ in range(3):
        pin = routes.pinSession(b"/app/_stcore/stream", None, False, protocols("sess-1"))
        assert pin.replica is app.replica(1) and pin.pinned


def test_a_websocket_with_two_subprotocols_names_no_session() -> None:
    """Only a third subprotocol is a session id: the second (the XSRF token) is not."""
    app, _, routes = twoApps()
    app.replicas.learn("xsrf", app.replica(1))
    chosen = {
        routes.pinSession(b"/app/_stcore/stream", None, False, protocols()).replica
        for _ in range(4)
    }
    assert chosen == {app.replica(0), app.replica(1)}


def test_a_websocket_is_a_new_session_so_a_draining_replica_is_left() -> None:
    """pinSession asks for a new session: a cookie naming a draining replica moves."""
    app, _, routes = twoApps()
    app.replica(0).sessionOpened(FakeLeg())
    app.replicas.update([ADDRESSES[1]])
    pin = routes.pinSession(
        b"/app/_stcore/stream", [app.cookie(app.replica(0))], False, protocols()
    )
    assert pin.replica is app.replica(1) and pin.setCookie is not None


def test_ready_while_every_app_has_a_replica_up() -> None:
    """/readyz's rule: every route with at least one replica up."""
    app, other, routes = twoApps()
    assert routes.ready()
    app.replica(0).failed("refused")
    assert routes.ready()
    other.replica(0).failed("refused")
    assert not routes.ready(), formats(other.events)
    other.replica(0).passed("200")
    assert routes.ready()
    assert not Routes([App(count=0).route], app.clock).ready()


def test_routes_keep_their_reactor() -> None:
    """The reactor every replica's client runs on is the routes'."""
    app = App(count=1)
    assert app.routes.reactor is app.clock
    assert isinstance(app.routes.routes[0], Route)
