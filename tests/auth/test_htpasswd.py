"""
Password files (stproxy.auth.htpasswd): bcrypt lines accepted, every weaker kind refused by line
number without quoting it, passwords checked off the reactor thread once started, successes
cached, and the file reloaded when it changes with the last good users kept over a broken one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import bcrypt
import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from stproxy.auth import htpasswd
from stproxy.auth.htpasswd import (
    HINT,
    HtpasswdChecker,
    HtpasswdError,
    loadHtpasswd,
    parseHtpasswd,
)

_case = SynchronousTestCase()
successResultOf = _case.successResultOf
failureResultOf = _case.failureResultOf
assertNoResult = _case.assertNoResult


def hashed(password: str, prefix: str = "$2b$") -> str:
    """A fast (cost 4) bcrypt hash of C{password}, with C{prefix} as its variant."""
    made = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return prefix + made[4:]


ALICE = hashed("wonderland")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every hash bcrypt.checkpw is asked to check against, in order (the real check still runs)."""
    seen: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hash: bytes) -> bool:
        seen.append(hash)
        return real(password, hash)

    monkeypatch.setattr(htpasswd.bcrypt, "checkpw", counting)
    return seen


def write(path: Path, text: str) -> str:
    """Write C{text} to C{path} so that a poll sees a change even within one clock tick."""
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))
    return str(path)


def login(checker: HtpasswdChecker, user: bytes, password: bytes) -> Deferred:
    """The checker's answer for these credentials."""
    return checker.requestAvatarId(UsernamePassword(user, password))


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["$2y$", "$2b$", "$2a$"])
def test_bcrypt_variants_are_accepted(prefix: str) -> None:
    """Lines from htpasswd -B ($2y$), Python's bcrypt ($2b$) and Caddy ($2a$) all load."""
    line = hashed("pw", prefix)
    assert parseHtpasswd(f"alice:{line}\n", "users") == {"alice": line.encode()}


def test_comments_blank_lines_and_crlf_are_skipped() -> None:
    """Comments, blank lines, Windows line ends and a byte-order mark do not make users."""
    text = f"\ufeff# team\r\n\r\nalice:{ALICE}\r\n   \n  # bob left\nbob:{hashed('b')}\n"
    assert sorted(parseHtpasswd(text, "users")) == ["alice", "bob"]


@pytest.mark.parametrize(
    "hash, kind",
    [
        ("$apr1$abcdefgh$0123456789abcdefghijkl", "MD5 ($apr1$)"),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 ({SHA})"),
        ("abJnggxhB/yWI", "DES crypt"),
        ("$1$saltsalt$0123456789abcdefghijkl", "MD5-crypt ($1$)"),
        ("$5$saltsalt$" + "a" * 43, "SHA-256-crypt ($5$)"),
        ("$6$saltsalt$" + "a" * 86, "SHA-512-crypt ($6$)"),
        ("hunter2", "clear text"),
        ("", "clear text"),
        (ALICE[:-5], "not a complete bcrypt hash"),
        ("$2x$" + ALICE[4:], "not a complete bcrypt hash"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "unsupported crypt hash"),
    ],
)
def test_weak_or_missing_hashes_are_refused_by_line(hash: str, kind: str) -> None:
    """Each refused kind of line is named with its line number and the hint, never quoted."""
    text = f"# users\nbob:{hashed('b')}\nalice:{hash}\n"
    with pytest.raises(HtpasswdError) as raised:
        parseHtpasswd(text, "/etc/stproxy/users")
    message = str(raised.value)
    assert message.startswith("/etc/stproxy/users line 3: user 'alice' has ")
    assert kind in message
    assert message.endswith(f"({HINT})")
    assert "\n" not in message
    if hash:
        assert hash not in message


@pytest.mark.parametrize(
    "line, why",
    [
        ("alice" + ALICE, "no colon"),
        (":" + ALICE, "no user name"),
        ("bob:" + ALICE, "'bob' is listed twice"),
    ],
)
def test_malformed_lines_are_refused_by_line(line: str, why: str) -> None:
    """A line without a colon, without a user, or repeating a user is refused with its number."""
    with pytest.raises(HtpasswdError, match=rf"^users line 4: .*{why}") as raised:
        parseHtpasswd(f"bob:{hashed('b')}\n\n\n{line}\n", "users")
    assert ALICE not in str(raised.value)


def test_a_file_without_users_is_refused() -> None:
    """A file of only comments would lock everyone out: refused, not loaded."""
    with pytest.raises(HtpasswdError, match=r"^users: no users in it"):
        parseHtpasswd("# nobody yet\n\n", "users")


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    """A missing file and one that is not UTF-8 are one-line errors naming the file."""
    with pytest.raises(HtpasswdError, match=r"missing: no such file"):
        loadHtpasswd(str(tmp_path / "missing"))
    binary = tmp_path / "binary"
    binary.write_bytes(f"alice:{ALICE}\nb\xffb:x\n".encode("latin-1"))
    with pytest.raises(HtpasswdError, match=r"binary line 2: not UTF-8"):
        loadHtpasswd(str(binary))


