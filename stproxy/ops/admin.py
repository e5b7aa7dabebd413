"""
The admin listener (C{--admin ENDPOINT}): C{/metrics}, C{/healthz} and
C{/readyz} for Prometheus and orchestrators, on its own endpoint only.

It is a separate L{Site} on a separate listener, never a path on the public
listeners: there, C{/metrics} and every other path belong to Streamlit.

C{/metrics} is rendered here from L{stproxy.ops.metrics.Metrics.exposition}
rather than with C{prometheus_client.twisted.MetricsResource}: that module
imports the global reactor when imported (which would break an asyncio
program that has not installed its reactor yet) and renders through WSGI on
the reactor's thread pool, where a scrape of a few kilobytes needs no thread.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from stproxy.ops.metrics import Metrics


class _Text(Resource):
    """A leaf that answers GET/HEAD with a status and body from a function."""

    isLeaf = True

    def __init__(self, answer: Callable[[], tuple[int, bytes, bytes]]) -> None:
        super().__init__()
        self._answer = answer

    def render_GET(self, request: Request) -> bytes:
        code, contentType, body = self._answer()
        request.setResponseCode(code)
        request.setHeader(b"content-type", contentType)
        request.setHeader(b"cache-control", b"no-store")
        return body

    render_HEAD = render_GET


_PLAIN = b"text/plain; charset=utf-8"


def adminResource(metrics: Metrics, ready: Callable[[], bool]) -> Resource:
    """
    The admin tree.

    @param ready: whether the proxy can take traffic now (upstream healthy
        and not draining): C{/readyz} answers 200 or 503 from it.
    """

    def metricsPage() -> tuple[int, bytes, bytes]:
        body, contentType = metrics.exposition()
        return 200, contentType.encode("ascii"), body

    def healthz() -> tuple[int, bytes, bytes]:
        return 200, _PLAIN, b"ok\n"

    def readyz() -> tuple[int, bytes, bytes]:
        if ready():
            return 200, _PLAIN, b"ready\n"
        return 503, _PLAIN, b"not ready\n"

    root = Resource()
    root.putChild(b"metrics", _Text(metricsPage))
    root.putChild(b"healthz", _Text(healthz))
    root.putChild(b"readyz", _Text(readyz))
    return root


def adminSite(metrics: Metrics, ready: Callable[[], bool], reactor: IReactorTime) -> Site:
    """The L{Site} for the admin listener; it keeps no access log."""
    site = Site(adminResource(metrics, ready), reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


__all__ = ["adminResource", "adminSite"]
