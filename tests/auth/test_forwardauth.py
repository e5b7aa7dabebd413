"""
Forward auth (stproxy.auth.forwardauth) against the test auth service (tests/auth_service.py):
on the real reactor over loopback, what is asked (the original request, the cookies byte for
byte) and what each answer becomes (allow with the user, sign-in redirect, 401, 403, and 503 for
everything else, an unreachable service and a slow one); in memory on a Clock, what is cached
and for how long, cancellation, and that no cookie reaches a log event; the settings' checks and
how copied headers name the user.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from auth_service import AuthService, Listening
from treq.testing import RequestTraversalAgent
from twisted.internet import protocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase, TestCase

from stproxy.auth import forwardauth
from stproxy.auth.forwardauth import ForwardAuth, ForwardAuthSettings, identityHeaders
from stproxy.auth.verdict import Verdict
from stproxy.ops.metrics import Metrics

HOST = b"app.example:8443"
CLIENT = "203.0.113.7"
ALICE = {"user": "alice", "email": "alice@example.com", "groups": "admins,staff"}
ALICE_HEADERS = (
    (b"x-auth-request-user", b"alice"),
    (b"x-auth-request-email", b"alice@example.com"),
    (b"x-auth-request-groups", b"admins,staff"),
)
SESSION = [b"session=valid-alice"]


def ask(
    forward: ForwardAuth,
    cookies: list[bytes] | None = SESSION,
    navigation: bool = False,
    uri: bytes = b"/page?x=1&y=2",
    host: bytes = HOST,
) -> Deferred[Verdict]:
    """Ask C{forward} about a browser's C{GET uri} over https from L{CLIENT}."""
    return forward.check(b"GET", uri, host, "https", cookies, navigation, CLIENT)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric's value (0 when never set)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


