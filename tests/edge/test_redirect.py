"""
The HTTP-to-HTTPS redirect listener (C{--redirect-http}, stproxy.edge.redirect): the Location it
sends, the hosts it refuses, the published port it names, and the ACME challenges it answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from option_parsing import parse
from pki import PKI
from stproxy.edge.redirect import httpsLocation


@pytest.mark.parametrize(
    "host, port, target, location",
    [
        (b"app.example", 443, b"/", b"https://app.example/"),
        (b"app.example:80", 443, b"/a?b=c", b"https://app.example/a?b=c"),
        (b"app.example:8080", 8443, b"/x/y?q=1&r=%20", b"https://app.example:8443/x/y?q=1&r=%20"),
        (b"127.0.0.1:8080", 8443, b"/", b"https://127.0.0.1:8443/"),
        (b"[::1]:8080", 8443, b"/", b"https://[::1]:8443/"),
        (b"my_host-1.internal:8080", 443, b"/", b"https://my_host-1.internal/"),
    ],
)
def test_redirect_location(host: bytes, port: int, target: bytes, location: bytes) -> None:
    """The browser's host, the TLS listener's port (none for 443), the path and query as sent."""
    assert httpsLocation(host, port, target) == location


@pytest.mark.parametrize(
    "host", [b"evil.example/x", b"a@b", b"", b"host:port", b"-x.example", b"app.example\n", b"[not-an-address]"]
)
def test_redirect_refuses_hosts_that_are_not_hosts(host: bytes) -> None:
    """
    A Host header that is not a host name (a path, user info, empty, a bad port or a leading
    dash) is refused rather than put in a Location.
    """
    with pytest.raises(ValueError):
        httpsLocation(host, 443, b"/")


def test_redirect_port_names_the_published_https_port(pki: PKI) -> None:
    """Behind a port mapping (container 8443 published as 443) redirects name the public port."""
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.testing import MemoryReactorClock
    from twisted.web.test.requesthelper import DummyRequest

    from stproxy.tap import makeService

    options = parse(
        "--listen", "ssl:8443", *pki.server_args(), "--redirect-http", "tcp:8080",
        "--redirect-port", "443", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    service = makeService(options, MemoryReactorClock())
    [redirect] = [s for s in service if isinstance(s, StreamServerEndpointService) and s.name == "redirect-http"]
    request = DummyRequest([b"app"])
    request.uri = b"/app?x=1"
    request.requestHeaders.setRawHeaders(b"host", [b"app.example:8080"])
    redirect.factory.resource.render(request)
    assert request.responseHeaders.getRawHeaders(b"location") == [b"https://app.example/app?x=1"]


def test_redirect_listener_answers_acme_challenges_from_the_webroot(tmp_path: Path) -> None:
    """With --acme-webroot, certbot's HTTP-01 token files are served; nothing else from disk."""
    from twisted.web.test.requesthelper import DummyRequest

    from stproxy.edge.redirect import RedirectToHTTPS

    challenges = tmp_path / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "tok_en-1").write_text("tok_en-1.thumbprint")
    (tmp_path / "secret").write_text("no")
    resource = RedirectToHTTPS(lambda: 443, str(tmp_path))

    def get(target: bytes) -> tuple[int, bytes, DummyRequest]:
        request = DummyRequest(target.split(b"/")[1:])
        request.uri = target
        request.requestHeaders.setRawHeaders(b"host", [b"app.example"])
        body = resource.render(request)
        return request.responseCode or 200, body, request

    code, body, _ = get(b"/.well-known/acme-challenge/tok_en-1")
    assert (code, body) == (200, b"tok_en-1.thumbprint")
    assert get(b"/.well-known/acme-challenge/..%2Fsecret")[0] == 404
    assert get(b"/.well-known/acme-challenge/missing")[0] == 404
    code, _, request = get(b"/secret?x")
    assert code == 308
    assert request.responseHeaders.getRawHeaders(b"location") == [b"https://app.example/secret?x"]


def test_a_request_without_host_on_a_unix_socket_gets_400() -> None:
    """An HTTP/1.0 request with no Host on a unix: redirect listener gets 400, not a traceback."""
    from twisted.internet.address import UNIXAddress
    from twisted.web.test.requesthelper import DummyRequest

    from stproxy.edge.redirect import RedirectToHTTPS

    request = DummyRequest([b"page"])
    request.uri = b"/page"
    request.getHost = lambda: UNIXAddress(b"/run/stproxy-redirect.sock")  # type: ignore[method-assign]
    RedirectToHTTPS(lambda: 443).render(request)
    assert request.responseCode == 400
    assert b"not a host name" in b"".join(request.written)
