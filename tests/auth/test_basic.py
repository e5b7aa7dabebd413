"""
The HTTP Basic gate (stproxy.auth.basic): the right password lets a request through as its user,
anything else gets 401 with a challenge, password guessing from one address is slowed to 429
with Retry-After, a broken checker fails closed with 503, and no password is ever logged.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from prometheus_client import CollectorRegistry
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stproxy.auth.basic import BasicAuth
from stproxy.auth.htpasswd import HtpasswdChecker
from stproxy.auth.verdict import Verdict
from stproxy.ops.metrics import Metrics

_case = SynchronousTestCase()
CHALLENGE = (b"www-authenticate", b'Basic realm="stproxy", charset="UTF-8"')
SECRET = "s3cret-Pa55word"


def basic(user: str, password: str) -> bytes:
    """An Authorization header value for these credentials."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def verdict(d: Deferred[Verdict]) -> Verdict:
    """The verdict a synchronous check has already reached."""
    return _case.successResultOf(d)


@pytest.fixture
def clock() -> Clock:
    """The gate's clock, starting at a time of day rather than 0."""
    clock = Clock()
    clock.advance(1_000)
    return clock


@pytest.fixture
def events() -> list[dict[str, Any]]:
    """The gate's log events."""
    return []


@pytest.fixture
def gate(clock: Clock, events: list[dict[str, Any]]) -> BasicAuth:
    """A gate for alice (password SECRET), at most 3 failures a minute."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=SECRET.encode())
    return BasicAuth([checker], clock, maxFailures=3, logObserver=events.append)


def test_the_right_password_lets_the_user_through(gate: BasicAuth) -> None:
    """Right credentials: let through, as that user."""
    result = verdict(gate.check(basic("alice", SECRET), "192.0.2.1"))
    assert result.allowed
    assert (result.identity, result.method) == ({"user": "alice"}, "htpasswd")


@pytest.mark.parametrize(
    "authorization, reason",
    [
        (None, "no Basic credentials"),
        (b"Bearer abc.def", "no Basic credentials"),
        (b"Basic !!!not base64", "undecodable"),
        (b"Basic " + base64.b64encode(b"no colon here"), "undecodable"),
        (basic("alice", "guess"), "'alice'"),
        (basic("mallory", SECRET), "'mallory'"),
    ],
)
def test_anything_else_gets_a_401_challenge(
    gate: BasicAuth, authorization: bytes | None, reason: str
) -> None:
    """Missing, other-scheme, malformed or wrong credentials: 401 with WWW-Authenticate, naming the user."""
    result = verdict(gate.check(authorization, "192.0.2.1"))
    assert (result.status, result.headers) == (401, (CHALLENGE,))
    assert reason in result.reason
    assert SECRET not in result.reason and "guess" not in result.reason


def test_htpasswd_checker_and_memory_checker_both_count(tmp_path: Path) -> None:
    """With several --auth checkers, a user any of them accepts is let through."""
    users = tmp_path / "users"
    users.write_text(f"bob:{bcrypt.hashpw(b'builder', bcrypt.gensalt(rounds=4)).decode()}\n")
    memory = InMemoryUsernamePasswordDatabaseDontUse(alice=SECRET.encode())
    gate = BasicAuth([memory, HtpasswdChecker(str(users))], Clock())
    assert verdict(gate.check(basic("bob", "builder"), "::1")).identity == {"user": "bob"}
    assert verdict(gate.check(basic("alice", SECRET), "::1")).identity == {"user": "alice"}
    assert verdict(gate.check(basic("bob", SECRET), "::1")).status == 401


def test_repeated_failures_are_throttled_for_a_minute(gate: BasicAuth, clock: Clock) -> None:
    """
    After 3 failures an address gets 429 with Retry-After until the oldest failure is a minute
    old, even with the right password; then it is checked again.
    """
    for _ in range(3):
        assert verdict(gate.check(basic("alice", "guess"), "192.0.2.1")).status == 401
        clock.advance(10)
    assert clock.seconds() == 1_030
    throttled = verdict(gate.check(basic("alice", SECRET), "192.0.2.1"))
    assert throttled.status == 429
    assert throttled.headers == ((b"retry-after", b"30"),)
    clock.advance(29)
    assert verdict(gate.check(None, "192.0.2.1")).status == 429, "even without credentials"
    clock.advance(1)
    assert verdict(gate.check(basic("alice", SECRET), "192.0.2.1")).allowed
    assert verdict(gate.check(basic("alice", "guess"), "192.0.2.1")).status == 401
    assert verdict(gate.check(basic("alice", SECRET), "192.0.2.1")).status == 429


def test_other_addresses_are_not_throttled(gate: BasicAuth) -> None:
    """One address's failures do not slow another's logins."""
    for _ in range(5):
        gate.check(basic("alice", "guess"), "192.0.2.1")
    assert verdict(gate.check(basic("alice", "guess"), "192.0.2.1")).status == 429
    assert verdict(gate.check(basic("alice", "guess"), "192.0.2.2")).status == 401
    assert verdict(gate.check(basic("alice", SECRET), "192.0.2.2")).allowed


def test_requests_without_credentials_are_not_failures(gate: BasicAuth) -> None:
    """A browser's first, credential-less request is no guess: it never throttles anyone."""
    for _ in range(10):
        assert verdict(gate.check(None, "192.0.2.1")).status == 401
    assert verdict(gate.check(basic("alice", SECRET), "192.0.2.1")).allowed


