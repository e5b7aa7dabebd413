"""
The user in the access log (stproxy.http.accesslog): the combined line's third field (nginx's
$remote_user) holds the authenticated user, percent-encoded so that no name can shift the fields,
and "-" without one; L{userOf} reads it from the request; the JSON access event carries it.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.web.http import combinedLogFormatter

from stproxy.http.accesslog import Accounting, combinedLogWithUser, userOf
from stproxy.ops.metrics import Metrics

TIMESTAMP = "[07/Dec/2026:03:34:35 +0000]"


class LoggedRequest:
    """What the formatters read of a finished request."""

    def __init__(self, identity: dict[str, str] | None = None, address: Any = None) -> None:
        if identity is not None:
            self.identity = identity
        self.address = address or IPv4Address("TCP", "192.0.2.7", 40000)
        self.method = b"GET"
        self.uri = b"/page?x=1"
        self.clientproto = b"HTTP/1.1"
        self.code = 200
        self.sentLength = 2
        self.startedWriting = True
        self.headers = {b"referer": b"https://app.example/", b"user-agent": b"curl/8"}

    def getClientAddress(self) -> Any:
        return self.address

    def getHeader(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


def fields(line: str) -> list[str]:
    """The combined line split as a log parser would: quoted fields whole, the time in two."""
    return shlex.split(line)


def test_no_user_is_a_dash() -> None:
    """Without an authenticated user the line is twisted.web's own, the third field "-"."""
    request = LoggedRequest()
    line = combinedLogWithUser(TIMESTAMP, request)  # type: ignore[arg-type]
    assert line == combinedLogFormatter(TIMESTAMP, request)
    assert fields(line)[:3] == ["192.0.2.7", "-", "-"]


def test_an_empty_identity_is_no_user() -> None:
    """A request authenticated as nobody (an auth service naming no one) logs "-"."""
    line = combinedLogWithUser(TIMESTAMP, LoggedRequest({}))  # type: ignore[arg-type]
    assert fields(line)[2] == "-"


def test_the_user_is_the_third_field() -> None:
    """alice is in the remote_user field; everything after it is unchanged."""
    request = LoggedRequest({"user": "alice", "email": "alice@example.com"})
    line = combinedLogWithUser(TIMESTAMP, request)  # type: ignore[arg-type]
    assert line.startswith('"192.0.2.7" - alice [07/Dec/2026')
    assert line.replace(" alice ", " - ", 1) == combinedLogFormatter(TIMESTAMP, request)


@pytest.mark.parametrize(
    "user, logged",
    [
        ("a b", "a%20b"),
        ('eve" 200 - "x', "eve%22%20200%20-%20%22x"),
        ("alice@example.com", "alice@example.com"),
        ("first.last+tag_x-y", "first.last+tag_x-y"),
        ("CN=zoë/O=x", "CN%3Dzo%C3%AB%2FO%3Dx"),
        ("tab\tnew\nline", "tab%09new%0Aline"),
    ],
)
def test_the_user_is_percent_encoded(user: str, logged: str) -> None:
    """Spaces, quotes, slashes, control and non-ASCII characters are escaped: the fields stay where they are."""
    line = combinedLogWithUser(TIMESTAMP, LoggedRequest({"user": user}))  # type: ignore[arg-type]
    parts = fields(line)
    assert parts[2] == logged
    assert parts[5:] == ["GET /page?x=1 HTTP/1.1", "200", "2", "https://app.example/", "curl/8"]
    assert "\n" not in line


@pytest.mark.parametrize(
    "address, host",
    [
        (IPv6Address("TCP", "::1", 40000), "::1"),
        (UNIXAddress(b"/run/stproxy.sock"), "-"),
    ],
)
def test_the_user_goes_in_the_right_place_whatever_the_peer(address: Any, host: str) -> None:
    """An IPv6 peer, or a UNIX socket's "-", does not move the user out of the third field."""
    line = combinedLogWithUser(TIMESTAMP, LoggedRequest({"user": "alice"}, address))  # type: ignore[arg-type]
    assert fields(line)[:3] == [host, "-", "alice"]


def test_user_of_reads_the_identity() -> None:
    """userOf is the identity's user, or None without one or without any identity at all."""
    assert userOf(LoggedRequest({"user": "alice"})) == "alice"  # type: ignore[arg-type]
    assert userOf(LoggedRequest({"email": "a@example.com"})) is None  # type: ignore[arg-type]
    assert userOf(LoggedRequest()) is None  # type: ignore[arg-type]


def test_the_json_access_event_carries_the_user() -> None:
    """Accounting's access event has user=alice, or None for a request nobody was authenticated as."""
    events: list[dict[str, Any]] = []
    accounting = Accounting(Clock(), Metrics(), Logger("stproxy.access", None, events.append))
    for request in (LoggedRequest({"user": "alice"}), LoggedRequest()):
        accounting.requestEnded(request, 0.0, 0, aborted=False)  # type: ignore[arg-type]
    assert [e["user"] for e in events] == ["alice", None]
    assert all(e["log_access"] for e in events)
