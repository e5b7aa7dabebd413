"""
The affinity cookie (stproxy.routing.affinity): a value signed for one replica of one route
under one secret reads back as that replica, and anything else (forged, truncated, another
route's, another secret's) reads as no cookie; several cookies of the name are sorted out; the
Set-Cookie attributes; and the replica ids it names (stproxy.routing.replica.replicaId), the
same in every stproxy process.
"""

from __future__ import annotations

import hashlib

import pytest

from stproxy.routing.affinity import DEFAULT_COOKIE, MAC_BYTES, Affinity, randomSecret
from stproxy.routing.replica import replicaId
from stproxy.upstream.address import UpstreamAddress

SECRET = b"k" * 32
ONE = "a1b2c3d4e5f6"
TWO = "0f0e0d0c0b0a"


def affinity(path: str = "/app", secret: bytes = SECRET, name: str = DEFAULT_COOKIE) -> Affinity:
    return Affinity(name, secret, path)


def test_a_signed_value_reads_back_as_its_replica() -> None:
    """The value names the replica, then a dot and a 128-bit MAC in 22 URL-safe characters."""
    cookie = affinity()
    value = cookie.value(ONE)
    replica, dot, mac = value.partition(".")
    assert (replica, dot) == (ONE, ".")
    assert len(mac) == 22 and MAC_BYTES == 16
    assert set(mac) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert cookie.verify(value) == ONE
    assert cookie.value(TWO) != value and cookie.verify(cookie.value(TWO)) == TWO


def test_the_same_secret_reads_another_processs_cookie() -> None:
    """Two stproxy processes given the same secret (two Affinity objects) read each other's values."""
    assert affinity().verify(affinity().value(ONE)) == ONE


def flipped(text: str, at: int) -> str:
    """C{text} with the character at C{at} changed."""
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda v: flipped(v, len(v) - 1), id="last mac character changed"),
        pytest.param(lambda v: flipped(v, len(v) - 22), id="first mac character changed"),
        pytest.param(lambda v: TWO + v[len(ONE) :], id="another replica under this mac"),
        pytest.param(lambda v: v[:-1], id="truncated mac"),
        pytest.param(lambda v: v[: len(ONE) + 1], id="empty mac"),
        pytest.param(lambda v: ONE, id="no mac at all"),
        pytest.param(lambda v: v[len(ONE) :], id="no replica"),
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: v + "x", id="mac with a character more"),
        pytest.param(lambda v: v + ".x", id="a third part"),
        pytest.param(lambda v: v[:-1] + "\u00e9", id="non-ascii mac"),
    ],
)
def test_a_forged_or_damaged_value_reads_as_no_cookie(forge) -> None:
    """A value that is not exactly what this route signed names no replica (None), never an error."""
    cookie = affinity()
    assert cookie.verify(forge(cookie.value(ONE))) is None


def test_another_routes_cookie_reads_as_no_cookie() -> None:
    """The prefix is in the signed text: /other's cookie for the same replica is nothing to /app."""
    other = affinity("/other").value(ONE)
    assert affinity("/app").verify(other) is None
    assert affinity("/other").verify(other) == ONE


def test_a_cookie_signed_under_another_secret_reads_as_no_cookie() -> None:
    """A cookie from a proxy with another secret (or an older one) is not taken."""
    old = affinity(secret=b"o" * 32).value(ONE)
    assert affinity().verify(old) is None


def line(*pairs: str) -> bytes:
    return "; ".join(pairs).encode("latin-1")


def test_no_cookie_header_names_no_replica() -> None:
    """No Cookie line at all, an empty one, or only other cookies: no replica."""
    cookie = affinity()
    assert cookie.replicaIn(None) is None
    assert cookie.replicaIn([]) is None
    assert cookie.replicaIn([b""]) is None
    assert cookie.replicaIn([b"_streamlit_xsrf=abc; other=1"]) is None


def test_the_valid_cookie_wins_among_several_of_its_name_on_one_line() -> None:
    """A forged and another route's cookie before the valid one are passed over."""
    cookie = affinity()
    forged = f"{DEFAULT_COOKIE}={flipped(cookie.value(TWO), len(cookie.value(TWO)) - 1)}"
    foreign = f"{DEFAULT_COOKIE}={affinity('/other').value(TWO)}"
    valid = f"{DEFAULT_COOKIE}={cookie.value(ONE)}"
    assert cookie.replicaIn([line(forged, "x=1", foreign, valid)]) == ONE


def test_the_valid_cookie_wins_across_several_cookie_lines() -> None:
    """Cookies split over several Cookie header lines (HTTP/2 style) are all looked at."""
    cookie = affinity()
    forged = f"{DEFAULT_COOKIE}={cookie.value(TWO)[:-2]}"
    valid = f"{DEFAULT_COOKIE}={cookie.value(ONE)}"
    assert cookie.replicaIn([line("a=1", forged), line("b=2"), line(valid, "c=3")]) == ONE


