"""
The supervisor's admin pages (stproxy.workers.admin), rendered in-process: each answered once
the workers' answers come, and never written to a client that has gone.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from stproxy.workers.admin import supervisorAdminResource, supervisorAdminSite


def get(root: Resource, page: bytes, method: bytes = b"GET") -> DummyRequest:
    request = DummyRequest([page])
    request.method = method
    assert root.getChildWithDefault(page, request).render(request) == NOT_DONE_YET
    return request


def test_metrics_are_sent_once_the_workers_answered() -> None:
    """/metrics waits for the merged exposition, then sends it with Prometheus' content type."""
    exposition: Deferred[bytes] = Deferred()
    root = supervisorAdminResource(lambda: exposition, lambda: succeed(True))
    request = get(root, b"metrics")
    assert not request.finished
    exposition.callback(b'up{worker="0"} 1\n')
    assert request.finished and request.responseCode == 200
    assert b"".join(request.written) == b'up{worker="0"} 1\n'
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")


def test_readyz_is_200_or_503_and_healthz_always_200() -> None:
    """/readyz follows the workers' readiness; /healthz is 200 while the supervisor runs."""
    ready = [True]
    root = supervisorAdminResource(lambda: succeed(b""), lambda: succeed(ready[0]))
    assert get(root, b"readyz").responseCode == 200
    ready[0] = False
    request = get(root, b"readyz")
    assert (request.responseCode, b"".join(request.written)) == (503, b"not ready\n")
    assert get(root, b"healthz").responseCode == 200


def test_a_client_gone_before_the_answer_is_not_written_to() -> None:
    """When the scraper hangs up before the workers answered, nothing is written afterwards."""
    exposition: Deferred[bytes] = Deferred()
    root = supervisorAdminResource(lambda: exposition, lambda: succeed(True))
    request = get(root, b"metrics")
    request.processingFailed(Failure(ConnectionError("gone")))
    exposition.callback(b"x 1\n")
    assert request.written == []


def test_a_failure_is_a_500_and_logged() -> None:
    """A page whose answer fails is a 500, and the failure is logged."""
    events: list[dict] = []
    root = supervisorAdminResource(
        lambda: succeed(b""), lambda: Deferred.fromCoroutine(_fail()), events.append
    )
    assert get(root, b"readyz").responseCode == 500
    assert events and events[0]["log_failure"].check(ZeroDivisionError)


async def _fail() -> bool:
    return bool(1 / 0)


def test_the_site_keeps_no_access_log() -> None:
    """The admin site neither logs requests nor shows tracebacks."""
    site = supervisorAdminSite(lambda: succeed(b""), lambda: succeed(True), MemoryReactorClock())
    assert not site.displayTracebacks and site.log(DummyRequest([])) is None
