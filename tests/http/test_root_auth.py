"""
Authentication at the root of the resource tree (stproxy.http.root.ProxyRoot with a Gate), through
a real ProxySite in memory (``auth_fakes.GatedProxy``): a refusal is answered by the proxy with the
verdict's status, reason phrase, headers and a page, and never reaches the upstream; an allowed
request reaches it with the identity headers stproxy set and none of the client's forged copies
(with or without a gate); a client gone while the gate decides gets nothing; a broken gate gives
500. The same for WebSocket handshakes, whose session log line names the user, and the access log
(combined line and JSON event) names the user too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.web.resource import Resource

from auth_fakes import LOOPBACK, GatedProxy, StubStep, certificate, handshake, request
from site_connection import Recorder, parse
from stproxy.auth.gate import CertificateUser, Gate
from stproxy.auth.identity import IdentityHeaders
from stproxy.auth.verdict import Verdict, allow, refuse
from stproxy.http.request import ProxyRequest
from stproxy.http.site import buildSite
from stproxy.testing.http import UpstreamRequest
from stproxy.websocket.handshake import parseRequestHead

FORGED = (
    b"X-Forwarded-User: mallory",
    b"x-forwarded-user: eve",
    b"X-FORWARDED-EMAIL: mallory@evil.example",
    b"X-Forwarded-Groups: admins",
    b"X-Forwarded-Client-Cert: CN=admin",
    b"X-Auth-Request-User: mallory",
)
IDENTITY = IdentityHeaders(copied=("X-Auth-Request-User", "X-Auth-Request-Email"))

#: Forwarding headers believed or not: from a --trust-forwarded peer the forwarding filter lets
#: X-Forwarded-User through, so only the root's own stripping keeps a forged copy out.
TRUST = pytest.mark.parametrize("trusted", [(), ("127.0.0.1",)], ids=["untrusted", "trusted"])
ALICE = allow(
    "forward",
    {"user": "alice", "email": "alice@example.com", "groups": "admins,staff"},
    ((b"X-Auth-Request-User", b"alice"), (b"X-Auth-Request-Email", b"alice@example.com")),
)


def gated(
    verdict: Verdict | None, identity: IdentityHeaders = IDENTITY, **kwargs: Any
) -> tuple[GatedProxy, StubStep]:
    """A proxy whose one step answers C{verdict} (None: leaves it pending)."""
    step = StubStep(verdict)
    return GatedProxy(Gate([step]), identity, **kwargs), step


def sent(proxy: GatedProxy) -> UpstreamRequest:
    """The one request the upstream got."""
    [upstream] = proxy.agent.requests
    return upstream


def answer(upstream: UpstreamRequest, body: bytes = b"ok") -> None:
    """The upstream answers 200 with C{body}."""
    response = upstream.respond(200, length=len(body))
    response.deliver(body)
    response.finish()


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "status, phrase, header",
    [
        (401, b"Unauthorized", (b"WWW-Authenticate", b'Basic realm="stproxy", charset="UTF-8"')),
        (
            302,
            b"Found",
            (b"Location", b"https://auth.example/start?rd=http%3A%2F%2Fapp.example%2F"),
        ),
        (429, b"Too Many Requests", (b"Retry-After", b"42")),
        (503, b"Service Unavailable", None),
        (403, b"Forbidden", None),
    ],
)
def test_a_refusal_is_answered_by_the_proxy_and_never_reaches_the_upstream(
    status: int, phrase: bytes, header: tuple[bytes, bytes] | None
) -> None:
    """The verdict's status with its own reason phrase, its headers and an HTML page; no upstream request."""
    headers = (header,) if header else ()
    proxy, _ = gated(refuse("htpasswd", status, "because", *headers))
    client = proxy.send(request(b"GET", b"/page", *FORGED))
    [response] = parse(client.output())
    assert client.output().startswith(b"HTTP/1.1 %d %s\r\n" % (status, phrase))
    assert response.status == status
    if header:
        assert response.header(header[0].lower()) == header[1]
    assert response.header(b"content-type") == b"text/html; charset=utf-8"
    assert phrase in response.body and b"htpasswd: because" in response.body
    assert proxy.agent.requests == []


