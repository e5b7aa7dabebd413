"""
The gate (stproxy.auth.gate): the configured steps run in order, the first refusal is the answer
and no later step runs, the identities of the steps that let a request through are merged (the
first user kept, later e-mail and groups added, headers concatenated), pass-through prefixes skip
every step; the client certificate's CN as the user; what the Basic and forward-auth steps are
given; and which requests are browser navigations.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer

from auth_fakes import StubStep, VerifiedTLSTransport, certificate
from stproxy.http.headers import TrustedProxies
from stproxy.auth.gate import (
    BasicStep,
    CertificateUser,
    ForwardStep,
    Gate,
    clientOf,
    isNavigation,
)
from stproxy.auth.verdict import Verdict, allow, refuse
from stproxy.ops.metrics import Metrics

_case = SynchronousTestCase()


class FakeRequest:
    """Just what the gate and its steps read of a twisted.web request."""

    def __init__(
        self,
        method: bytes = b"GET",
        uri: bytes = b"/",
        headers: dict[bytes, list[bytes]] | None = None,
        transport: Any = None,
        secure: bool = False,
        peer: Any = IPv4Address("TCP", "192.0.2.7", 40000),
    ) -> None:
        self.method = method
        self.uri = uri
        self.path = uri.split(b"?", 1)[0]
        self.requestHeaders = Headers(headers or {})
        self.transport = transport
        self.channel = None
        self._secure = secure
        self._peer = peer

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def isSecure(self) -> bool:
        return self._secure

    def getClientAddress(self) -> Any:
        return self._peer


def decided(d: Deferred[Verdict]) -> Verdict:
    """The verdict a gate has already reached."""
    return _case.successResultOf(d)


class Ordered(StubStep):
    """A stub step that also notes its name in a shared list when it is asked."""

    def __init__(self, name: str, order: list[str], verdict: Verdict | None) -> None:
        super().__init__(verdict)
        self.name, self.order = name, order

    def check(self, request: Any) -> Deferred[Verdict]:
        self.order.append(self.name)
        return super().check(request)


def test_steps_run_in_order_and_all_must_allow() -> None:
    """Each step is asked once, in the order given, about the request itself."""
    order: list[str] = []
    steps = [Ordered(name, order, allow(name)) for name in ("cert", "htpasswd", "forward")]
    request = FakeRequest()
    verdict = decided(Gate(steps).check(request))
    assert verdict.allowed
    assert order == ["cert", "htpasswd", "forward"]
    assert all(step.requests == [request] for step in steps)


def test_the_first_refusal_is_the_answer_and_later_steps_do_not_run() -> None:
    """A refusal by the second step is the verdict; the third step is never asked."""
    order: list[str] = []
    denied = refuse("htpasswd", 401, "no credentials", (b"www-authenticate", b'Basic realm="x"'))
    steps = [
        Ordered("cert", order, allow("cert", {"user": "alice"})),
        Ordered("htpasswd", order, denied),
        Ordered("forward", order, allow("forward")),
    ]
    verdict = decided(Gate(steps).check(FakeRequest()))
    assert verdict == denied
    assert order == ["cert", "htpasswd"]
    assert steps[2].requests == []


def test_a_refusal_by_the_first_step_stops_everything() -> None:
    """The first step's 429 is the answer, with its Retry-After; nothing after it runs."""
    throttled = refuse("htpasswd", 429, "too many", (b"retry-after", b"42"))
    later = StubStep(allow("forward"))
    verdict = decided(Gate([StubStep(throttled), later]).check(FakeRequest()))
    assert (verdict.status, verdict.headers) == (429, ((b"retry-after", b"42"),))
    assert later.requests == []


