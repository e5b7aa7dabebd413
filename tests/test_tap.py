"""Command-line options and assembly (stproxy.tap), inspected without starting anything."""

from __future__ import annotations

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from twisted.python import usage

from stproxy.service import ProxyService
from stproxy.http.site import ProxySite
from stproxy.parse import parseSize
from stproxy.tap import Options, makeService
from stproxy.upstream.address import UpstreamAddress


def parse(*argv: str, environ: dict[str, str] | None = None) -> Options:
    options = Options(environ=environ or {})
    options.exitOnError = False
    options.parseOptions(list(argv))
    return options


def test_defaults_match_the_seed_proxy() -> None:
    """Streamlit on localhost:8501, the proxy on port 8500, INFO logging."""
    options = parse()
    assert options.config.upstream == UpstreamAddress("http", "localhost", 8501)
    assert options.config.listen == ("tcp:8500",)
    assert options.config.logging.level == LogLevel.info


@pytest.mark.parametrize(
    "text, expected",
    [
        ("localhost:8501", UpstreamAddress("http", "localhost", 8501)),
        ("http://st.internal:9000", UpstreamAddress("http", "st.internal", 9000)),
        ("https://st.internal", UpstreamAddress("https", "st.internal", 443)),
        ("http://[::1]:8501", UpstreamAddress("http", "::1", 8501)),
    ],
)
def test_upstream_forms(text: str, expected: UpstreamAddress) -> None:
    assert parse("--upstream", text).config.upstream == expected


def test_listen_is_repeatable() -> None:
    options = parse("--listen", "tcp:8500", "--listen", "tcp:8600:interface=127.0.0.1")
    assert options.config.listen == ("tcp:8500", "tcp:8600:interface=127.0.0.1")


def test_seed_flags_build_upstream_and_listener() -> None:
    options = parse(
        "--streamlit-host", "st", "--streamlit-port", "9501", "--proxy-host", "127.0.0.1", "--proxy-port", "9500"
    )
    assert options.config.upstream == UpstreamAddress("http", "st", 9501)
    assert options.config.listen == ("tcp:9500:interface=127.0.0.1",)


def test_environment_gives_defaults_and_flags_win() -> None:
    environ = {"STREAMLIT_HOST": "envhost", "STREAMLIT_PORT": "7000", "PROXY_HOST": "::1", "PROXY_PORT": "7001"}
    options = parse(environ=environ)
    assert options.config.upstream == UpstreamAddress("http", "envhost", 7000)
    assert options.config.listen == ("tcp:7001:interface=\\:\\:1",)
    options = parse("--streamlit-port", "7100", "--proxy-port", "7101", environ=environ)
    assert options.config.upstream == UpstreamAddress("http", "envhost", 7100)
    assert options.config.listen == ("tcp:7101:interface=\\:\\:1",)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--proxy-port", "70000"], "--proxy-port 70000"),
        (["--streamlit-port", "0"], "--streamlit-port 0"),
        (["--upstream", "ftp://x"], "scheme must be http or https"),
        (["--upstream", "http://x:99999"], "invalid upstream"),
        (["--upstream", "http://x/app"], "give only scheme"),
        (["--listen", "nonsense:foo"], "--listen nonsense:foo"),
        (["--upstream", "x:1", "--streamlit-host", "y"], "not both"),
        (["--listen", "tcp:1", "--proxy-port", "2"], "not both"),
        (["--log-level", "LOUD"], "--log-level LOUD"),
        (["--upstream-timeout", "-1"], "--upstream-timeout"),
        (["--max-body-size", "lots"], "--max-body-size"),
        (["--trust-forwarded", "10.0.0.0/33"], "--trust-forwarded"),
        (["--ws-compression", "maybe"], "--ws-compression"),
        (["--listen", "tcp:99999"], "--listen tcp:99999: port '99999'"),
        (["--admin", "tcp:70000"], "--admin tcp:70000: port '70000'"),
        (["--access-log", "/nonexistent/dir/access.log"], "no such directory"),
        (["--proxy-port", "\u00b2"], "must be a port number"),
        (["--shutdown-timeout", "nan"], "--shutdown-timeout nan"),
        (["--upstream-timeout", "inf"], "--upstream-timeout inf"),
        (["--ws-ping-interval", "nan"], "--ws-ping-interval nan"),
        (["--health-path", "_stcore/health"], "--health-path"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    assert fragment in str(caught.value)


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Like argparse: one line on stderr and status 2, not twistd's page and status 1."""
    options = Options(environ={})
    with pytest.raises(SystemExit) as exited:
        options.parseOptions(["--proxy-port", "70000"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stproxy: error: --proxy-port 70000")


@pytest.mark.parametrize("text, size", [("1048576", 1048576), ("512K", 512 * 1024), ("200M", 200 << 20), ("1GiB", 1 << 30)])
def test_sizes(text: str, size: int) -> None:
    assert parseSize(text) == size


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


def test_make_service_listens_when_started_and_stops_cleanly() -> None:
    reactor = MemoryReactorClock()
    service = makeService(parse("--listen", "tcp:8123", "--upstream", "127.0.0.1:9"), reactor)
    service.startService()
    assert [port for port, *_ in reactor.tcpServers] == [8123]
    d = service.stopService()
    assert d.called
