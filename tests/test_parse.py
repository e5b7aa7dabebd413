"""
Command-line text into configuration (stproxy.parse): sizes, the flag parsers, and the one-line
usage errors a mistyped command line gets.
"""

from __future__ import annotations

import pytest
from twisted.python import usage

from option_parsing import parse
from stproxy.config import ClientLimits
from stproxy.parse import parseSize, sizeLimit
from stproxy.tap import Options


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
        (["--max-header-size", "lots"], "--max-header-size lots: not a size (use e.g. 65536, 64K, 1M)"),
        (["--max-header-size", "unlimited"], "--max-header-size unlimited: not a size"),
        (["--max-header-size", "512"], "--max-header-size 512: must be at least 1K"),
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
        (["--header-timeout", "0"], "--header-timeout 0: must be a positive number of seconds"),
        (["--idle-timeout", "-5"], "--idle-timeout -5"),
        (["--min-body-rate", "fast"], "--min-body-rate fast: not a rate in bytes per second"),
        (["--max-connections", "0"], "--max-connections 0: must be a whole number of connections"),
        (["--max-connections", "1e3"], "--max-connections 1e3: must be a whole number"),
        # 0 used to lift the limit without a word; "unlimited" says so.
        (["--max-body-size", "0"], "--max-body-size 0: a limit of 0 is refused; write unlimited for no limit"),
        (["--ws-max-message-size", "0K"], "--ws-max-message-size 0K: a limit of 0 is refused; write unlimited"),
        (["--ws-max-message-size", "lots"], "not a size (use e.g. 1048576, 512K, 200M, or unlimited)"),
        (["--ws-max-browser-message-size", "0"], "--ws-max-browser-message-size 0: a limit of 0 is refused"),
        (["--ws-max-browser-message-size", "few"], "--ws-max-browser-message-size few: not a size"),
        # Replicas: one address once per app, however the repeat is spelled.
        (["--upstream", "a:1", "--upstream", "a:1"], "upstream http://a:1 given twice for /"),
        (["-u", "a:1", "--upstream", "http://a:1"], "upstream http://a:1 given twice for /"),
        (["-u", "a:1", "--streamlit-port", "2"], "give either --upstream/--upstream-dns/--route or --streamlit-host/--streamlit-port, not both"),
        (["--route", "/app=a:1", "--streamlit-host", "b"], "or --streamlit-host/--streamlit-port, not both"),
        (["--route", "/app"], "--route /app: write PREFIX=UPSTREAM"),
        (["--route", "/a b=a:1"], "is not a path prefix such as / or /app"),
        (["--route", "/../x=a:1"], "is not a path prefix"),
        (["--route", "/app=a:1", "--route", "/app/admin=b:2"], "routes /app and /app/admin overlap"),
        (["--upstream", "a:1", "--route", "/app=b:2"], "routes / and /app overlap"),
        (["--upstream-dns", "streamlit"], "--upstream-dns streamlit: give the port, as NAME:PORT"),
        (["--route", "/app=dns:streamlit"], "--route streamlit: give the port"),
        (["--discovery-interval", "0"], "--discovery-interval 0: must be a positive number of seconds"),
        (["--replica-drain-timeout", "-1"], "--replica-drain-timeout -1"),
        (["--affinity-cookie", "a b"], "--affinity-cookie 'a b': not a cookie name"),
        (["--affinity-secret-file", "/nonexistent/secret"], "--affinity-secret-file /nonexistent/secret: No such file"),
        (["--resolver", "dns.example"], "--resolver dns.example: 'dns.example' is not an IP address"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], fragment: str) -> None:
    """Each invalid flag value is a usage error whose message names the flag or the problem."""
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
    """Sizes are accepted as plain bytes or with K, M and GiB suffixes."""
    assert parseSize(text) == size


