"""Command-line options and assembly (stproxy.tap), inspected without starting anything."""

from __future__ import annotations

from pathlib import Path

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel
from twisted.protocols.tls import TLSMemoryBIOProtocol

from option_parsing import parse
from pki import PKI
from stproxy.edge.certificates import ServerCertificate
from stproxy.http.site import ProxySite
from stproxy.service import ProxyService
from stproxy.tap import makeService
from stproxy.upstream.address import UpstreamAddress


def test_defaults_match_the_seed_proxy() -> None:
    """Streamlit on localhost:8501, the proxy on port 8500, INFO logging."""
    options = parse()
    assert options.config.upstream == UpstreamAddress("http", "localhost", 8501)
    assert options.config.listen == ("tcp:8500",)
    assert options.config.logging.level == LogLevel.info


def test_listen_is_repeatable() -> None:
    """--listen may be given several times, and every listener is kept in order."""
    options = parse("--listen", "tcp:8500", "--listen", "tcp:8600:interface=127.0.0.1")
    assert options.config.listen == ("tcp:8500", "tcp:8600:interface=127.0.0.1")


def test_upstream_has_a_short_form() -> None:
    """-u names the upstream as --upstream does, and the one given is kept."""
    assert parse("-u", "https://st:9501").config.upstream == UpstreamAddress("https", "st", 9501)
    assert parse("--upstream", "st:9501").config.upstream == UpstreamAddress("http", "st", 9501)


def test_seed_flags_build_upstream_and_listener() -> None:
    """
    The seed proxy's --streamlit-host/--streamlit-port and --proxy-host/--proxy-port still
    choose the upstream and the listener.
    """
    options = parse(
        "--streamlit-host", "st", "--streamlit-port", "9501", "--proxy-host", "127.0.0.1", "--proxy-port", "9500"
    )
    assert options.config.upstream == UpstreamAddress("http", "st", 9501)
    assert options.config.listen == ("tcp:9500:interface=127.0.0.1",)


def test_environment_gives_defaults_and_flags_win() -> None:
    """
    STREAMLIT_HOST, STREAMLIT_PORT, PROXY_HOST and PROXY_PORT give the defaults, and flags
    override them.
    """
    environ = {"STREAMLIT_HOST": "envhost", "STREAMLIT_PORT": "7000", "PROXY_HOST": "::1", "PROXY_PORT": "7001"}
    options = parse(environ=environ)
    assert options.config.upstream == UpstreamAddress("http", "envhost", 7000)
    assert options.config.listen == ("tcp:7001:interface=\\:\\:1",)
    options = parse("--streamlit-port", "7100", "--proxy-port", "7101", environ=environ)
    assert options.config.upstream == UpstreamAddress("http", "envhost", 7100)
    assert options.config.listen == ("tcp:7101:interface=\\:\\:1",)


def test_make_service_wires_one_listener_per_endpoint_without_starting() -> None:
    """Every --listen becomes a StreamServerEndpointService serving the one ProxySite."""
    reactor = MemoryReactorClock()
    options = parse("--listen", "tcp:0", "--listen", "tcp:0:interface=127.0.0.1", "--upstream", "127.0.0.1:9")
    service = makeService(options, reactor)
    assert isinstance(service, ProxyService)
    listeners = [s for s in service if isinstance(s, StreamServerEndpointService)]
    assert len(listeners) == 2
    assert all(isinstance(listener.factory, ProxySite) for listener in listeners)
    assert listeners[0].factory is listeners[1].factory
    assert not service.running
    assert reactor.tcpServers == []