def test_a_refusal_is_logged_once_with_why_and_no_credentials() -> None:
    """One event names the method, target, peer, status and the step's reason; the Authorization value is nowhere."""
    proxy, _ = gated(refuse("htpasswd", 401, "wrong password for alice"))
    proxy.send(request(b"GET", b"/page", b"Authorization: Basic YWxpY2U6c2VjcmV0"))
    [event] = [e for e in proxy.events if e.get("status") == 401]
    assert (event["method"], event["uri"], event["peer"]) == ("GET", "/page", "127.0.0.1")
    assert event["detail"] == "htpasswd: wrong password for alice"
    assert not any("YWxpY2U6c2VjcmV0" in repr(e) or "secret" in repr(e) for e in proxy.events)


def test_a_refused_head_gets_no_body() -> None:
    """HEAD gets the status and headers (Content-Length of the page) and not one body byte."""
    proxy, _ = gated(refuse("htpasswd", 401, "no", (b"www-authenticate", b"Basic")))
    client = proxy.send(request(b"HEAD", b"/page"))
    head, _, body = client.output().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"\r\nwww-authenticate: basic\r\n" in head.lower() + b"\r\n"
    assert body == b""
    assert int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) > 0
    assert proxy.agent.requests == []


def test_a_refusal_keeps_the_connection_for_the_next_request() -> None:
    """After a 401 the client may send its credentials on the same connection."""
    proxy, step = gated(refuse("htpasswd", 401, "no"))
    client = proxy.connect()
    client.send(request(b"GET", b"/a"))
    step.verdict = allow("htpasswd", {"user": "alice"})
    client.send(request(b"GET", b"/b"))
    assert sent(proxy).uri.endswith(b"/b")
    assert sent(proxy).headers.getRawHeaders(b"x-forwarded-user") == [b"alice"]
    assert not client.transport.disconnecting


# ------------------------------------------------------------------------------ allowed


@TRUST
def test_an_allowed_request_reaches_the_upstream_as_its_user_without_forgeries(
    trusted: tuple[str, ...],
) -> None:
    """X-Forwarded-User/Email/Groups and the auth service's copied headers are stproxy's alone."""
    proxy, step = gated(ALICE, trusted=trusted)
    client = proxy.send(request(b"GET", b"/page?x=1", *FORGED, b"Cookie: session=s"))
    headers = sent(proxy).headers
    assert headers.getRawHeaders(b"x-forwarded-user") == [b"alice"]
    assert headers.getRawHeaders(b"x-forwarded-email") == [b"alice@example.com"]
    assert headers.getRawHeaders(b"x-forwarded-groups") == [b"admins,staff"]
    assert headers.getRawHeaders(b"x-auth-request-user") == [b"alice"]
    assert headers.getRawHeaders(b"x-auth-request-email") == [b"alice@example.com"]
    assert not headers.hasHeader(b"x-forwarded-client-cert")
    assert headers.getRawHeaders(b"cookie") == [b"session=s"]
    flat = repr(list(headers.getAllRawHeaders())).lower()
    assert "mallory" not in flat and "eve" not in flat
    answer(sent(proxy))
    [response] = parse(client.output())
    assert (response.status, response.body) == (200, b"ok")
    [checked] = step.requests
    assert not checked.requestHeaders.hasHeader(b"x-forwarded-user")  # stripped before the gate


def test_the_auth_services_cookie_reaches_the_browser_beside_the_upstreams() -> None:
    """An allow's Set-Cookie (oauth2-proxy refreshing its session) is added to the response; the app's stays."""
    refreshed = (b"set-cookie", b"_oauth2_proxy=new; Path=/; HttpOnly")
    proxy, _ = gated(allow("forward", {"user": "alice"}, cookies=(refreshed,)))
    client = proxy.send(request(b"GET", b"/page", b"Cookie: _oauth2_proxy=old"))
    upstream = sent(proxy)
    assert upstream.headers.getRawHeaders(b"cookie") == [b"_oauth2_proxy=old"]
    assert not upstream.headers.hasHeader(b"set-cookie")
    response = upstream.respond(200, headers={b"set-cookie": [b"app=1"]}, length=2)
    response.deliver(b"ok")
    response.finish()
    [answered] = parse(client.output())
    assert answered.status == 200
    assert sorted(answered.headers[b"set-cookie"]) == [b"_oauth2_proxy=new; Path=/; HttpOnly", b"app=1"]


