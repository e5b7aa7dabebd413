"""
Command-line text into configuration (stproxy.parse): sizes, the flag parsers, and the one-line
usage errors a mistyped command line gets.
"""

from __future__ import annotations

import pytest
from twisted.python import usage

from option_parsing import parse
from stproxy.parse import parseSize
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