# --- checking --------------------------------------------------------------------------------


def test_right_password_names_the_user(tmp_path: Path) -> None:
    """The right password fires with the user name; a wrong one fails with UnauthorizedLogin."""
    checker = HtpasswdChecker(write(tmp_path / "users", f"alice:{ALICE}\n"))
    assert successResultOf(login(checker, b"alice", b"wonderland")) == b"alice"
    failureResultOf(login(checker, b"alice", b"looking-glass"), UnauthorizedLogin)


def test_htpasswd_minus_b_hashes_check(tmp_path: Path) -> None:
    """A $2y$ line (what htpasswd -B writes) checks the password like a $2b$ one."""
    checker = HtpasswdChecker(write(tmp_path / "users", f"carol:{hashed('pw', '$2y$')}\n"))
    assert successResultOf(login(checker, b"carol", b"pw")) == b"carol"
    failureResultOf(login(checker, b"carol", b"pW"), UnauthorizedLogin)


def test_long_and_odd_passwords_are_refused_not_errors(tmp_path: Path) -> None:
    """Passwords bcrypt cannot take (over 72 bytes, not UTF-8 user names) are refusals, not errors."""
    long = "x" * 72
    checker = HtpasswdChecker(write(tmp_path / "users", f"alice:{hashed(long)}\n"))
    # bcrypt uses 72 bytes: longer passwords are cut, as htpasswd -B did when hashing them.
    assert successResultOf(login(checker, b"alice", long.encode() + b"yz")) == b"alice"
    failureResultOf(login(checker, b"alice", b"y" * 100), UnauthorizedLogin)
    failureResultOf(login(checker, b"\xff\xfe", b"pw"), UnauthorizedLogin)


def test_unknown_users_cost_one_bcrypt_check(tmp_path: Path, calls: list[bytes]) -> None:
    """An unknown user is refused after a real bcrypt check, so timing does not reveal accounts."""
    checker = HtpasswdChecker(write(tmp_path / "users", f"alice:{ALICE}\n"))
    failureResultOf(login(checker, b"mallory", b"wonderland"), UnauthorizedLogin)
    assert calls == [ALICE.encode()]


def test_successes_are_cached_without_bcrypt(tmp_path: Path, calls: list[bytes]) -> None:
    """The same right credentials again cost no bcrypt; a wrong password always does."""
    checker = HtpasswdChecker(write(tmp_path / "users", f"alice:{ALICE}\n"))
    assert successResultOf(login(checker, b"alice", b"wonderland")) == b"alice"
    assert successResultOf(login(checker, b"alice", b"wonderland")) == b"alice"
    assert len(calls) == 1
    failureResultOf(login(checker, b"alice", b"wonderlanD"), UnauthorizedLogin)
    failureResultOf(login(checker, b"alice", b"wonderlanD"), UnauthorizedLogin)
    assert len(calls) == 3


def test_the_cache_is_bounded_least_recently_used_out(tmp_path: Path, calls: list[bytes]) -> None:
    """With room for two, a third user's success pushes out the one unused longest."""
    text = "".join(f"{name}:{hashed(name)}\n" for name in ("a", "b", "c"))
    checker = HtpasswdChecker(write(tmp_path / "users", text), cacheSize=2)
    for name in (b"a", b"b", b"a", b"c"):
        successResultOf(login(checker, name, name))
    assert len(calls) == 3
    successResultOf(login(checker, b"a", b"a"))
    assert len(calls) == 3, "a was used recently and stays"
    successResultOf(login(checker, b"b", b"b"))
    assert len(calls) == 4, "b was pushed out"


def test_a_changed_password_is_not_served_from_the_cache(tmp_path: Path) -> None:
    """After the file changes a user's hash, the old password fails even though it was cached."""
    path = tmp_path / "users"
    checker = HtpasswdChecker(write(path, f"alice:{ALICE}\n"))
    successResultOf(login(checker, b"alice", b"wonderland"))
    write(path, f"alice:{hashed('new one')}\n")
    checker.checkFile()
    failureResultOf(login(checker, b"alice", b"wonderland"), UnauthorizedLogin)
    assert successResultOf(login(checker, b"alice", b"new one")) == b"alice"


# --- started: threads and reloads ------------------------------------------------------------


