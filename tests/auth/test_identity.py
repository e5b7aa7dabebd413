"""
The identity headers (stproxy.auth.identity): every managed name is stripped from a client's
request whatever its case or count, the headers going upstream are built only from what stproxy
established (and never hold a line break), and the Streamlit configuration printed for them is
valid TOML naming the headers actually configured.
"""

from __future__ import annotations

import tomllib

import pytest
from twisted.web.http_headers import Headers

from stproxy.auth.identity import KEYS, IdentityHeaders
from stproxy.auth.verdict import allow

RENAMED = IdentityHeaders(
    user="Remote-User",
    email="Remote-Email",
    groups="Remote-Groups",
    clientCert="X-Client-Subject",
    copied=("X-Auth-Request-User", "X-Auth-Request-Access-Token"),
)


def test_managed_holds_every_name_lower_case() -> None:
    """The managed set is the five kinds of name, lower-case bytes, the copied ones included."""
    assert RENAMED.managed == frozenset(
        {
            b"remote-user",
            b"remote-email",
            b"remote-groups",
            b"x-client-subject",
            b"x-auth-request-user",
            b"x-auth-request-access-token",
        }
    )
    assert IdentityHeaders().managed == frozenset(
        {
            b"x-forwarded-user",
            b"x-forwarded-email",
            b"x-forwarded-groups",
            b"x-forwarded-client-cert",
        }
    )


@pytest.mark.parametrize(
    "name",
    [
        b"Remote-User",
        b"remote-user",
        b"REMOTE-USER",
        b"rEmOtE-eMaIl",
        b"remote-groups",
        b"X-CLIENT-SUBJECT",
        b"x-auth-request-user",
        b"X-Auth-Request-Access-Token",
    ],
)
def test_strip_removes_a_managed_name_in_any_case_and_count(name: bytes) -> None:
    """Every copy of a managed header is gone, whatever case the client wrote it in, however many lines."""
    headers = Headers()
    headers.addRawHeader(name, b"mallory")
    headers.addRawHeader(name.swapcase(), b"mallory")
    headers.addRawHeader(name, b"eve")
    headers.addRawHeader(b"Cookie", b"a=1")
    RENAMED.strip(headers)
    assert not headers.hasHeader(name)
    assert [n for n, _ in headers.getAllRawHeaders()] == [b"Cookie"]


def test_strip_leaves_unmanaged_headers_alone() -> None:
    """Headers stproxy does not manage (the default names when renamed, others) pass untouched."""
    headers = Headers(
        {
            b"X-Forwarded-User": [b"someone"],
            b"X-Forwarded-For": [b"192.0.2.9"],
            b"Authorization": [b"Basic eDp5"],
        }
    )
    RENAMED.strip(headers)
    assert headers.getRawHeaders(b"x-forwarded-user") == [b"someone"]
    assert headers.getRawHeaders(b"x-forwarded-for") == [b"192.0.2.9"]
    assert headers.getRawHeaders(b"authorization") == [b"Basic eDp5"]


def test_upstream_names_each_known_field_in_key_order() -> None:
    """user, email, groups under their configured names, then the certificate subject, then the extra pairs."""
    identity = {"groups": "admins,staff", "email": "alice@example.com", "user": "alice"}
    extra = ((b"X-Auth-Request-User", b"alice"),)
    pairs = RENAMED.upstream(identity, "CN=alice,O=stproxy tests", extra)
    assert pairs == (
        (b"Remote-User", b"alice"),
        (b"Remote-Email", b"alice@example.com"),
        (b"Remote-Groups", b"admins,staff"),
        (b"X-Client-Subject", b"CN=alice,O=stproxy tests"),
        (b"X-Auth-Request-User", b"alice"),
    )
    assert KEYS == ("user", "email", "groups")


def test_upstream_leaves_out_what_is_unknown_or_empty() -> None:
    """No identity and no certificate: nothing; an empty e-mail is no header at all."""
    headers = IdentityHeaders()
    assert headers.upstream({}) == ()
    assert headers.upstream({"user": "alice", "email": ""}) == ((b"X-Forwarded-User", b"alice"),)
    assert headers.upstream(allow("forward").identity) == ()


def test_upstream_encodes_values_as_utf_8() -> None:
    """A user name outside ASCII travels as its UTF-8 bytes."""
    assert IdentityHeaders().upstream({"user": "zoë"}) == ((b"X-Forwarded-User", "zoë".encode()),)


@pytest.mark.parametrize(
    "bad", ["alice\r\nX-Admin: yes", "alice\nX-Admin: yes", "ali\rce", "ali\x00ce"]
)
def test_upstream_drops_values_that_cannot_be_a_header_line(bad: str) -> None:
    """A CR, LF or NUL in any value (identity, subject or extra) leaves that header out, not the others."""
    headers = IdentityHeaders()
    pairs = headers.upstream(
        {"user": bad, "email": "alice@example.com"},
        subject=bad,
        extra=((b"X-Auth-Request-User", bad.encode()), (b"X-Auth-Request-Groups", b"staff")),
    )
    assert pairs == (
        (b"X-Forwarded-Email", b"alice@example.com"),
        (b"X-Auth-Request-Groups", b"staff"),
    )


def test_streamlit_config_is_toml_mapping_the_three_headers() -> None:
    """The printed lines parse as TOML: [server] trustedUserHeaders maps each header to its st.user key."""
    parsed = tomllib.loads(IdentityHeaders().streamlitConfig())
    assert parsed == {
        "server": {
            "trustedUserHeaders": {
                "X-Forwarded-User": "user",
                "X-Forwarded-Email": "email",
                "X-Forwarded-Groups": "groups",
            }
        }
    }


def test_streamlit_config_follows_renamed_headers() -> None:
    """Renamed headers are the ones printed; the certificate and copied headers are not st.user keys."""
    parsed = tomllib.loads(RENAMED.streamlitConfig())
    assert parsed["server"]["trustedUserHeaders"] == {
        "Remote-User": "user",
        "Remote-Email": "email",
        "Remote-Groups": "groups",
    }
    assert RENAMED.streamlitConfig().startswith("[server]\n")
