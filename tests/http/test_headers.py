"""Which headers cross the proxy, and how this hop is recorded (stproxy.http.headers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from stproxy.http import headers as headers_module
from stproxy.http.headers import (
    _REMEMBERED_PEERS,
    ASSERTED_BY_PROXIES,
    HOP_BY_HOP,
    Peer,
    TrustedProxies,
    forwardingHeaders,
    requestHeadersForUpstream,
    responseHeadersForClient,
    withoutHopByHop,
)

CLIENT = Peer(address="192.0.2.7", host=b"app.example:8500", secure=False)


def test_hop_by_hop_headers_are_not_forwarded() -> None:
    """Every RFC 9110 hop-by-hop field, and any Proxy-* field, stays on its own connection."""
    headers = Headers({name: [b"x"] for name in HOP_BY_HOP})
    headers.setRawHeaders(b"Proxy-Anything", [b"secret"])
    headers.setRawHeaders(b"Accept", [b"text/html"])
    result = withoutHopByHop(headers)
    assert [name for name, _ in result.getAllRawHeaders()] == [b"Accept"]


def test_fields_named_by_connection_are_not_forwarded() -> None:
    """A field listed in Connection is hop-by-hop for this message, whatever its name."""
    headers = Headers(
        {b"Connection": [b"close, X-Foo", b" x-bar "], b"X-Foo": [b"1"], b"X-Bar": [b"2"], b"X-Baz": [b"3"]}
    )
    assert list(withoutHopByHop(headers).getAllRawHeaders()) == [(b"X-Baz", [b"3"])]


def test_repeated_headers_and_cookies_pass_byte_for_byte() -> None:
    """Repeats keep every value in order; cookie values are not re-encoded."""
    headers = Headers(
        {
            b"Cookie": [b"_streamlit_xsrf=2|abc|def|123", b"other=%7C"],
            b"X-Repeat": [b"one", b"two", b"three"],
        }
    )
    result = requestHeadersForUpstream(headers, CLIENT, TrustedProxies())
    assert result.getRawHeaders(b"cookie") == [b"_streamlit_xsrf=2|abc|def|123", b"other=%7C"]
    assert result.getRawHeaders(b"x-repeat") == [b"one", b"two", b"three"]


def test_framing_is_left_to_the_client_and_host_is_kept() -> None:
    """Content-Length/Transfer-Encoding are recomputed; the browser's Host goes upstream."""
    headers = Headers(
        {b"Host": [b"app.example:8500"], b"Content-Length": [b"5"], b"Transfer-Encoding": [b"chunked"]}
    )
    result = requestHeadersForUpstream(headers, CLIENT, TrustedProxies())
    assert result.getRawHeaders(b"host") == [b"app.example:8500"]
    assert not result.hasHeader(b"content-length")
    assert not result.hasHeader(b"transfer-encoding")


def test_expect_is_answered_by_the_proxy_not_forwarded() -> None:
    """The body is already read when the request goes upstream: nothing is left to expect."""
    headers = Headers({b"Expect": [b"100-continue"], b"Content-Type": [b"application/octet-stream"]})
    result = requestHeadersForUpstream(headers, CLIENT, TrustedProxies())
    assert not result.hasHeader(b"expect")
    assert result.hasHeader(b"content-type")


def test_response_keeps_set_cookie_and_encoding_but_not_framing() -> None:
    """
    Responses keep every Set-Cookie and Content-Encoding but lose Content-Length and hop-by-hop
    fields, which the proxy recomputes.
    """
    headers = Headers(
        {
            b"Set-Cookie": [b"a=1", b"b=2"],
            b"Content-Encoding": [b"gzip"],
            b"Content-Length": [b"10"],
            b"Keep-Alive": [b"timeout=5"],
        }
    )
    result = responseHeadersForClient(headers)
    assert result.getRawHeaders(b"set-cookie") == [b"a=1", b"b=2"]
    assert result.getRawHeaders(b"content-encoding") == [b"gzip"]
    assert not result.hasHeader(b"content-length")
    assert not result.hasHeader(b"keep-alive")


def test_response_fields_named_by_the_upstreams_connection_are_dropped() -> None:
    """A response field the upstream's Connection header lists stays on the upstream connection."""
    headers = Headers({b"Connection": [b"X-Hop, keep-alive"], b"X-Hop": [b"secret"], b"X-Kept": [b"yes"]})
    assert list(responseHeadersForClient(headers).getAllRawHeaders()) == [(b"X-Kept", [b"yes"])]