def test_a_repeated_upstream_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The same replica twice is refused on the command line in one line, status 2, rather than counted twice."""
    options = Options(environ={})
    with pytest.raises(SystemExit) as exited:
        options.parseOptions(["--upstream", "a:1", "-u", "a:1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stproxy: error: upstream http://a:1 given twice for /")


def test_upstreams_routes_and_dns_names_make_the_apps() -> None:
    """--upstream and --upstream-dns are replicas of the app at /; --route PREFIX=... of the app at PREFIX, in order."""
    options = Options(environ={})
    options.parseOptions(["--route", "app/=a:1", "--route", "/app=dns:web.svc:8501", "--route", "/admin=https://b:2"])
    [app, admin] = options.config.routes
    assert (app.prefix, [str(a) for a in app.upstreams], [str(a) for a in app.discover]) == ("/app", ["http://a:1"], ["http://web.svc:8501"])
    assert (admin.prefix, [str(a) for a in admin.upstreams], admin.sticky) == ("/admin", ["https://b:2"], False)
    assert app.sticky and app.healthPath == b"/app/_stcore/health"
    options = Options(environ={})
    options.parseOptions(["-u", "a:1", "-u", "b:2", "--upstream-dns", "web:8501"])
    [root] = options.config.routes
    assert [str(a) for a in root.upstreams + root.discover] == ["http://a:1", "http://b:2", "http://web:8501"]
    assert str(options.config.upstream) == "http://a:1"


def test_the_affinity_secret_file_is_read_and_checked(tmp_path) -> None:
    """The secret is read once, stripped, kept out of repr, and refused when shorter than 16 bytes."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123\n")
    options = Options(environ={})
    options.parseOptions(["-u", "a:1", "--affinity-secret-file", str(secret)])
    assert options.config.replicas.secret == b"0123456789abcdef0123"
    assert b"0123456789" not in repr(options.config).encode()
    secret.write_bytes(b"short\n")
    options = Options(environ={})
    options.exitOnError = False
    with pytest.raises(usage.UsageError, match="at least 16 bytes"):
        options.parseOptions(["-u", "a:1", "--affinity-secret-file", str(secret)])


@pytest.mark.parametrize("text, size", [("1048576", 1048576), ("512K", 512 * 1024), ("200M", 200 << 20), ("1GiB", 1 << 30)])
def test_sizes(text: str, size: int) -> None:
    """Sizes are accepted as plain bytes or with K, M and GiB suffixes."""
    assert parseSize(text) == size


@pytest.mark.parametrize("text, size", [("unlimited", 0), ("UNLIMITED", 0), (" Unlimited ", 0), ("1", 1), ("200M", 200 << 20)])
def test_size_limits(text: str, size: int) -> None:
    """A size limit is a size, or "unlimited" in any case, which is 0, the configuration's "none"."""
    assert sizeLimit(text) == size


@pytest.mark.parametrize("text", ["0", "0K", "00M"])
def test_a_zero_size_limit_is_refused(text: str) -> None:
    """0 as a limit is refused rather than quietly meaning no limit at all."""
    with pytest.raises(ValueError, match="write unlimited"):
        sizeLimit(text)


@pytest.mark.parametrize("word", ["unlimited", "Unlimited"])
def test_unlimited_lifts_the_body_and_message_limits(word: str) -> None:
    """--max-body-size unlimited and --ws-max-message-size unlimited configure no limit (0)."""
    config = parse("--max-body-size", word, "--ws-max-message-size", word).config
    assert config.maxBodySize == 0
    assert config.websocket.maxMessageSize == 0


@pytest.mark.parametrize(
    "argv, size",
    [((), 8 << 20), (("--ws-max-browser-message-size", "1M"), 1 << 20), (("--ws-max-browser-message-size", "unlimited"), 0)],
)
def test_ws_max_browser_message_size(argv: tuple[str, ...], size: int) -> None:
    """--ws-max-browser-message-size takes a size limit, 8M by default."""
    assert parse(*argv).config.websocket.maxBrowserMessageSize == size


@pytest.mark.parametrize("argv, size", [((), 64 * 1024), (("--max-header-size", "32K"), 32 * 1024)])
def test_max_header_size(argv: tuple[str, ...], size: int) -> None:
    """--max-header-size takes a size like --max-body-size, 64K by default."""
    assert parse(*argv).config.maxHeaderSize == size


def test_client_limits() -> None:
    """--header-timeout, --idle-timeout, --min-body-rate and --max-connections; 30 s, 75 s, 1K/s and from ulimit by default."""
    assert parse().config.clients == ClientLimits(30.0, 75.0, 1024, None)
    argv = ("--header-timeout", "1", "--idle-timeout", "300", "--min-body-rate", "0", "--max-connections", "5")
    assert parse(*argv).config.clients == ClientLimits(1.0, 300.0, 0, 5)
    assert parse("--min-body-rate", "4K/s").config.clients.minBodyRate == 4096


def test_websocket_compression_is_off_unless_asked_for() -> None:
    """Deflate costs a tenth of the relay's throughput and ~110 KB a session: off by default, on when asked."""
    options = Options(environ={})
    options.parseOptions([])
    assert options.config.websocket.compression is False
    options = Options(environ={})
    options.parseOptions(["--ws-compression", "on"])
    assert options.config.websocket.compression is True


@pytest.mark.parametrize("value", ["-", "off"])
def test_access_log_stdout_and_off_need_no_file(value: str) -> None:
    """--access-log - (standard output) and off (none) are not paths to check."""
    assert parse("--access-log", value).config.logging.accessLog == value