def test_make_service_gives_the_head_limit_to_every_proxy_site(pki: PKI) -> None:
    """--max-header-size reaches the public listeners' site and the redirect listener's."""
    options = parse(
        "--listen", "ssl:0", *pki.server_args(), "--redirect-http", "tcp:0",
        "--max-header-size", "32K", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    service = makeService(options, MemoryReactorClock())
    listeners = {s.name: s for s in service if isinstance(s, StreamServerEndpointService)}
    assert listeners["listener-0"].factory.maxHeaderSize == 32 * 1024
    assert listeners["redirect-http"].factory.maxHeaderSize == 32 * 1024


def test_make_service_gives_one_connection_limit_and_the_timeouts_to_every_proxy_site(pki: PKI) -> None:
    """--max-connections is one count for the public listeners and the redirect one, not the admin one; the timeouts reach both."""
    options = parse(
        "--listen", "ssl:0", *pki.server_args(), "--listen", "tcp:0", "--redirect-http", "tcp:0",
        "--max-connections", "7", "--header-timeout", "2", "--upstream", "127.0.0.1:9",
        "--admin", "tcp:0",
    )  # fmt: skip
    reactor = MemoryReactorClock()
    service = makeService(options, reactor)
    sites = {s.name: s.factory for s in service if isinstance(s, StreamServerEndpointService)}
    assert sites["listener-0"].limits.headerTimeout == sites["redirect-http"].limits.headerTimeout == 2
    assert sites["listener-0"].timeOut is None  # twisted.web's own timer is replaced
    service.privilegedStartService()
    try:
        # Every listener, the ssl: one included, is a TCP port here (TLS is above the count).
        limits = [getattr(factory, "limit", None) for _, factory, *_ in reactor.tcpServers]
        assert len(limits) == 4 and limits.count(None) == 1  # the admin listener is not counted
        [limit] = {id(limit): limit for limit in limits if limit is not None}.values()
        assert limit.maximum == 7
    finally:
        service.stopService()


def test_make_service_listens_when_started_and_stops_cleanly() -> None:
    """Once started the service listens on its port, and it stops at once when nothing is open."""
    reactor = MemoryReactorClock()
    service = makeService(parse("--listen", "tcp:8123", "--upstream", "127.0.0.1:9"), reactor)
    service.startService()
    assert [port for port, *_ in reactor.tcpServers] == [8123]
    d = service.stopService()
    assert d.called


def test_make_service_builds_tls_listeners_with_stproxys_own_context(pki: PKI, tmp_path: Path) -> None:
    """
    Without starting anything: the ssl: listener is TLS on the listener's ServerCertificate
    (never Twisted's own ssl: parser), above a TCP port counted against --max-connections, beside
    a plain one; the redirect listener and the reload service are children; the site sends HSTS.
    """
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.testing import MemoryReactorClock

    from stproxy.edge.reload import TLSService as ReloadService
    from stproxy.tap import makeService

    reactor = MemoryReactorClock()
    options = parse(
        "--listen", "ssl:0:interface=127.0.0.1:backlog=7", *pki.server_args(), "--listen", "tcp:0",
        "--redirect-http", "tcp:0", "--hsts", "60", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    service = makeService(options, reactor)
    listeners = {s.name: s for s in service if isinstance(s, StreamServerEndpointService)}
    assert {"listener-0", "listener-1", "redirect-http"} <= set(listeners)
    assert listeners["listener-0"].factory.hstsHeader == b"max-age=60"
    [reload] = [s for s in service if isinstance(s, ReloadService)]
    [certificate] = reload.certificates.values()
    assert isinstance(certificate, ServerCertificate)
    assert certificate.files == options.config.tls.listeners[options.config.listen[0]]
    service.privilegedStartService()
    try:
        assert reactor.sslServers == []
        [(port, counting, backlog, interface)] = [s for s in reactor.tcpServers if s[2] == 7]
        assert (port, backlog, interface) == (0, 7, "127.0.0.1")
        assert len(reactor.tcpServers) == 3  # and the plain listener and the redirect
        connection, transport = counting.buildProtocol(None), StringTransport()
        transport.setTcpNoDelay = lambda enabled: None  # type: ignore[attr-defined]
        connection.makeConnection(transport)
        tls = connection.wrappedProtocol
        assert isinstance(tls, TLSMemoryBIOProtocol)
        assert tls.getHandle().get_context() is certificate.current.options.getContext()
    finally:
        service.stopService()