def test_forwarding_headers_describe_an_untrusted_client_and_replace_forgeries() -> None:
    """A client cannot choose the address or scheme Streamlit sees."""
    forged = Headers(
        {
            b"X-Forwarded-For": [b"6.6.6.6"],
            b"X-Forwarded-Proto": [b"https"],
            b"X-Forwarded-Host": [b"evil.example"],
            b"Forwarded": [b"for=6.6.6.6"],
        }
    )
    result = forwardingHeaders(forged, CLIENT, TrustedProxies())
    assert result.getRawHeaders(b"x-forwarded-for") == [b"192.0.2.7"]
    assert result.getRawHeaders(b"x-forwarded-proto") == [b"http"]
    assert result.getRawHeaders(b"x-forwarded-host") == [b"app.example:8500"]
    assert result.getRawHeaders(b"forwarded") == [
        b'for=192.0.2.7;host="app.example:8500";proto=http'
    ]


#: What a client may claim through a proxy's headers, and why stproxy must not believe it.
CLAIMS = [
    # where the client is
    (b"X-Real-IP", b"6.6.6.6", "the client address nginx-style apps log and rate-limit by"),
    (b"X-Forwarded-Port", b"443", "the port the client connected to"),
    (b"X-Forwarded-Prefix", b"/admin", "a path prefix a proxy in front stripped"),
    (b"True-Client-IP", b"6.6.6.6", "Akamai's client address"),
    (b"CF-Connecting-IP", b"6.6.6.6", "Cloudflare's client address"),
    # what the client asked for, as an auth service's check is told
    (b"X-Forwarded-Uri", b"/allowed", "the request an auth_request-style check decides on"),
    (b"X-Forwarded-Method", b"GET", "the method an auth_request-style check decides on"),
    # who the client is (set by an authenticating proxy: oauth2-proxy, Authelia, Apache)
    (b"X-Forwarded-User", b"admin", "the authenticated user"),
    (b"X-Forwarded-Email", b"admin@example.com", "the authenticated user's email"),
    (b"X-Forwarded-Groups", b"admins", "the authenticated user's groups"),
    (b"X-Forwarded-Preferred-Username", b"admin", "the authenticated user's name"),
    (b"X-Auth-Request-User", b"admin", "oauth2-proxy's user"),
    (b"X-Auth-Request-Email", b"admin@example.com", "oauth2-proxy's email"),
    (b"X-Auth-Request-Groups", b"admins", "oauth2-proxy's groups"),
    (b"Remote-User", b"admin", "Apache's and Authelia's user"),
]


def test_the_claims_table_is_the_list_stproxy_keeps() -> None:
    """Every identity or address header the table names is in ASSERTED_BY_PROXIES, or is X-Real-IP, which stproxy sets."""
    assert {name.lower() for name, _, _ in CLAIMS} == ASSERTED_BY_PROXIES | {b"x-real-ip"}


@pytest.mark.parametrize("name, value, meaning", CLAIMS, ids=[c[0].decode() for c in CLAIMS])
def test_an_untrusted_client_cannot_claim_an_address_or_identity(name: bytes, value: bytes, meaning: str) -> None:
    """A header claiming where or who the client is never reaches Streamlit as a client sent it, in any case or number."""
    forged = Headers({name: [value], name.upper(): [value + b"2"], b"Accept": [b"*/*"]})
    result = forwardingHeaders(forged, CLIENT, TrustedProxies())
    sent = result.getRawHeaders(name, [])
    assert value not in sent and value + b"2" not in sent, meaning
    assert result.getRawHeaders(b"accept") == [b"*/*"]


@pytest.mark.parametrize("name, value, meaning", CLAIMS, ids=[c[0].decode() for c in CLAIMS])
def test_a_trusted_proxy_can_say_where_and_who_the_client_is(name: bytes, value: bytes, meaning: str) -> None:
    """From a --trust-forwarded peer, the address and identity headers it sets pass unchanged."""
    result = forwardingHeaders(Headers({name: [value]}), CLIENT, TrustedProxies(["192.0.2.0/24"]))
    assert result.getRawHeaders(name) == [value], meaning


