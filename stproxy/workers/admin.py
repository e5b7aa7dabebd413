"""
The supervisor's admin listener (C{--admin} with C{--workers}): the same
three pages as a single stproxy's (L{stproxy.ops.admin}), for the whole
set of workers.

  - C{/healthz}: 200 while the supervisor runs;
  - C{/readyz}: 200 while every worker runs and says it is ready (each is
    asked: L{stproxy.workers.control}), 503 otherwise and while stopping;
  - C{/metrics}: every worker's metrics labelled C{worker="N"}, then the
    supervisor's own (L{stproxy.workers.metrics}).

The workers do not listen on C{--admin}: the supervisor alone does.
Answers that need the workers are asynchronous, so pages are rendered
when the answers come (a worker that does not answer within a few
seconds counts as not ready, and its metrics are left out).
"""

from __future__ import annotations

from typing import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from stproxy.ops.logs import loggerFor

_PLAIN = b"text/plain; charset=utf-8"

#: Prometheus' text format, as L{stproxy.ops.metrics.Metrics.exposition} says it.
_EXPOSITION = CONTENT_TYPE_LATEST.encode("ascii")

#: An answer: status, content type, body.
Answer = tuple[int, bytes, bytes]


class _Later(Resource):
    """A leaf answering GET/HEAD with what a Deferred gives, once it does."""

    isLeaf = True

    def __init__(
        self, answer: Callable[[], Deferred[Answer]], logObserver: ILogObserver | None
    ) -> None:
        super().__init__()
        self._answer = answer
        self._log = loggerFor(self, logObserver)

    def render_GET(self, request: Request) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def send(answer: Answer) -> None:
            if gone:
                return
            code, contentType, body = answer
            request.setResponseCode(code)
            request.setHeader(b"content-type", contentType)
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            self._log.failure("stproxy admin page failed", failure)
            send((500, _PLAIN, b"error\n"))

        self._answer().addCallback(send).addErrback(failed)
        return NOT_DONE_YET

    render_HEAD = render_GET


def supervisorAdminResource(
    metrics: Callable[[], Deferred[bytes]],
    ready: Callable[[], Deferred[bool]],
    logObserver: ILogObserver | None = None,
) -> Resource:
    """
    The admin tree of a supervisor.

    @param metrics: the merged exposition, when every worker answered or gave up.
    @param ready: whether every worker is ready.
    """

    def metricsPage() -> Deferred[Answer]:
        return metrics().addCallback(lambda body: (200, _EXPOSITION, body))

    def healthz() -> Deferred[Answer]:
        return succeed((200, _PLAIN, b"ok\n"))

    def readyz() -> Deferred[Answer]:
        return ready().addCallback(
            lambda yes: (200, _PLAIN, b"ready\n") if yes else (503, _PLAIN, b"not ready\n")
        )

    root = Resource()
    root.putChild(b"metrics", _Later(metricsPage, logObserver))
    root.putChild(b"healthz", _Later(healthz, logObserver))
    root.putChild(b"readyz", _Later(readyz, logObserver))
    return root


def supervisorAdminSite(
    metrics: Callable[[], Deferred[bytes]],
    ready: Callable[[], Deferred[bool]],
    reactor: IReactorTime,
    logObserver: ILogObserver | None = None,
) -> Site:
    """The L{Site} of the supervisor's admin listener; it keeps no access log."""
    site = Site(supervisorAdminResource(metrics, ready, logObserver), reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


__all__ = ["supervisorAdminResource", "supervisorAdminSite"]
