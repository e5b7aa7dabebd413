"""
The authentication service (stproxy.auth.service): once started, each password file is checked
off the reactor thread and polled for changes on the reactor's clock; once stopped, the polling
ends and the auth service's connections are closed, the stop waiting for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import bcrypt
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from stproxy.auth.htpasswd import HtpasswdChecker
from stproxy.auth.service import AuthService

_case = SynchronousTestCase()


def line(user: str, password: str) -> str:
    """An htpasswd line with a fast (cost 4) bcrypt hash."""
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """A Clock with a thread pool that holds work until the test runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.work: list[Callable[[], None]] = []

    def getThreadPool(self) -> ThreadedClock:
        return self

    def callInThreadWithCallback(self, onResult: Callable, f: Callable, *args: Any) -> None:
        self.work.append(lambda: onResult(True, f(*args)))

    def callFromThread(self, f: Callable, *args: Any) -> None:
        f(*args)

    def runWork(self) -> None:
        work, self.work = self.work, []
        for item in work:
            item()


class ClosingForward:
    """Stands in for ForwardAuth: its close() is a Deferred the test fires."""

    def __init__(self) -> None:
        self.closing: list[Deferred[None]] = []

    def close(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.closing.append(d)
        return d


def passwordFile(tmp_path: Path, *lines: str) -> Path:
    """An htpasswd file of C{lines} in C{tmp_path}."""
    path = tmp_path / "htpasswd"
    path.write_text("".join(lines))
    return path


def rewrite(path: Path, *lines: str) -> None:
    """New contents, with a modification time that surely differs."""
    stat = path.stat()
    path.write_text("".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))


def test_started_checkers_poll_their_file_on_the_reactors_clock(tmp_path: Path) -> None:
    """A user added to the file is known once the reload interval has passed on the clock, not before."""
    path = passwordFile(tmp_path, line("alice", "pw-a"))
    checker = HtpasswdChecker(str(path))
    clock = ThreadedClock()
    events: list[dict[str, Any]] = []
    service = AuthService(clock, (checker,), None, events.append, reloadInterval=7.0)
    service.startService()
    assert service.running
    rewrite(path, line("alice", "pw-a"), line("bob", "pw-b"))
    clock.advance(6.9)
    assert set(checker.users) == {"alice"}
    clock.advance(0.1)
    assert set(checker.users) == {"alice", "bob"}
    assert any("Reloaded" in e.get("log_format", "") for e in events)
    service.stopService()


def test_started_checkers_check_passwords_in_the_reactors_thread_pool(tmp_path: Path) -> None:
    """Once started, a password check waits for the thread pool (bcrypt is off the reactor thread)."""
    checker = HtpasswdChecker(str(passwordFile(tmp_path, line("alice", "pw-a"))))
    clock = ThreadedClock()
    service = AuthService(clock, (checker,), None)
    service.startService()
    d = checker.requestAvatarId(UsernamePassword(b"alice", b"pw-a"))
    _case.assertNoResult(d)
    assert len(clock.work) == 1
    clock.runWork()
    assert _case.successResultOf(d) == b"alice"
    service.stopService()


def test_stopping_ends_the_polling(tmp_path: Path) -> None:
    """After stopService no call is left on the clock, and a changed file is no longer read."""
    path = passwordFile(tmp_path, line("alice", "pw-a"))
    checker = HtpasswdChecker(str(path))
    clock = ThreadedClock()
    service = AuthService(clock, (checker,), None, reloadInterval=5.0)
    service.startService()
    assert len(clock.getDelayedCalls()) == 1
    d = service.stopService()
    assert _case.successResultOf(d) is None
    assert clock.getDelayedCalls() == []
    assert not service.running
    rewrite(path, line("carol", "pw-c"))
    clock.advance(60)
    assert set(checker.users) == {"alice"}


def test_only_password_files_are_started(tmp_path: Path) -> None:
    """Other checkers (memory:) are left alone; each password file gets its own loop."""
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    files = [
        HtpasswdChecker(str(passwordFile(tmp_path / name, line(name, "pw"))))
        for name in ("one", "two")
    ]
    memory = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
    clock = ThreadedClock()
    service = AuthService(clock, (files[0], memory, files[1]), None)
    service.startService()
    assert len(clock.getDelayedCalls()) == 2
    service.stopService()
    assert clock.getDelayedCalls() == []


def test_stopping_closes_the_auth_service_and_waits_for_it() -> None:
    """stopService returns ForwardAuth.close()'s Deferred: the stop ends when its connections are closed."""
    forward = ClosingForward()
    service = AuthService(ThreadedClock(), (), forward)  # type: ignore[arg-type]
    service.startService()
    assert forward.closing == []
    d = service.stopService()
    assert len(forward.closing) == 1
    _case.assertNoResult(d)
    forward.closing[0].callback(None)
    assert _case.successResultOf(d) is None


def test_its_name_is_auth() -> None:
    """The service is found in the tree as "auth"."""
    assert AuthService(ThreadedClock(), (), None).name == "auth"