def test_the_auth_services_cookie_is_on_the_proxys_own_error_page() -> None:
    """An allowed request whose upstream is unreachable: the 502 page still sets the refreshed cookie."""
    refreshed = (b"set-cookie", b"_oauth2_proxy=new; Path=/; HttpOnly")
    proxy, _ = gated(allow("forward", {"user": "alice"}, cookies=(refreshed,)))
    client = proxy.send(request(b"GET", b"/page", b"Cookie: _oauth2_proxy=old"))
    sent(proxy).fail(ConnectionRefusedError("refused"))
    head = client.output().split(b"\r\n\r\n")[0]  # the page is chunked: its head is enough
    assert head.startswith(b"HTTP/1.1 502 ")
    assert head.count(b"Set-Cookie:") == 1
    assert b"\r\nSet-Cookie: _oauth2_proxy=new; Path=/; HttpOnly\r\n" in head


@TRUST
def test_without_a_gate_forged_identity_headers_are_stripped_and_none_added(
    trusted: tuple[str, ...],
) -> None:
    """With no authentication at all, no client can name a user: every managed header is removed."""
    proxy = GatedProxy(None, IDENTITY, trusted=trusted)
    proxy.send(request(b"GET", b"/", *FORGED, b"X-Other: kept"))
    headers = sent(proxy).headers
    for name in IDENTITY.managed:
        assert not headers.hasHeader(name), name
    assert headers.getRawHeaders(b"x-other") == [b"kept"]


@TRUST
def test_renamed_identity_headers_are_the_ones_set_and_stripped(trusted: tuple[str, ...]) -> None:
    """With --user-header X-Webauth-User (a name no forwarding rule knows), that is the header set and stripped."""
    identity = IdentityHeaders(user="X-Webauth-User", clientCert="X-Client-Subject")
    proxy, _ = gated(allow("htpasswd", {"user": "alice"}), identity, trusted=trusted)
    forged = (b"x-webauth-user: mallory", b"X-WEBAUTH-USER: eve", b"X-Client-Subject: CN=admin")
    proxy.send(request(b"GET", b"/", *forged))
    headers = sent(proxy).headers
    assert headers.getRawHeaders(b"x-webauth-user") == [b"alice"]
    assert not headers.hasHeader(b"x-client-subject")
    assert not headers.hasHeader(b"x-forwarded-user")


def test_an_identity_with_a_line_break_never_reaches_the_upstream() -> None:
    """A user name holding CR LF is left out rather than splitting the upstream request."""
    proxy, _ = gated(allow("forward", {"user": "alice\r\nX-Admin: yes", "email": "a@example.com"}))
    proxy.send(request(b"GET", b"/"))
    headers = sent(proxy).headers
    assert not headers.hasHeader(b"x-forwarded-user")
    assert not headers.hasHeader(b"x-admin")
    assert headers.getRawHeaders(b"x-forwarded-email") == [b"a@example.com"]


@TRUST
def test_a_passthrough_path_reaches_the_upstream_unchecked_and_unnamed(
    trusted: tuple[str, ...],
) -> None:
    """Under a pass-through prefix no step runs, and forged identity headers are still stripped."""
    step = StubStep(refuse("htpasswd", 401, "no"))
    proxy = GatedProxy(Gate([step], [b"/oauth2/", b"/oauth2"]), IDENTITY, trusted=trusted)
    proxy.send(request(b"GET", b"/oauth2/callback?code=1", *FORGED))
    headers = sent(proxy).headers
    assert step.requests == []
    assert not any(headers.hasHeader(name) for name in IDENTITY.managed)


def test_the_client_certificate_names_the_user_over_tls() -> None:
    """--user-from-cert cn: the verified CN is X-Forwarded-User, the subject X-Forwarded-Client-Cert."""
    proxy = GatedProxy(Gate([CertificateUser()]))
    proxy.send(request(b"GET", b"/", *FORGED), secure=True, chain=[certificate("alice")])
    headers = sent(proxy).headers
    assert headers.getRawHeaders(b"x-forwarded-user") == [b"alice"]
    assert headers.getRawHeaders(b"x-forwarded-client-cert") == [b"CN=alice,O=stproxy tests"]
    assert headers.getRawHeaders(b"x-forwarded-proto") == [b"https"]