def test_x_real_ip_is_the_client_address() -> None:
    """X-Real-IP names the connected client, as nginx sets it, replacing a forged one."""
    result = forwardingHeaders(Headers({b"X-Real-IP": [b"6.6.6.6"]}), CLIENT, TrustedProxies())
    assert result.getRawHeaders(b"x-real-ip") == [b"192.0.2.7"]
    ipv6 = Peer(address="2001:db8::1", host=b"app.example", secure=True)
    assert forwardingHeaders(Headers(), ipv6, TrustedProxies()).getRawHeaders(b"x-real-ip") == [b"2001:db8::1"]


def test_x_real_ip_from_a_trusted_proxy_is_kept_or_set() -> None:
    """Behind a trusted proxy its X-Real-IP is kept, as nginx's realip would; without one, the peer is named."""
    trusted = TrustedProxies(["192.0.2.0/24"])
    kept = forwardingHeaders(Headers({b"X-Real-IP": [b"203.0.113.9"]}), CLIENT, trusted)
    assert kept.getRawHeaders(b"x-real-ip") == [b"203.0.113.9"]
    assert forwardingHeaders(Headers(), CLIENT, trusted).getRawHeaders(b"x-real-ip") == [b"192.0.2.7"]


def test_a_peer_without_an_address_sends_no_x_real_ip() -> None:
    """A client on a UNIX socket has no address: X-Real-IP is dropped rather than set to something unparseable."""
    peer = Peer(address=None, host=b"app.example", secure=False)
    result = forwardingHeaders(Headers({b"X-Real-IP": [b"6.6.6.6"]}), peer, TrustedProxies())
    assert not result.hasHeader(b"x-real-ip")


def test_forwarding_headers_from_a_trusted_proxy_are_appended_to() -> None:
    """Behind another proxy, the chain grows and the original scheme and host are kept."""
    incoming = Headers(
        {
            b"X-Forwarded-For": [b"203.0.113.9"],
            b"X-Forwarded-Proto": [b"https"],
            b"X-Forwarded-Host": [b"app.example"],
            b"Forwarded": [b"for=203.0.113.9;proto=https"],
        }
    )
    result = forwardingHeaders(incoming, CLIENT, TrustedProxies(["192.0.2.0/24"]))
    assert result.getRawHeaders(b"x-forwarded-for") == [b"203.0.113.9, 192.0.2.7"]
    assert result.getRawHeaders(b"x-forwarded-proto") == [b"https"]
    assert result.getRawHeaders(b"x-forwarded-host") == [b"app.example"]
    assert result.getRawHeaders(b"forwarded") == [
        b'for=203.0.113.9;proto=https, for=192.0.2.7;host="app.example:8500";proto=http'
    ]


def test_ipv6_and_tls_peers_in_forwarded() -> None:
    """
    An IPv6 client over TLS is recorded in Forwarded with its address quoted in brackets and
    proto=https.
    """
    peer = Peer(address="2001:db8::1", host=b"app.example", secure=True)
    result = forwardingHeaders(Headers(), peer, TrustedProxies())
    assert result.getRawHeaders(b"forwarded") == [b'for="[2001:db8::1]";host=app.example;proto=https']
    assert result.getRawHeaders(b"x-forwarded-proto") == [b"https"]


def test_trusted_proxies_match_networks_and_reject_nonsense() -> None:
    """
    --trust-forwarded matches addresses inside its networks only, and refuses an invalid
    network.
    """
    trusted = TrustedProxies(["10.0.0.0/8", "::1"])
    assert "10.1.2.3" in trusted
    assert "::1" in trusted
    assert "11.0.0.1" not in trusted
    assert None not in trusted
    assert "not-an-ip" not in trusted
    try:
        TrustedProxies(["10.0.0.0/33"])
    except ValueError:
        pass
    else:
        raise AssertionError("an invalid network was accepted")


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)


@given(
    names=st.lists(_token, min_size=1, max_size=8),
    listed=st.lists(_token, max_size=4),
)
def test_no_hop_by_hop_or_connection_listed_header_ever_crosses(
    names: list[bytes], listed: list[bytes]
) -> None:
    """Property: whatever arrives, either way, nothing hop-by-hop or Connection-listed leaves."""
    headers = Headers()
    for name in names + list(HOP_BY_HOP):
        headers.addRawHeader(name, b"1")
    if listed:
        headers.addRawHeader(b"Connection", b", ".join(listed))
    result = requestHeadersForUpstream(headers, CLIENT, TrustedProxies())
    sent = {name.lower() for name, _ in result.getAllRawHeaders()}
    assert not sent & HOP_BY_HOP
    assert not sent & {name.lower() for name in listed}
    assert not any(name.startswith(b"proxy-") for name in sent)
    kept = {n.lower() for n in names} - HOP_BY_HOP - {n.lower() for n in listed}
    kept = {n for n in kept if not n.startswith(b"proxy-") and n not in (b"content-length",)}
    kept -= ASSERTED_BY_PROXIES  # "remote-user" fits the alphabet: an untrusted client's is dropped
    assert kept <= sent
    returned = {name.lower() for name, _ in responseHeadersForClient(headers).getAllRawHeaders()}
    assert not returned & (HOP_BY_HOP | {name.lower() for name in listed})