class Deferring:
    """An C{inThread} that holds each call until the test runs it, as a thread pool would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred, Callable[..., Any], tuple]] = []

    def __call__(self, f: Callable[..., Any], *args: object) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((d, f, args))
        return d

    def runAll(self) -> None:
        """Run the held calls and fire their Deferreds."""
        calls, self.calls = self.calls, []
        for d, f, args in calls:
            d.callback(f(*args))


def test_started_checks_run_in_the_thread_function(tmp_path: Path, calls: list[bytes]) -> None:
    """Once started, bcrypt runs only inside C{inThread}; the answer waits for it."""
    checker = HtpasswdChecker(write(tmp_path / "users", f"alice:{ALICE}\n"))
    inThread = Deferring()
    checker.start(Clock(), 5.0, inThread=inThread)
    right = login(checker, b"alice", b"wonderland")
    unknown = login(checker, b"mallory", b"x")
    assertNoResult(right)
    assertNoResult(unknown)
    assert calls == [] and len(inThread.calls) == 2
    inThread.runAll()
    assert successResultOf(right) == b"alice"
    failureResultOf(unknown, UnauthorizedLogin)
    assert successResultOf(login(checker, b"alice", b"wonderland")) == b"alice"
    assert inThread.calls == [], "a cached success needs no thread"
    checker.stop()


def test_a_user_removed_while_bcrypt_runs_is_refused(tmp_path: Path) -> None:
    """A check that finishes after its user left the file does not let them in."""
    path = tmp_path / "users"
    checker = HtpasswdChecker(write(path, f"alice:{ALICE}\nbob:{hashed('b')}\n"))
    inThread = Deferring()
    checker.start(Clock(), 0, inThread=inThread)
    pending = login(checker, b"alice", b"wonderland")
    write(path, f"bob:{hashed('b')}\n")
    checker.checkFile()
    inThread.runAll()
    failureResultOf(pending, UnauthorizedLogin)


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """A Clock with a thread pool that holds work until the test runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.work: list[Callable[[], None]] = []
        self.fromThreads: list[Callable[[], None]] = []

    def getThreadPool(self) -> ThreadedClock:
        return self

    def callInThreadWithCallback(self, onResult: Callable, f: Callable, *args: Any) -> None:
        self.work.append(lambda: onResult(True, f(*args)))

    def callFromThread(self, f: Callable, *args: Any) -> None:
        self.fromThreads.append(lambda: f(*args))


def test_by_default_checks_run_in_the_reactors_thread_pool(
    tmp_path: Path, calls: list[bytes]
) -> None:
    """Without C{inThread}, bcrypt goes to the reactor's thread pool and the answer comes back by callFromThread."""
    checker = HtpasswdChecker(write(tmp_path / "users", f"alice:{ALICE}\n"))
    reactor = ThreadedClock()
    checker.start(reactor, 0)
    answer = login(checker, b"alice", b"wonderland")
    assert calls == [] and len(reactor.work) == 1
    reactor.work.pop()()
    assert len(calls) == 1
    assertNoResult(answer)
    reactor.fromThreads.pop()()
    assert successResultOf(answer) == b"alice"


def test_the_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    """
    Polled on the reactor's clock: a good change is loaded and logged with the user count; a
    broken one is logged with its line number (never its hash) and the last good users stay.
    """
    path = tmp_path / "users"
    checker = HtpasswdChecker(write(path, f"alice:{ALICE}\n"))
    clock, events = Clock(), []
    checker.start(clock, 5.0, events.append, inThread=lambda f, *a: succeed(f(*a)))
    clock.advance(5)
    assert events == [], "nothing changed"

    bob = hashed("builder")
    write(path, f"alice:{ALICE}\nbob:{bob}\n")
    clock.advance(5)
    assert sorted(checker.users) == ["alice", "bob"]
    assert events[-1]["log_format"] == "Reloaded {count} users from {path}"
    assert (events[-1]["count"], events[-1]["path"]) == (2, str(path))

    md5 = "$apr1$abcdefgh$0123456789abcdefghijkl"
    write(path, f"alice:{ALICE}\n# comment\nbob:{md5}\n")
    clock.advance(5)
    assert sorted(checker.users) == ["alice", "bob"]
    assert successResultOf(login(checker, b"bob", b"builder")) == b"bob"
    assert events[-1]["log_level"].name == "error"
    assert f"{path} line 3:" in events[-1]["reason"] and "MD5" in events[-1]["reason"]
    assert len(events) == 2, "a broken file is logged once, not at every poll"
    clock.advance(5)
    assert len(events) == 2

    path.unlink()
    clock.advance(5)
    assert "no such file" in events[-1]["reason"]
    assert sorted(checker.users) == ["alice", "bob"]
    assert not any(md5 in repr(e) or ALICE in repr(e) or bob in repr(e) for e in events)

    checker.stop()
    write(path, f"carol:{hashed('c')}\n")
    clock.advance(5)
    assert sorted(checker.users) == ["alice", "bob"], "no polling once stopped"
