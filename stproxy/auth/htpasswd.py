"""
Password files (C{--auth htpasswd:PATH}): bcrypt hashes only, checked off
the reactor thread, reloaded when the file changes.

The file is what C{htpasswd -B} writes (C{user:$2y$...}), or C{user:} lines
around C{caddy hash-password} output (C{$2a$}); C{$2b$} is accepted too.
Every other kind of line is refused with its line number, because each is a
weak hash or none: MD5 (C{$apr1$}, C{$1$}), SHA-1 (C{{SHA}}), DES crypt,
SHA-crypt (C{$5$}, C{$6$}), clear text.  A refusal names the line and the
kind of hash, never the hash itself.

bcrypt is slow on purpose (50-250 ms a check), so once started the checks
run in the reactor's thread pool, and a successful one is remembered (by an
HMAC of user, password and stored hash under a per-process key, so the
cache holds no password) for the next request carrying the same Basic
credentials: a browser sends them with every static file.  A user who is
not in the file costs one bcrypt check too, so answer times do not tell
who has an account.  Like pre-5 bcrypt and Apache, passwords are cut to
bcrypt's 72 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import OrderedDict
from typing import Any, Callable

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver
from zope.interface import implementer

from stproxy.ops.logs import loggerFor

#: Where to get a hash stproxy accepts, appended to each refused hash.
HINT = "use bcrypt: htpasswd -B, or caddy hash-password"

#: Seconds between checks of the file for changes.
DEFAULT_RELOAD_INTERVAL = 5.0

#: Successful checks remembered, least recently used out first.
DEFAULT_CACHE_SIZE = 1024

_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_DES = re.compile(r"[./A-Za-z0-9]{13}")

#: Refused hashes by prefix, most specific first, as a line's error names them.
_REFUSED = (
    ("$apr1$", "an MD5 ($apr1$) hash"),
    ("{SHA}", "a SHA-1 ({SHA}) hash"),
    ("$1$", "an MD5-crypt ($1$) hash"),
    ("$5$", "a SHA-256-crypt ($5$) hash"),
    ("$6$", "a SHA-512-crypt ($6$) hash"),
    ("$2", "not a complete bcrypt hash (truncated, or the $2x$ variant)"),
    ("$", "an unsupported crypt hash"),
)

#: Runs a blocking function somewhere and fires with its result.
InThread = Callable[..., "Deferred[Any]"]

#: A file's modification time, size, inode and device; None when it is missing.
_Stamp = tuple[int, int, int, int] | None


class HtpasswdError(ValueError):
    """A password file that cannot be used; the one-line message names the file and line."""


def _kind(hash: str) -> str:
    """Why C{hash} is refused, without quoting it."""
    for prefix, kind in _REFUSED:
        if hash.startswith(prefix):
            return kind
    if _DES.fullmatch(hash):
        return "a DES crypt hash"
    return "not a hash (clear text?)"


def parseHtpasswd(text: str, source: str) -> dict[str, bytes]:
    """
    The users of an htpasswd file and their bcrypt hashes.

    @param source: the file's name, for error messages.
    @raise HtpasswdError: at the first line that is not C{user:bcrypt-hash},
        a comment or blank, or if no user is left.
    """
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        user, colon, hash = line.partition(":")
        if not colon:
            raise HtpasswdError(f"{where}: not user:hash (no colon)")
        if not user:
            raise HtpasswdError(f"{where}: no user name before the colon")
        if user in users:
            raise HtpasswdError(f"{where}: user {user!r} is listed twice")
        if not _BCRYPT.fullmatch(hash):
            raise HtpasswdError(f"{where}: user {user!r} has {_kind(hash)} ({HINT})")
        users[user] = hash.encode("ascii")
    if not users:
        raise HtpasswdError(f"{source}: no users in it ({HINT})")
    return users


def loadHtpasswd(path: str) -> dict[str, bytes]:
    """L{parseHtpasswd} of the file at C{path}; L{HtpasswdError} if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise HtpasswdError(f"{path}: no such file (htpasswd)") from None
    except OSError as e:
        raise HtpasswdError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise HtpasswdError(f"{path} line {line}: not UTF-8 text") from None
    return parseHtpasswd(text, path)