_claimed = st.sampled_from(sorted(ASSERTED_BY_PROXIES | {b"x-real-ip"}))
_cases = st.sampled_from([str.lower, str.upper, str.title])


@given(
    names=st.lists(_token, max_size=6),
    claims=st.lists(st.tuples(_claimed, _cases, st.binary(max_size=12)), min_size=1, max_size=6),
    secure=st.booleans(),
)
def test_no_untrusted_client_claim_ever_crosses(
    names: list[bytes], claims: list[tuple[bytes, object, bytes]], secure: bool
) -> None:
    """Property: whatever an untrusted client sends, nothing it claims about its address or identity leaves."""
    headers = Headers()
    for name in names:
        headers.addRawHeader(name, b"1")
    for name, case, value in claims:
        headers.addRawHeader(case(name.decode()).encode(), b"claim:" + value)  # type: ignore[operator]
    peer = Peer(address="192.0.2.7", host=b"app.example", secure=secure)
    result = requestHeadersForUpstream(headers, peer, TrustedProxies())
    for name, values in result.getAllRawHeaders():
        assert not any(value.startswith(b"claim:") for value in values), name
        assert name.lower() not in ASSERTED_BY_PROXIES
    assert result.getRawHeaders(b"x-real-ip") == [b"192.0.2.7"]
    assert result.getRawHeaders(b"x-forwarded-for") == [b"192.0.2.7"]


_forwarding = st.sampled_from(
    sorted(ASSERTED_BY_PROXIES | {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})
)


@given(
    names=st.lists(st.one_of(_token, _forwarding), max_size=8),
    trusted=st.booleans(),
    address=st.sampled_from(["192.0.2.7", "2001:db8::7", None]),
)
def test_the_one_copy_path_sends_what_filtering_then_forwarding_would(
    names: list[bytes], trusted: bool, address: str | None
) -> None:
    """Property: the request headers, made in one filtered copy, are exactly the hop-by-hop filter then the forwarding rules."""
    headers = Headers()
    for number, name in enumerate(names):
        headers.addRawHeader(name, b"%d" % number)
    peer = Peer(address=address, host=b"app.example", secure=False)
    proxies = TrustedProxies(["0.0.0.0/0", "::/0"] if trusted else [])
    expected = forwardingHeaders(withoutHopByHop(headers, [b"content-length", b"expect"]), peer, proxies)
    result = requestHeadersForUpstream(headers, peer, proxies)
    assert sorted(result.getAllRawHeaders()) == sorted(expected.getAllRawHeaders())


def test_a_peer_address_is_parsed_once_however_many_requests_it_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trusted-proxy check parses each peer address once and remembers the answer; with no trusted networks it parses none."""
    parsed: list[str] = []
    real = headers_module.ipaddress.ip_address
    monkeypatch.setattr(headers_module.ipaddress, "ip_address", lambda text: parsed.append(text) or real(text))
    proxies = TrustedProxies(["10.0.0.0/8"])
    answers = ["10.1.2.3" in proxies for _ in range(3)] + ["192.0.2.7" in proxies for _ in range(3)]
    assert answers == [True] * 3 + [False] * 3
    assert parsed == ["10.1.2.3", "192.0.2.7"]
    assert "10.1.2.3" not in TrustedProxies() and parsed == ["10.1.2.3", "192.0.2.7"]


def test_the_remembered_peer_addresses_are_bounded() -> None:
    """However many distinct peers ask, the trusted-proxy check remembers at most a fixed number of answers, still right."""
    proxies = TrustedProxies(["10.0.0.0/8"])
    for n in range(_REMEMBERED_PEERS + 10):
        assert f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" in proxies
    assert len(proxies._known) <= _REMEMBERED_PEERS
    assert "192.0.2.7" not in proxies
