"""Which headers cross the proxy, and how this hop is recorded (stproxy.http.headers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from stproxy.http.headers import (
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
    """Property: whatever arrives, nothing hop-by-hop or Connection-listed leaves."""
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
    assert kept <= sent