def test_identities_are_merged_the_first_user_kept() -> None:
    """
    The earlier step's user stays even when a later one names another; the later one's e-mail
    and groups are added; the upstream headers of both are kept, in order; the method is the
    first step's.
    """
    first = allow("cert", {"user": "alice"}, ((b"x-first", b"1"),))
    second = allow(
        "forward",
        {"user": "bob", "email": "alice@example.com", "groups": "admins"},
        ((b"x-auth-request-user", b"bob"), (b"x-second", b"2")),
    )
    verdict = decided(Gate([StubStep(first), StubStep(second)]).check(FakeRequest()))
    assert verdict.allowed
    assert verdict.identity == {"user": "alice", "email": "alice@example.com", "groups": "admins"}
    assert verdict.headers == (
        (b"x-first", b"1"),
        (b"x-auth-request-user", b"bob"),
        (b"x-second", b"2"),
    )
    assert verdict.method == "cert"


def test_a_step_naming_nobody_takes_the_next_ones_user() -> None:
    """A first step that lets the request through as nobody leaves the user to the next step."""
    gate = Gate([StubStep(allow("forward")), StubStep(allow("htpasswd", {"user": "carol"}))])
    verdict = decided(gate.check(FakeRequest()))
    assert verdict.identity == {"user": "carol"}
    assert verdict.method == "forward"


def test_no_steps_lets_every_request_through_as_nobody() -> None:
    """A gate with no steps allows, with no identity and no headers."""
    verdict = decided(Gate([]).check(FakeRequest()))
    assert verdict.allowed and verdict.identity == {} and verdict.headers == ()


def test_a_pending_step_holds_the_later_ones_until_it_decides() -> None:
    """The second step is only asked once the first has allowed; the gate fires after both."""
    first, second = StubStep(), StubStep(allow("forward", {"email": "a@example.com"}))
    d = Gate([first, second]).check(FakeRequest())
    _case.assertNoResult(d)
    assert second.requests == []
    first.pending[0].callback(allow("htpasswd", {"user": "alice"}))
    assert decided(d).identity == {"user": "alice", "email": "a@example.com"}
    assert len(second.requests) == 1


def test_a_failing_step_fails_the_gate_rather_than_allowing() -> None:
    """A step whose Deferred fails (against its contract) never turns into an allowed verdict."""
    later = StubStep(allow("forward"))

    class Broken:
        def check(self, request: Any) -> Deferred[Verdict]:
            return fail(RuntimeError("checker exploded"))

    d = Gate([Broken(), later]).check(FakeRequest())
    _case.failureResultOf(d, RuntimeError)
    assert later.requests == []


@pytest.mark.parametrize(
    "path", [b"/oauth2/", b"/oauth2/callback", b"/oauth2/sign_in?rd=/", b"/oauth2"]
)
def test_passthrough_prefixes_skip_every_step(path: bytes) -> None:
    """A path under a pass-through prefix (as appAuth gives them) is allowed as nobody, no step asked."""
    step = StubStep(refuse("htpasswd", 401, "no"))
    verdict = decided(Gate([step], [b"/oauth2/", b"/oauth2"]).check(FakeRequest(uri=path)))
    assert verdict.allowed and verdict.method == "passthrough"
    assert verdict.identity == {} and verdict.headers == ()
    assert step.requests == []


@pytest.mark.parametrize("path", [b"/", b"/app/oauth2/", b"/_stcore/stream", b"/OAUTH2/"])
def test_other_paths_are_checked_despite_passthrough(path: bytes) -> None:
    """Only paths that start with a pass-through prefix skip the steps."""
    step = StubStep(refuse("htpasswd", 401, "no"))
    verdict = decided(Gate([step], [b"/oauth2/", b"/oauth2"]).check(FakeRequest(uri=path)))
    assert verdict.status == 401
    assert len(step.requests) == 1


def test_the_query_does_not_make_a_passthrough() -> None:
    """The prefix is matched on the path, not on a query that happens to hold it."""
    step = StubStep(refuse("htpasswd", 401, "no"))
    request = FakeRequest(uri=b"/?next=/oauth2/")
    assert decided(Gate([step], [b"/oauth2/"]).check(request)).status == 401