def test_the_first_valid_cookie_is_taken_when_two_verify() -> None:
    """Two valid cookies of the name (two paths): the first sent, the most specific path, wins."""
    cookie = affinity()
    assert (
        cookie.replicaIn(
            [line(f"{DEFAULT_COOKIE}={cookie.value(TWO)}", f"{DEFAULT_COOKIE}={cookie.value(ONE)}")]
        )
        == TWO
    )


@pytest.mark.parametrize(
    "name",
    [f"x{DEFAULT_COOKIE}", f"{DEFAULT_COOKIE}_old", DEFAULT_COOKIE.upper(), DEFAULT_COOKIE[:-1]],
)
def test_cookies_of_other_names_are_not_read(name: str) -> None:
    """Only a cookie of exactly this name counts, though its value verifies."""
    cookie = affinity()
    assert cookie.replicaIn([line(f"{name}={cookie.value(ONE)}")]) is None


def test_spaces_around_cookie_pairs_are_allowed() -> None:
    """Browsers separate pairs with "; "; extra spaces do not hide the cookie."""
    cookie = affinity()
    assert (
        cookie.replicaIn([b"a=1 ;   " + f"{DEFAULT_COOKIE}={cookie.value(ONE)}  ".encode()]) == ONE
    )


def test_a_cookie_with_bytes_no_browser_sends_names_no_replica() -> None:
    """A non-ASCII value is just not a valid cookie."""
    cookie = affinity()
    assert cookie.replicaIn([f"{DEFAULT_COOKIE}=\u00e9\u00e9.\u00e9".encode("latin-1")]) is None


def test_a_custom_cookie_name_is_read_and_set() -> None:
    """--affinity-cookie renames the cookie, both ways."""
    cookie = affinity(name="route_id")
    assert cookie.replicaIn([line(f"route_id={cookie.value(ONE)}")]) == ONE
    assert cookie.replicaIn([line(f"{DEFAULT_COOKIE}={cookie.value(ONE)}")]) is None
    assert cookie.setCookie(ONE, secure=False).startswith(b"route_id=")


def attributes(header: bytes) -> tuple[str, list[str]]:
    first, *rest = header.decode("ascii").split("; ")
    return first, rest


def test_set_cookie_is_a_session_cookie_for_the_route_path_http_only_and_lax() -> None:
    """Over plain HTTP: Path = the prefix, HttpOnly, SameSite=Lax, no Secure, no Expires or Domain."""
    cookie = affinity("/app")
    first, rest = attributes(cookie.setCookie(ONE, secure=False))
    assert first == f"{DEFAULT_COOKIE}={cookie.value(ONE)}"
    assert rest == ["Path=/app", "HttpOnly", "SameSite=Lax"]


def test_set_cookie_over_tls_is_secure() -> None:
    """Over TLS the cookie is Secure as well."""
    first, rest = attributes(affinity("/").setCookie(ONE, secure=True))
    assert rest == ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"]


def test_the_set_cookie_value_reads_back() -> None:
    """What the proxy sets is what a browser sends back, and it names the replica."""
    cookie = affinity()
    first, _ = attributes(cookie.setCookie(ONE, secure=True))
    assert cookie.replicaIn([first.encode("ascii")]) == ONE


def test_random_secrets_are_long_and_distinct() -> None:
    """Without --affinity-secret-file each process gets 32 random bytes of its own."""
    one, two = randomSecret(), randomSecret()
    assert len(one) == 32 and one != two
    assert affinity(secret=two).verify(affinity(secret=one).value(ONE)) is None


def test_replica_ids_are_derived_from_the_address_alone() -> None:
    """Every stproxy process names a replica alike: 12 hex digits of SHA-256 of scheme://host:port."""
    address = UpstreamAddress("http", "10.0.0.1", 8501)
    expected = hashlib.sha256(b"http://10.0.0.1:8501").hexdigest()[:12]
    assert replicaId(address) == expected
    assert replicaId(UpstreamAddress("http", "10.0.0.1", 8501)) == expected


def test_replica_ids_differ_with_host_port_and_scheme() -> None:
    """Replicas that differ in any part of their address have distinct ids."""
    addresses = [
        UpstreamAddress("http", "10.0.0.1", 8501),
        UpstreamAddress("http", "10.0.0.2", 8501),
        UpstreamAddress("http", "10.0.0.1", 8502),
        UpstreamAddress("https", "10.0.0.1", 8501),
        UpstreamAddress("http", "::1", 8501),
    ]
    ids = [replicaId(address) for address in addresses]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 12 and set(i) <= set("0123456789abcdef") for i in ids)