def _checkpw(password: bytes, hash: bytes) -> bool:
    """bcrypt's check, of at most the 72 bytes bcrypt uses (bcrypt 5 refuses longer)."""
    try:
        return bcrypt.checkpw(password[:72], hash)
    except ValueError:
        return False


def _text(value: bytes | str) -> str | None:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """
    Checks user names and passwords against a bcrypt htpasswd file.

    Until L{start}, checks run synchronously (tests, start-up); once started,
    in the reactor's thread pool, and the file is polled for changes.  A
    changed file that fails to parse (a half-written one, a line of the wrong
    hash) is logged with its line number and the users last loaded stay.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, cacheSize: int = DEFAULT_CACHE_SIZE) -> None:
        """@raise HtpasswdError: if the file cannot be used."""
        self.path = path
        self._stamp = self._fileStamp()
        self.users = loadHtpasswd(path)
        self._cacheSize = cacheSize
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._key = os.urandom(32)
        self._inThread: InThread = maybeDeferred
        self._loop: LoopingCall | None = None
        self._log = loggerFor(self, None)

    def start(
        self,
        reactor: IReactorTime,
        interval: float = DEFAULT_RELOAD_INTERVAL,
        logObserver: ILogObserver | None = None,
        inThread: InThread | None = None,
    ) -> None:
        """
        Check passwords off the reactor thread and poll the file every C{interval} seconds.

        @param inThread: runs a bcrypt check and fires with its result; by
            default the reactor's thread pool (C{reactor} must then provide
            L{IReactorThreads}).
        """
        self._log = loggerFor(self, logObserver)
        if inThread is None:
            threads = IReactorThreads(reactor)
            pool = threads.getThreadPool()

            def inThread(f: Callable[..., Any], *args: object) -> Deferred[Any]:
                return deferToThreadPool(threads, pool, f, *args)

        self._inThread = inThread
        if interval > 0:
            self._loop = LoopingCall(self.checkFile)
            self._loop.clock = reactor
            self._loop.start(interval, now=False)

    def stop(self) -> None:
        """Stop polling the file."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def checkFile(self) -> None:
        """Reload the file if it changed since it was last loaded or tried."""
        if self._fileStamp() != self._stamp:
            self.reload()

    def reload(self) -> None:
        """Load the file again; if it cannot be used, log why and keep the users there were."""
        self._stamp = self._fileStamp()
        try:
            users = loadHtpasswd(self.path)
        except HtpasswdError as e:
            self._log.error(
                "Not reloading {path}, still using its previous {count} users: {reason}",
                path=self.path,
                count=len(self.users),
                reason=str(e),
            )
            return
        self.users = users
        self._log.info("Reloaded {count} users from {path}", count=len(users), path=self.path)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        """
        Fire with the user name (UTF-8 bytes) if the password is right; fail
        with L{UnauthorizedLogin} for a wrong one or an unknown user.
        """
        user = _text(credentials.username)
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        stored = self.users.get(user) if user is not None else None
        if stored is None or user is None:
            # As costly as a real check, so the time taken does not say
            # whether the user exists.
            dummy = next(iter(self.users.values()))
            return self._inThread(_checkpw, password, dummy).addCallback(self._refuse)
        key = self._cacheKey(user, password, stored)
        if key in self._cache:
            self._cache.move_to_end(key)
            return succeed(user.encode("utf-8"))
        checked = self._inThread(_checkpw, password, stored)
        return checked.addCallback(self._checked, user, stored, key)

    def _checked(self, right: bool, user: str, stored: bytes, key: bytes) -> bytes:
        if not right or self.users.get(user) != stored:
            # Wrong, or the user was removed or changed while bcrypt ran.
            raise UnauthorizedLogin()
        self._cache[key] = None
        while len(self._cache) > self._cacheSize:
            self._cache.popitem(last=False)
        return user.encode("utf-8")

    @staticmethod
    def _refuse(ignored: object) -> bytes:
        raise UnauthorizedLogin()

    def _cacheKey(self, user: str, password: bytes, stored: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user.encode("utf-8"), password, stored):
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    def _fileStamp(self) -> _Stamp:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_dev)


__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_RELOAD_INTERVAL",
    "HINT",
    "HtpasswdChecker",
    "HtpasswdError",
    "InThread",
    "loadHtpasswd",
    "parseHtpasswd",
]