def test_without_a_client_certificate_the_certificate_user_gets_401() -> None:
    """A plain connection (or TLS without a verified certificate) cannot be anybody: 401, nothing upstream."""
    proxy = GatedProxy(Gate([CertificateUser()]))
    plain = proxy.send(request(b"GET", b"/"))
    unverified = proxy.send(request(b"GET", b"/"), secure=True, chain=[])
    assert [parse(c.output())[0].status for c in (plain, unverified)] == [401, 401]
    assert proxy.agent.requests == []


@TRUST
def test_without_a_gate_the_verified_subject_still_goes_upstream(trusted: tuple[str, ...]) -> None:
    """With client certificates but no authentication, the subject is sent, the forged one removed."""
    proxy = GatedProxy(trusted=trusted)
    proxy.send(request(b"GET", b"/", *FORGED), secure=True, chain=[certificate("bob")])
    headers = sent(proxy).headers
    assert headers.getRawHeaders(b"x-forwarded-client-cert") == [b"CN=bob,O=stproxy tests"]
    assert not headers.hasHeader(b"x-forwarded-user")


def test_the_request_records_its_identity_and_upstream_headers() -> None:
    """ProxyRoot leaves who the request is from on the ProxyRequest, for the access log and the relay."""
    http = Recorder()
    gate = Gate([StubStep(ALICE)])
    site = buildSite(http, Resource(), MemoryReactorClock(), 0, None, gate=gate, identity=IDENTITY)
    channel = site.buildProtocol(LOOPBACK)
    channel.makeConnection(StringTransport(peerAddress=LOOPBACK))
    channel.dataReceived(request(b"GET", b"/"))
    [rendered] = http.requests
    assert isinstance(rendered, ProxyRequest)
    assert rendered.identity == ALICE.identity
    assert rendered.upstreamHeaders == IDENTITY.upstream(ALICE.identity, None, ALICE.headers)


# ------------------------------------------------------------------------------ pending, gone, broken


def test_nothing_moves_while_the_gate_decides() -> None:
    """A pending check leaves the client waiting and the upstream unasked; allowing then forwards."""
    proxy, step = gated(None)
    client = proxy.send(request(b"GET", b"/page"))
    assert client.output() == b"" and proxy.agent.requests == []
    step.pending[0].callback(allow("htpasswd", {"user": "alice"}))
    assert sent(proxy).headers.getRawHeaders(b"x-forwarded-user") == [b"alice"]
    answer(sent(proxy))
    assert parse(client.output())[0].status == 200


def test_a_late_refusal_is_answered() -> None:
    """A refusal that comes after render returned is written then, with its headers."""
    proxy, step = gated(None)
    client = proxy.send(request(b"GET", b"/page"))
    step.pending[0].callback(
        refuse("forward", 302, "sign in", (b"location", b"/signin?rd=%2Fpage"))
    )
    [response] = parse(client.output())
    assert (response.status, response.header(b"location")) == (302, b"/signin?rd=%2Fpage")
    assert proxy.agent.requests == []


def test_a_slow_gate_is_not_cut_short_by_the_client_timers() -> None:
    """While the gate decides the request is being answered: no header or idle timer closes it."""
    proxy, step = gated(None)
    client = proxy.send(request(b"GET", b"/page"))
    proxy.clock.advance(3600)
    assert client.output() == b"" and not client.transport.disconnecting
    step.pending[0].callback(allow("htpasswd", {"user": "alice"}))
    assert len(proxy.agent.requests) == 1


@pytest.mark.parametrize(
    "verdict", [allow("htpasswd", {"user": "alice"}), refuse("htpasswd", 401, "no")]
)
def test_a_client_gone_while_the_gate_decides_gets_nothing(verdict: Verdict) -> None:
    """Once the client has gone, neither an answer is written nor the upstream asked."""
    proxy, step = gated(None)
    client = proxy.send(request(b"GET", b"/page"))
    client.disconnect()
    step.pending[0].callback(verdict)
    assert client.output() == b""
    assert proxy.agent.requests == []
    assert not any(e.get("log_failure") for e in proxy.events)


class Broken:
    """A step whose check fails instead of deciding."""

    def check(self, request: Any) -> Deferred[Verdict]:
        return fail(RuntimeError("checker exploded"))


