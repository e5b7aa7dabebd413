"""
One HTTP request on its way to a replica: the pinned one first, then others
when that is safe and useful.

Two things send a request on to another replica:

  - the replica refused the connection (or it timed out, or its name no
    longer resolves): nothing was sent,
    so any request may go elsewhere, as nginx's C{proxy_next_upstream
    error}; the replica is marked down at once (the passive check) and the
    browser re-pinned;
  - a browser with no affinity cookie (an iframe whose third-party cookies
    are blocked, a client that keeps none) asked for something that lives in
    one Streamlit process and got the answer of a process that does not have
    it: an upload answered 400 (Streamlit's "Invalid session_id"), a
    C{/media/} or C{/component/} file answered 404.  The body was spooled by
    twisted.web, so it is sent again; the replica that succeeds is learned
    for the upload's session id, and the browser is pinned to it.

A browser whose cookie names an up replica gets that replica's answer, as it
is: that is where its session lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.error import ConnectError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from stproxy.upstream.client import discardResponse

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime
    from twisted.logger import Logger
    from twisted.web.iweb import IBodyProducer, IResponse

    from stproxy.config import Timeouts
    from stproxy.routing.replica import Replica
    from stproxy.routing.route import Pin

UPLOAD = b"/_stcore/upload_file/"

#: Paths below an app's prefix whose content only the process that made it
#: has, and the status another process answers for them.
_ONE_PROCESS = ((UPLOAD, 400), (b"/media/", 404), (b"/component/", 404))


def uploadSession(relative: bytes) -> str | None:
    """The Streamlit session id an upload path names, if it is one."""
    if not relative.startswith(UPLOAD):
        return None
    session = relative[len(UPLOAD) :].split(b"/", 1)[0]
    return session.decode("ascii", "replace") or None


def _wrongProcess(relative: bytes, status: int) -> bool:
    """Whether C{status} for C{relative} means "not on this replica"."""
    return any(relative.startswith(path) and status == code for path, code in _ONE_PROCESS)


class ReplicaForwarding:
    """
    The upstream side of one HTTP request (what L{stproxy.http.exchange}
    sends through): a replica, and the retries above.
    """

    def __init__(
        self,
        pin: Pin,
        method: bytes,
        target: bytes,
        relative: bytes,
        body: Callable[[], IBodyProducer | None],
        secure: bool,
        log: Logger,
    ) -> None:
        """
        @param target: the request target as the browser sent it.
        @param relative: its path below the route's prefix.
        @param body: a new producer of the request body each time it is
            called (the spooled body from its start), or C{None} for none.
        """
        self._pin = pin
        self._method = method
        self._target = target
        self._relative = relative
        self._body = body
        self._secure = secure
        self._log = log
        self._tried: list[Replica] = []
        self._session = uploadSession(relative)

    @property
    def reactor(self) -> IReactorTime:
        reactor: IReactorTime = self._pin.replica.upstream.reactor
        return reactor

    @property
    def timeouts(self) -> Timeouts:
        return self._pin.replica.upstream.timeouts

    def where(self) -> str:
        """The replica the request went to last, for log lines and error pages."""
        return str(self._pin.replica.address)

    def send(self, headers: Headers) -> Deferred[IResponse]:
        """Send the request, retried as the module docstring says; fires with the final response."""
        replica = self._pin.replica
        self._tried.append(replica)
        replica.requested()
        sent = replica.upstream.request(self._method, self._target, headers, self._body())
        return sent.addCallbacks(
            self._answered, self._failed, callbackArgs=(headers,), errbackArgs=(headers,)
        )

    def _answered(self, response: IResponse, headers: Headers) -> IResponse | Deferred[IResponse]:
        if not self._pin.pinned and _wrongProcess(self._relative, response.code):
            why = f"answered {response.code} for {self._relative.decode('latin-1')}"
            if self._next(why, upOnly=True):
                discardResponse(response)
                return self.send(headers)
        if self._session is not None and response.code < 400:
            self._pin.route.replicas.learn(self._session, self._pin.replica)
        return response

    def _failed(self, failure: Failure, headers: Headers) -> Failure | Deferred[IResponse]:
        if not failure.check(ConnectError, DNSLookupError):
            return failure
        why = failure.getErrorMessage() or failure.value.__class__.__name__
        if self._pin.route.sticky:  # with one replica, there is nowhere else to go
            self._pin.replica.failed(f"connection failed: {why}")
        if self._next(f"connection failed: {why}"):
            return self.send(headers)
        return failure

    def _next(self, why: str, upOnly: bool = False) -> bool:
        """Move to the next replica not tried yet; C{False} when there is none."""
        previous = self._pin
        pin = previous.route.repin(previous, self._tried, self._secure, why, upOnly)
        if pin is None:
            return False
        self._log.info(
            "Retrying {method} {uri} on replica {replica}: {previous} {why}",
            method=self._method.decode("latin-1"),
            uri=self._target.decode("latin-1"),
            replica=str(pin.replica.address),
            previous=str(previous.replica.address),
            why=why,
        )
        self._pin = pin
        return True

    def answering(self, headers: Headers) -> None:
        """The final response's headers are these: pin the browser, if it is to be pinned."""
        if self._pin.setCookie is not None:
            headers.addRawHeader(b"set-cookie", self._pin.setCookie)


__all__ = ["ReplicaForwarding", "uploadSession"]
