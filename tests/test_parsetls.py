"""
The TLS flags (stproxy.parsetls): what they build, and the usage errors for the ones that do not
make sense together.
"""

from __future__ import annotations

import re

import pytest
from twisted.python import usage

from option_parsing import parse
from pki import PKI


def test_tls_options_build_the_edge(pki: PKI) -> None:
    """
    The TLS flags build an ssl: listener with its certificate, client CA and minimum version,
    the redirect, HSTS and the upstream CA.
    """
    options = parse(
        "--listen", "ssl:0", *pki.server_args(), "--listen", "tcp:0", "--redirect-http", "tcp:0",
        "--hsts", "600", "--tls-client-ca", pki.ca, "--tls-min-version", "1.3",
        "--upstream", "https://streamlit.internal:8501", "--upstream-ca", pki.ca,
    )  # fmt: skip
    edge = options.config.tls
    assert list(edge.listeners) == ["ssl:0"]
    assert edge.listeners["ssl:0"].minVersion == "1.3"
    assert edge.listeners["ssl:0"].clientCA == pki.ca
    assert (edge.hsts, edge.redirect, edge.upstreamCA) == (600, "tcp:0", pki.ca)
    assert options.config.listen == ("ssl:0", "tcp:0")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--tls-cert", "x.pem"], "--tls-cert needs a TLS listener"),
        (["--hsts", "60"], "--hsts needs a TLS listener"),
        (["--redirect-http", "tcp:80"], "--redirect-http needs a TLS listener"),
        (["--listen", "ssl:0", "SERVER", "--hsts", "a year"], "--hsts a year"),
        (["--listen", "ssl:0", "SERVER", "--tls-min-version", "1.1"], "choose 1.2 or 1.3"),
        (["--listen", "ssl:0", "SERVER", "--tls-reload-interval", "-1"], "--tls-reload-interval -1"),
        (["--listen", "ssl:0", "SERVER", "--tls-reload-interval", "nan"], "--tls-reload-interval nan"),
        (["--listen", "ssl:0", "SERVER", "--redirect-http", "ssl:80"], "must be a plain listener"),
        (["--listen", "ssl:0", "SERVER", "--redirect-http", "nonsense:1"], "--redirect-http nonsense:1"),
        (["--listen", "ssl:0", "SERVER", "--acme-webroot", "/tmp"], "--acme-webroot needs --redirect-http"),
        (["--listen", "ssl:0", "SERVER", "--redirect-port", "443"], "--redirect-port needs --redirect-http"),
        (["--listen", "ssl:0", "SERVER", "--redirect-http", "tcp:80", "--redirect-port", "0"], "--redirect-port 0"),
        (["--upstream-ca", "CA"], "--upstream-ca is for an https:// upstream"),
        (["--upstream-insecure"], "--upstream-insecure is for an https:// upstream"),
        (["--upstream", "https://h:1", "--upstream-ca", "/nope.pem"], "--upstream-ca: /nope.pem: no such file"),
        (["--listen", "ssl:0:method=SSLv3_METHOD", "SERVER"], "--listen ssl:0:method=SSLv3_METHOD: method="),
    ],
)
def test_tls_flag_mistakes_are_usage_errors(pki: PKI, argv: list[str], fragment: str) -> None:
    """
    TLS flags without a TLS listener, with bad values or in combinations that make no sense are
    usage errors naming the flag.
    """
    expanded = []
    for arg in argv:
        expanded += pki.server_args() if arg == "SERVER" else [pki.ca if arg == "CA" else arg]
    with pytest.raises(usage.UsageError, match=re.escape(fragment)):
        parse(*expanded)