def test_a_gate_that_fails_gives_500_and_a_log_line() -> None:
    """An error in the gate fails closed: 500 from the proxy, nothing upstream, one logged failure."""
    proxy = GatedProxy(Gate([Broken()]))
    client = proxy.send(request(b"GET", b"/page"))
    [response] = parse(client.output())
    assert response.status == 500
    assert client.output().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert proxy.agent.requests == []
    [failure] = [e for e in proxy.events if e.get("log_failure") is not None]
    assert failure["log_failure"].check(RuntimeError)
    assert "/page" in formatEvent(failure)


def test_a_gate_that_fails_after_the_client_left_only_logs() -> None:
    """A failure once the client is gone is logged; nothing is written."""
    step = StubStep(None)
    proxy = GatedProxy(Gate([step]))
    client = proxy.send(request(b"GET", b"/page"))
    client.disconnect()
    step.pending[0].errback(RuntimeError("late"))
    assert client.output() == b""
    assert [e for e in proxy.events if e.get("log_failure") is not None]


# ------------------------------------------------------------------------------ WebSocket


def streamlitHeaders(proxy: GatedProxy) -> Any:
    """The header lines of the one handshake Streamlit got."""
    [streamlit] = proxy.streamlit.connections
    assert streamlit.head is not None
    return parseRequestHead(streamlit.head).headers


@TRUST
def test_an_allowed_handshake_reaches_streamlit_as_its_user_without_forgeries(
    trusted: tuple[str, ...],
) -> None:
    """The upstream handshake carries X-Forwarded-User: alice (and the rest), no forged copy."""
    proxy, step = gated(ALICE, trusted=trusted)
    browser = proxy.openWebSocket(handshake(*FORGED))
    assert browser.status == b"HTTP/1.1 101 Switching Protocols"
    headers = streamlitHeaders(proxy)
    assert headers.getRawHeaders(b"x-forwarded-user") == [b"alice"]
    assert headers.getRawHeaders(b"x-forwarded-email") == [b"alice@example.com"]
    assert headers.getRawHeaders(b"x-forwarded-groups") == [b"admins,staff"]
    assert headers.getRawHeaders(b"x-auth-request-user") == [b"alice"]
    assert not headers.hasHeader(b"x-forwarded-client-cert")
    assert len(step.requests) == 1


def test_an_allowed_handshake_sets_the_auth_services_cookie_on_the_101() -> None:
    """oauth2-proxy refreshing its session as a WebSocket opens: the 101 carries its Set-Cookie."""
    refreshed = (b"set-cookie", b"_oauth2_proxy=new; Path=/; HttpOnly")
    proxy, _ = gated(allow("forward", {"user": "alice"}, cookies=(refreshed,)))
    browser = proxy.openWebSocket(handshake(b"Cookie: _oauth2_proxy=old"))
    assert browser.status == b"HTTP/1.1 101 Switching Protocols"
    head = browser.received.split(b"\r\n\r\n")[0].lower()
    assert head.count(b"set-cookie:") == 1
    assert b"set-cookie: _oauth2_proxy=new; path=/; httponly" in head
    assert not streamlitHeaders(proxy).hasHeader(b"set-cookie")


def test_a_handshake_allowed_later_still_opens() -> None:
    """A gate that decides after render returned (forward auth, a bcrypt thread) still relays the upgrade."""
    proxy, step = gated(None)
    browser = proxy.openWebSocket(handshake(*FORGED))
    assert browser.received == b"" and proxy.upstream.connections == []
    step.pending[0].callback(allow("htpasswd", {"user": "bob"}))
    proxy.network.flush()
    assert browser.status == b"HTTP/1.1 101 Switching Protocols"
    assert streamlitHeaders(proxy).getRawHeaders(b"x-forwarded-user") == [b"bob"]


def test_a_browser_gone_while_the_gate_decides_opens_nothing_upstream() -> None:
    """A handshake whose browser leaves before the gate allows it never connects to Streamlit."""
    proxy, step = gated(None)
    browser = proxy.openWebSocket(handshake())
    browser.transport.loseConnection()
    proxy.network.flush()
    step.pending[0].callback(allow("htpasswd", {"user": "alice"}))
    proxy.network.flush()
    assert browser.received == b""
    assert proxy.upstream.connections == [] and proxy.streamlit.connections == []