def test_certificate_user_is_the_verified_common_name() -> None:
    """A TLS connection whose verified chain starts with alice's certificate is alice."""
    transport = VerifiedTLSTransport([certificate("alice"), certificate("stproxy test CA")])
    verdict = decided(CertificateUser().check(FakeRequest(transport=transport, secure=True)))
    assert verdict == allow("cert", {"user": "alice"})
    assert transport.handle.asked == [True]


def test_certificate_user_reads_the_channels_transport_when_the_request_has_none() -> None:
    """The channel's transport counts too (twisted.web requests reach theirs that way)."""
    request = FakeRequest()
    request.channel = type(
        "Channel", (), {"transport": VerifiedTLSTransport([certificate("bob")])}
    )()
    assert decided(CertificateUser().check(request)).identity == {"user": "bob"}


@pytest.mark.parametrize(
    "transport, why",
    [
        (None, "no transport at all"),
        (StringTransport(), "a plain connection"),
        (VerifiedTLSTransport([]), "TLS without a verified client certificate"),
        (VerifiedTLSTransport([certificate(None)]), "a certificate without a CN"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_certificate_user_refuses_with_401_when_nobody_is_named(transport: Any, why: str) -> None:
    """With no verified certificate naming someone, the answer is 401: there is nobody to name."""
    verdict = decided(CertificateUser().check(FakeRequest(transport=transport)))
    assert (verdict.status, verdict.method) == (401, "cert"), why
    assert verdict.identity == {}
    assert "certificate" in verdict.reason


@implementer(ISSLTransport)
class Handleless:
    """A TLS transport (as it says) that gives no handle to read the certificate from."""


def test_certificate_user_refuses_a_tls_transport_without_a_handle() -> None:
    """No way to read the verified chain is no certificate: 401."""
    verdict = decided(CertificateUser().check(FakeRequest(transport=Handleless())))
    assert verdict.status == 401


def test_certificate_users_are_counted_by_result() -> None:
    """With metrics, each check counts as method=cert, result ok or denied."""
    metrics = Metrics()
    step = CertificateUser(metrics)
    decided(step.check(FakeRequest(transport=VerifiedTLSTransport([certificate("alice")]))))
    decided(step.check(FakeRequest(transport=StringTransport())))
    decided(step.check(FakeRequest(transport=StringTransport())))
    sample = metrics.registry.get_sample_value
    assert sample("stproxy_auth_total", {"method": "cert", "result": "ok"}) == 1
    assert sample("stproxy_auth_total", {"method": "cert", "result": "denied"}) == 2


class RecordingBasic:
    """Stands in for BasicAuth: records what the step hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes | None, str]] = []

    def check(self, authorization: bytes | None, client: str) -> Deferred[Verdict]:
        self.calls.append((authorization, client))
        return succeed(allow("htpasswd", {"user": "alice"}))


def test_basic_step_gives_the_authorization_header_and_the_client_address() -> None:
    """BasicStep passes the Authorization value and the peer's address, and returns BasicAuth's verdict."""
    basic = RecordingBasic()
    request = FakeRequest(headers={b"authorization": [b"Basic YWxpY2U6eA=="]})
    verdict = decided(BasicStep(basic).check(request))  # type: ignore[arg-type]
    assert basic.calls == [(b"Basic YWxpY2U6eA==", "192.0.2.7")]
    assert verdict.identity == {"user": "alice"}


class RecordingForward:
    """Stands in for ForwardAuth: records what the step asks it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def check(self, *args: Any) -> Deferred[Verdict]:
        self.calls.append(args)
        return succeed(refuse("forward", 302, "sign in", (b"location", b"/signin")))


def test_forward_step_asks_about_the_request_as_it_came() -> None:
    """Method, target, Host, scheme, every Cookie line, whether it is a navigation, and the peer."""
    forward = RecordingForward()
    request = FakeRequest(
        b"GET",
        b"/page?x=1",
        {
            b"host": [b"app.example"],
            b"cookie": [b"a=1", b"session=s"],
            b"sec-fetch-mode": [b"navigate"],
        },
        secure=True,
    )
    verdict = decided(ForwardStep(forward).check(request))  # type: ignore[arg-type]
    assert forward.calls == [
        (b"GET", b"/page?x=1", b"app.example", "https", [b"a=1", b"session=s"], True, "192.0.2.7")
    ]
    assert verdict.status == 302


def test_forward_step_without_host_or_cookies_on_plain_http() -> None:
    """No Host gives an empty host, no Cookie gives None, a plain connection is http."""
    forward = RecordingForward()
    decided(ForwardStep(forward).check(FakeRequest(b"POST", b"/x")))  # type: ignore[arg-type]
    assert forward.calls == [(b"POST", b"/x", b"", "http", None, False, "192.0.2.7")]


def test_client_of_is_the_peer_host_or_a_dash() -> None:
    """The peer's IP address; an address without a host (a UNIX socket) is "-"."""
    assert clientOf(FakeRequest()) == "192.0.2.7"
    assert clientOf(FakeRequest(peer=UNIXAddress(b"/run/stproxy.sock"))) == "-"


def test_behind_a_trusted_proxy_the_client_is_the_last_untrusted_forwarded_address() -> None:
    """
    Through a --trust-forwarded load balancer, failures count against the client it names (the
    last X-Forwarded-For hop no trusted proxy holds), not against the balancer; an untrusted
    peer's own X-Forwarded-For is never believed.
    """
    trusted = TrustedProxies(["192.0.2.0/24", "10.0.0.0/8"])
    chain = {b"x-forwarded-for": [b"203.0.113.9, 198.51.100.4", b"10.1.2.3"]}
    assert clientOf(FakeRequest(headers=chain), trusted) == "198.51.100.4"
    assert clientOf(FakeRequest(headers={b"x-forwarded-for": [b"10.1.2.3"]}), trusted) == "192.0.2.7"
    assert clientOf(FakeRequest(headers=chain)) == "192.0.2.7"
    forward = RecordingForward()
    decided(ForwardStep(forward, trusted).check(FakeRequest(headers=chain)))  # type: ignore[arg-type]
    assert forward.calls[0][-1] == "198.51.100.4"
    basic = RecordingBasic()
    decided(BasicStep(basic, trusted).check(FakeRequest(headers=chain)))  # type: ignore[arg-type]
    assert basic.calls[0][1] == "198.51.100.4"


@pytest.mark.parametrize(
    "method, headers, expected",
    [
        (b"GET", {b"sec-fetch-mode": [b"navigate"]}, True),
        (b"GET", {b"sec-fetch-mode": [b" Navigate "]}, True),
        (b"GET", {b"accept": [b"text/html,application/xhtml+xml,*/*;q=0.8"]}, True),
        (b"GET", {b"sec-fetch-mode": [b"navigate"], b"accept": [b"application/json"]}, True),
        (b"GET", {b"sec-fetch-mode": [b"cors"], b"accept": [b"text/html"]}, False),
        (b"GET", {b"sec-fetch-mode": [b"no-cors"]}, False),
        (b"GET", {b"accept": [b"application/json"]}, False),
        (b"GET", {}, False),
        (b"HEAD", {b"sec-fetch-mode": [b"navigate"]}, False),
        (b"POST", {b"sec-fetch-mode": [b"navigate"], b"accept": [b"text/html"]}, False),
        (b"POST", {b"accept": [b"text/html"]}, False),
        (
            b"GET",
            {
                b"upgrade": [b"websocket"],
                b"sec-fetch-mode": [b"navigate"],
                b"accept": [b"text/html"],
            },
            False,
        ),
        (b"GET", {b"upgrade": [b"websocket"], b"sec-fetch-mode": [b"websocket"]}, False),
    ],
)
def test_is_navigation(method: bytes, headers: dict[bytes, list[bytes]], expected: bool) -> None:
    """A GET saying Sec-Fetch-Mode: navigate, or (without the header) accepting HTML; no upgrade, no other method."""
    assert isNavigation(FakeRequest(method, b"/", headers)) is expected