class Held:
    """A checker whose answers the test gives, one per attempt."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.pending.append(d)
        return d


class Broken:
    """A checker that fails otherwise than by refusing."""

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        return fail(OSError("disk on fire"))


def test_checks_in_progress_count_against_the_limit(clock: Clock) -> None:
    """A client cannot start more simultaneous guesses than it may fail."""
    checker = Held()
    gate = BasicAuth([checker], clock, maxFailures=3)
    waiting = [gate.check(basic("alice", f"guess{i}"), "192.0.2.1") for i in range(3)]
    assert verdict(gate.check(basic("alice", "guess"), "192.0.2.1")).status == 429
    assert len(checker.pending) == 3
    checker.pending[0].callback(b"alice")
    assert verdict(waiting[0]).allowed
    assert len(checker.pending) == 3
    gate.check(basic("alice", "again"), "192.0.2.1")
    assert len(checker.pending) == 4, "a finished check makes room for another"


def test_the_address_table_is_bounded(clock: Clock) -> None:
    """Beyond its cap the table forgets the addresses that failed longest ago; quiet ones expire."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
    gate = BasicAuth([checker], clock, maxFailures=1, maxAddresses=2)
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        gate.check(basic("alice", "x"), address)
    assert verdict(gate.check(None, "10.0.0.3")).status == 429
    assert verdict(gate.check(None, "10.0.0.2")).status == 429
    assert verdict(gate.check(None, "10.0.0.1")).status == 401, "pushed out by 10.0.0.3"
    clock.advance(60)
    gate.check(basic("alice", "x"), "10.0.0.4")
    assert list(gate._failures) == ["10.0.0.4"], "addresses with an empty window are forgotten"


def test_a_broken_checker_fails_closed(events: list[dict[str, Any]]) -> None:
    """A checker that errors (not a refusal) gives 503, logged as a failure with the user."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    gate = BasicAuth([Broken()], Clock(), logObserver=events.append, metrics=metrics)
    result = verdict(gate.check(basic("alice", SECRET), "192.0.2.1"))
    assert (result.status, result.headers) == (503, ())
    assert "'alice'" in result.reason
    [event] = events
    assert event["log_failure"].check(OSError) and event["user"] == "alice"
    assert (
        registry.get_sample_value("stproxy_auth_total", {"method": "htpasswd", "result": "error"})
        == 1
    )


def test_results_are_counted(clock: Clock) -> None:
    """Each verdict counts once in stproxy_auth_total by result."""
    registry = CollectorRegistry()
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=SECRET.encode())
    gate = BasicAuth([checker], clock, maxFailures=1, metrics=Metrics(registry))
    gate.check(basic("alice", SECRET), "a")
    gate.check(basic("alice", "x"), "a")
    gate.check(basic("alice", SECRET), "a")
    counts = {
        result: registry.get_sample_value(
            "stproxy_auth_total", {"method": "htpasswd", "result": result}
        )
        for result in ("ok", "denied", "throttled")
    }
    assert counts == {"ok": 1, "denied": 1, "throttled": 1}


def test_no_password_is_ever_logged_or_given_as_a_reason(
    gate: BasicAuth, events: list[dict[str, Any]]
) -> None:
    """Through successes, failures, throttling and errors, no password appears in any event or verdict."""
    results = [verdict(gate.check(basic("alice", SECRET), "192.0.2.1"))]
    results += [verdict(gate.check(basic("alice", SECRET + "x"), "192.0.2.1")) for _ in range(5)]
    failing = BasicAuth([Broken()], Clock(), logObserver=events.append)
    results.append(verdict(failing.check(basic("alice", SECRET), "192.0.2.9")))
    assert [r.status for r in results] == [0, 401, 401, 401, 429, 429, 503]
    assert any(e["log_level"].name == "warn" for e in events), "throttling is logged"
    assert any("log_failure" in e for e in events), "the error is logged"
    for text in [repr(e) for e in events] + [repr(r) for r in results]:
        assert SECRET not in text
        assert base64.b64encode(f"alice:{SECRET}".encode()).decode() not in text