@TRUST
def test_without_a_gate_a_handshake_carries_no_forged_identity(trusted: tuple[str, ...]) -> None:
    """With no authentication, the handshake reaches Streamlit with every managed header removed."""
    proxy = GatedProxy(None, IDENTITY, trusted=trusted)
    proxy.openWebSocket(handshake(*FORGED))
    headers = streamlitHeaders(proxy)
    assert not any(headers.hasHeader(name) for name in IDENTITY.managed)


def test_a_refused_handshake_gets_401_and_no_upstream_connection() -> None:
    """The gate's 401 with WWW-Authenticate answers the upgrade; Streamlit is never connected to."""
    proxy, _ = gated(refuse("htpasswd", 401, "no credentials", (b"www-authenticate", b"Basic")))
    browser = proxy.openWebSocket(handshake())
    assert browser.status == b"HTTP/1.1 401 Unauthorized"
    [response] = parse(browser.received)
    assert response.header(b"www-authenticate") == b"Basic"
    assert proxy.upstream.connections == []
    assert proxy.streamlit.connections == []


def test_the_session_log_line_names_the_user() -> None:
    """When the session ends its one line says "from 127.0.0.1 (alice)", and carries user=alice."""
    proxy, _ = gated(allow("htpasswd", {"user": "alice"}))
    browser = proxy.openBrowser({"X-Forwarded-User": "mallory"})
    assert browser.opened
    assert streamlitHeaders(proxy).getRawHeaders(b"x-forwarded-user") == [b"alice"]
    browser.sendClose(1000)
    proxy.network.flush()
    [event] = [e for e in proxy.events if e.get("log_websocket")]
    assert event["user"] == "alice"
    assert "from 127.0.0.1 (alice) ended" in formatEvent(event)


def test_the_session_log_line_without_a_user_names_only_the_address() -> None:
    """With no authentication the line names the address alone, and user is None."""
    proxy = GatedProxy()
    browser = proxy.openBrowser({"X-Forwarded-User": "mallory"})
    browser.sendClose(1000)
    proxy.network.flush()
    [event] = [e for e in proxy.events if e.get("log_websocket")]
    assert event["user"] is None
    assert "from 127.0.0.1 ended" in formatEvent(event)
    assert "mallory" not in formatEvent(event)


# ------------------------------------------------------------------------------ access log


def test_the_json_access_event_names_the_user() -> None:
    """The access event of an authenticated request carries user=alice; without a gate, None."""
    proxy, _ = gated(allow("htpasswd", {"user": "alice"}))
    proxy.send(request(b"GET", b"/page", b"X-Forwarded-User: mallory"))
    answer(sent(proxy))
    [event] = proxy.access
    assert (event["user"], event["status"], event["path"]) == ("alice", 200, "/page")
    anonymous = GatedProxy()
    anonymous.send(request(b"GET", b"/page", b"X-Forwarded-User: mallory"))
    answer(sent(anonymous))
    assert anonymous.access[0]["user"] is None


def test_a_refused_request_is_logged_without_a_user() -> None:
    """A 401 is counted and logged as nobody's request."""
    proxy, _ = gated(refuse("htpasswd", 401, "no"))
    proxy.send(request(b"GET", b"/page"))
    [event] = proxy.access
    assert (event["status"], event["user"]) == (401, None)


def test_the_combined_access_log_names_the_user(tmp_path: Path) -> None:
    """--access-log's third field is the user (percent-encoded), and "-" for a request with none."""
    path = tmp_path / "access.log"
    proxy, step = gated(allow("htpasswd", {"user": "alice smith"}), accessLog=str(path))
    proxy.start()
    try:
        proxy.send(request(b"GET", b"/one"))
        answer(proxy.agent.requests[0])
        step.verdict = refuse("htpasswd", 401, "no")
        proxy.send(request(b"GET", b"/two", b"X-Forwarded-User: mallory"))
    finally:
        proxy.stop()
    first, second = path.read_text().splitlines()
    assert first.startswith('"127.0.0.1" - alice%20smith [')
    assert '"GET /one HTTP/1.1" 200 2' in first
    assert second.startswith('"127.0.0.1" - - [')
    assert "mallory" not in second