class RealServiceTests(TestCase):
    """ForwardAuth on its own pool and the real reactor, asking the service over loopback."""

    def setUpService(self, path: str = "/auth", **settings: Any) -> ForwardAuth:
        from twisted.internet import reactor

        self.service = AuthService(sessions={"valid-alice": "alice", "valid-bob": "bob"})
        self.listening: Listening = self.service.listen(reactor)
        self.addCleanup(self.listening.stop)
        self.events: list[dict] = []
        self.metrics = Metrics()
        forward = ForwardAuth(
            reactor,
            ForwardAuthSettings(self.listening.url + path, **settings),
            logObserver=self.events.append,
            metrics=self.metrics,
        )
        self.addCleanup(forward.close)
        return forward

    def warnings(self) -> list[dict]:
        return [e for e in self.events if e["log_level"] == LogLevel.warn]

    @inlineCallbacks
    def test_the_question_describes_the_original_request(self) -> Any:
        """
        The service gets a bodiless GET to its URL, Host its own, naming the original method,
        target, host, scheme and client, with every Cookie line exactly as the browser sent it.
        """
        forward = self.setUpService()
        cookies = [b"session=valid-alice;  theme=dark", b'other=a%20b; x="q"']
        target = b"/app/page?x=1&y=%2F&z"
        yield forward.check(b"POST", target, HOST, "https", cookies, False, CLIENT)
        [asked] = self.service.requests
        self.assertEqual((asked.method, asked.uri), (b"GET", b"/auth"))
        self.assertEqual(asked.header(b"host"), [f"127.0.0.1:{self.listening.port}".encode()])
        self.assertEqual(asked.header(b"x-forwarded-method"), [b"POST"])
        self.assertEqual(asked.header(b"x-forwarded-uri"), [target])
        self.assertEqual(asked.header(b"x-forwarded-host"), [HOST])
        self.assertEqual(asked.header(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(asked.header(b"x-forwarded-for"), [CLIENT.encode()])
        self.assertEqual(asked.header(b"cookie"), cookies)
        self.assertEqual(asked.header(b"content-length") + asked.header(b"transfer-encoding"), [])

    @inlineCallbacks
    def test_a_valid_session_goes_through_as_its_user(self) -> Any:
        """A 2xx lets the request through as the user the service names, with its headers."""
        forward = self.setUpService()
        verdict = yield ask(forward)
        self.assertEqual(verdict, Verdict(0, ALICE, ALICE_HEADERS, "", "forward"))
        self.assertEqual(
            sample(self.metrics, "stproxy_auth_total", method="forward", result="ok"), 1
        )
        self.assertEqual(sample(self.metrics, "stproxy_forward_auth_seconds_count"), 1)

    @inlineCallbacks
    def test_checks_reuse_one_connection(self) -> Any:
        """
        Checks one after another go over one kept-alive connection, their bodies read; one
        without cookies sends no Cookie line.
        """
        forward = self.setUpService()
        for cookies in (SESSION, [b"session=valid-bob"], None):
            yield ask(forward, cookies)
        self.assertEqual(len(self.service.requests), 3)
        self.assertEqual(self.listening.accepted, 1)
        self.assertEqual(self.service.requests[-1].header(b"cookie"), [])

    @inlineCallbacks
    def test_a_browser_not_signed_in_is_sent_to_sign_in(self) -> Any:
        """
        A 401 for a navigation, with a sign-in URL, is a 302 to it with the original URL in rd=
        (after & if the sign-in URL has a query already), and the service's Set-Cookie.
        """
        for signin, joiner in (("https://auth.example/oauth2/start", "?"), ("/start?x=1", "&")):
            forward = self.setUpService(signin=signin)
            verdict = yield ask(forward, [b"session=expired"], navigation=True)
            rd = quote("https://app.example:8443/page?x=1&y=2", safe="")
            self.assertEqual(verdict.status, 302)
            self.assertEqual(
                verdict.headers,
                (
                    (b"location", f"{signin}{joiner}rd={rd}".encode()),
                    (b"set-cookie", b"session=; Path=/; Max-Age=0"),
                ),
            )
        denied = sample(self.metrics, "stproxy_auth_total", method="forward", result="denied")
        self.assertEqual((denied, self.warnings()), (1, []))

    @inlineCallbacks
    def test_anything_but_a_navigation_gets_the_401(self) -> Any:
        """
        A 401 for a fetch (or a navigation with no sign-in URL) stays a 401, with the service's
        WWW-Authenticate and Set-Cookie.
        """
        forward = self.setUpService(signin="https://auth.example/oauth2/start")
        bare = self.setUpService()
        for verdict in (
            (yield ask(forward, navigation=False, cookies=None)),
            (yield ask(bare, navigation=True, cookies=None)),
        ):
            self.assertEqual(verdict.status, 401)
            self.assertEqual(
                verdict.headers,
                (
                    (b"www-authenticate", b'Bearer realm="test"'),
                    (b"set-cookie", b"session=; Path=/; Max-Age=0"),
                ),
            )
            self.assertEqual(verdict.identity, {})

    @inlineCallbacks
    def test_a_403_is_passed_on(self) -> Any:
        """The service's 403 (signed in, not let in) is the answer, with no warning."""
        forward = self.setUpService("/forbidden")
        verdict = yield ask(forward, navigation=True)
        self.assertEqual((verdict.status, verdict.headers, self.warnings()), (403, (), []))

    @inlineCallbacks
    def test_any_other_status_fails_closed(self) -> Any:
        """A 500 from the service is a 503, one warning and one failure counted."""
        forward = self.setUpService("/error")
        verdict = yield ask(forward)
        self.assertEqual(verdict.status, 503)
        [warning] = self.warnings()
        self.assertEqual(warning["reason"], "it answered 500")
        self.assertEqual(warning["client"], CLIENT)
        self.assertEqual(sample(self.metrics, "stproxy_forward_auth_failures_total"), 1)
        self.assertEqual(
            sample(self.metrics, "stproxy_auth_total", method="forward", result="error"), 1
        )

    @inlineCallbacks
    def test_an_unreachable_service_fails_closed(self) -> Any:
        """With nothing listening at the URL, the check is a 503 naming the refused connection."""
        from twisted.internet import reactor

        closed = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        port = closed.getHost().port
        yield closed.stopListening()
        events: list[dict] = []
        forward = ForwardAuth(
            reactor,
            ForwardAuthSettings(f"http://127.0.0.1:{port}/auth"),
            logObserver=events.append,
        )
        self.addCleanup(forward.close)
        verdict = yield ask(forward)
        self.assertEqual(verdict.status, 503)
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("refused", warning["reason"])

    @inlineCallbacks
    def test_a_slow_service_fails_closed_after_the_timeout(self) -> Any:
        """A service that never answers is a 503 once the timeout has passed."""
        from twisted.internet import reactor

        forward = self.setUpService("/slow", timeout=0.2)
        started = reactor.seconds()
        verdict = yield ask(forward)
        self.assertEqual(verdict.status, 503)
        self.assertGreaterEqual(reactor.seconds() - started, 0.2)
        [warning] = self.warnings()
        self.assertEqual(warning["reason"], "no answer within 0.2 s")

    @inlineCallbacks
    def test_an_endless_body_is_not_read_to_its_end(self) -> Any:
        """A 2xx whose body never ends is decided once 64 KiB of it is read, not at the timeout."""
        forward = self.setUpService("/auth/endless", timeout=60)
        verdict = yield ask(forward)
        self.assertEqual(verdict.identity, ALICE)

    test_an_endless_body_is_not_read_to_its_end.timeout = 10  # type: ignore[attr-defined]


class MemoryTests(SynchronousTestCase):
    """ForwardAuth on a Clock, the service answering in memory (treq.testing)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.service = AuthService(sessions={f"valid-{u}": u for u in ("alice", "bob", "carol")})
        self.agent = RequestTraversalAgent(self.service.resource())
        self.events: list[dict] = []
        self.metrics = Metrics()

    def forward(self, path: str = "/auth", **settings: Any) -> ForwardAuth:
        return ForwardAuth(
            self.clock,  # type: ignore[arg-type]
            ForwardAuthSettings("http://auth.internal:4180" + path, **settings),
            self.agent,
            self.events.append,
            self.metrics,
        )

    def test_an_allow_is_cached_for_its_cookies_until_it_expires(self) -> None:
        """Within cacheSeconds the same cookies are let through unasked; then asked again."""
        forward = self.forward(cacheSeconds=10)
        first = self.successResultOf(ask(forward))
        self.clock.advance(9.9)
        again = self.successResultOf(ask(forward, uri=b"/static/app.js"))
        self.assertEqual((again, len(self.service.requests)), (first, 1))
        self.assertEqual(again.identity, ALICE)
        self.clock.advance(0.1)
        self.successResultOf(ask(forward))
        self.assertEqual(len(self.service.requests), 2)
        hits = sample(self.metrics, "stproxy_auth_total", method="forward", result="ok")
        self.assertEqual((hits, sample(self.metrics, "stproxy_forward_auth_seconds_count")), (3, 2))

    def test_other_cookies_or_hosts_are_asked_about(self) -> None:
        """A cached allow is only for the exact Cookie lines and host it was given for."""
        forward = self.forward(cacheSeconds=60)
        self.successResultOf(ask(forward))
        bob = self.successResultOf(ask(forward, [b"session=valid-bob"]))
        self.successResultOf(ask(forward, [b"session=valid-alice", b"x=1"]))
        self.successResultOf(ask(forward, host=b"other.example"))
        self.assertEqual(bob.identity["user"], "bob")
        self.assertEqual(len(self.service.requests), 4)

    def test_refusals_and_requests_without_cookies_are_never_cached(self) -> None:
        """A 401 is asked again each time, and so is a request with no cookies at all."""
        forward = self.forward(cacheSeconds=60)
        for cookies in ([b"session=expired"], [b"session=expired"], None, [], None):
            self.assertEqual(self.successResultOf(ask(forward, cookies)).status, 401)
        self.assertEqual(len(self.service.requests), 5)

    def test_without_a_cache_time_nothing_is_cached(self) -> None:
        """By default (cacheSeconds 0) every check asks the service."""
        forward = self.forward()
        for _ in range(3):
            self.assertTrue(self.successResultOf(ask(forward)).allowed)
        self.assertEqual(len(self.service.requests), 3)

    def test_the_cache_forgets_the_least_recently_used_first(self) -> None:
        """Past CACHE_ENTRIES sessions, the one used longest ago is asked about again."""
        self.patch(forwardauth, "CACHE_ENTRIES", 2)
        forward = self.forward(cacheSeconds=60)
        alice, bob, carol = ([f"session=valid-{u}".encode()] for u in ("alice", "bob", "carol"))
        for cookies in (alice, bob, alice, carol):  # carol pushes bob out, not alice
            self.successResultOf(ask(forward, cookies))
        self.assertEqual(len(self.service.requests), 3)
        self.successResultOf(ask(forward, alice))
        self.assertEqual(len(self.service.requests), 3)
        self.successResultOf(ask(forward, bob))
        self.assertEqual(len(self.service.requests), 4)

    def test_the_timeout_runs_on_the_reactor_clock(self) -> None:
        """A check of a silent service waits until the timeout, then is a 503."""
        forward = self.forward("/slow", timeout=3)
        d = ask(forward)
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).status, 503)

    def test_a_cancelled_check_is_not_a_failure_of_the_service(self) -> None:
        """The caller cancelling (its client gone) gives a 503 with no warning or metric."""
        forward = self.forward("/slow")
        d = ask(forward)
        d.cancel()
        self.assertEqual(self.successResultOf(d).status, 503)
        self.assertEqual(self.events, [])
        self.assertEqual(sample(self.metrics, "stproxy_forward_auth_seconds_count"), 0)

    def test_an_agent_that_raises_is_a_503(self) -> None:
        """Even an agent raising at once makes a 503 verdict, never a failed Deferred."""

        class Raising:
            def request(self, *args: Any) -> Any:
                raise RuntimeError("no")

        forward = ForwardAuth(self.clock, ForwardAuthSettings("http://a/auth"), Raising())  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(ask(forward)).status, 503)

    def test_no_cookie_reaches_a_log_event(self) -> None:
        """Whatever the answer, no log event holds a cookie value or the service's Set-Cookie."""
        for path in ("/auth", "/error", "/slow", "/forbidden"):
            forward = self.forward(path, timeout=1, signin="/signin")
            for cookies in ([b"session=valid-alice"], [b"session=secret-token-123"]):
                for navigation in (False, True):
                    d = ask(forward, cookies, navigation)
                    self.clock.advance(1)
                    self.successResultOf(d)
        self.assertTrue(self.events, "the failures logged nothing")
        text = repr(self.events)
        for secret in ("valid-alice", "secret-token-123", "session=", "Max-Age"):
            self.assertNotIn(secret, text)


@pytest.mark.parametrize(
    ("copyHeaders", "expected"),
    [
        # oauth2-proxy's, as listed by default
        (
            forwardauth.DEFAULT_COPY_HEADERS,
            {
                b"x-auth-request-user": "user",
                b"x-auth-request-email": "email",
                b"x-auth-request-groups": "groups",
            },
        ),
        # oauth2-proxy's own names win over others that would fit
        (
            ("X-Auth-Request-Preferred-Username", "X-Auth-Request-User"),
            {b"x-auth-request-user": "user"},
        ),
        # Authelia
        (
            ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"),
            {b"remote-user": "user", b"remote-groups": "groups", b"remote-email": "email"},
        ),
        # Authentik
        (
            ("X-Authentik-Username", "X-Authentik-Groups", "X-Authentik-Email"),
            {
                b"x-authentik-username": "user",
                b"x-authentik-groups": "groups",
                b"x-authentik-email": "email",
            },
        ),
        # a header about email or groups is never the user
        (("X-User-Email", "X-User-Groups"), {b"x-user-email": "email", b"x-user-groups": "groups"}),
        # nothing that names anyone
        (("X-Tenant",), {}),
    ],
)
def test_copied_headers_name_the_user(copyHeaders: tuple[str, ...], expected: dict) -> None:
    """Which copied header carries the user, the email and the groups."""
    assert identityHeaders(copyHeaders) == expected


@pytest.mark.parametrize(
    "settings",
    [
        {"url": "ftp://auth/x"},
        {"url": "/oauth2/auth"},
        {"url": "http:///no-host"},
        {"url": "http://auth/a b"},
        {"url": "http://auth/x", "signin": "//evil.example/x"},
        {"url": "http://auth/x", "signin": "javascript:alert(1)"},
        {"url": "http://auth/x", "cacheSeconds": -1},
        {"url": "http://auth/x", "timeout": 0},
        {"url": "http://auth/x", "copyHeaders": ("X-User: evil",)},
    ],
)
def test_bad_settings_are_refused_at_once(settings: dict) -> None:
    """A URL that is not http(s), a sign-in that is neither URL nor path, bad numbers or names."""
    with pytest.raises(ValueError):
        ForwardAuthSettings(**settings)


def test_good_settings_are_taken() -> None:
    """An https URL, a sign-in path on the proxy's host, and a cache time are all accepted."""
    settings = ForwardAuthSettings("https://auth.example/oauth2/auth", signin="/oauth2/start")
    assert (settings.signin, settings.cacheSeconds, settings.timeout) == ("/oauth2/start", 0, 5)


class RefreshedSessionTests(SynchronousTestCase):
    """An allow that refreshes the session's cookie (oauth2-proxy does): the browser gets it, once."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.service = AuthService(sessions={"valid-alice": "alice"})

    def forward(self, **settings: Any) -> ForwardAuth:
        agent = RequestTraversalAgent(self.service.resource())
        settings = ForwardAuthSettings("http://auth.internal:4180/auth/refresh", **settings)
        return ForwardAuth(self.clock, settings, agent)  # type: ignore[arg-type]

    def test_the_allow_carries_the_service_set_cookie_for_the_browser(self) -> None:
        """A 2xx's Set-Cookie goes with the verdict, to be added to the response."""
        verdict = self.successResultOf(ask(self.forward()))
        self.assertTrue(verdict.allowed)
        self.assertEqual(verdict.cookies, ((b"set-cookie", b"session=refreshed; Path=/; HttpOnly"),))
        self.assertNotIn(b"set-cookie", [name for name, _ in verdict.headers])

    def test_a_cached_allow_sets_no_cookie_again(self) -> None:
        """The cache keeps no cookie: a remembered allow sets none (the browser already has it)."""
        forward = self.forward(cacheSeconds=60)
        self.assertTrue(self.successResultOf(ask(forward)).cookies)
        again = self.successResultOf(ask(forward))
        self.assertEqual((again.allowed, again.cookies, len(self.service.requests)), (True, (), 1))
        self.assertNotIn(b"refreshed", repr(forward._cache).encode())
