"""
What is counted and logged once per HTTP request (stproxy.http.accesslog), through the site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fake_upstream import Proxy
from twisted.logger import globalLogPublisher

from stproxy.ops.metrics import Metrics


def test_a_request_abandoned_before_any_answer_is_logged_and_counted_as_499(tmp_path: Path) -> None:
    """nginx's convention: the access log and the metrics show the client gave up."""
    metrics = Metrics()
    proxy = Proxy(metrics=metrics)
    logPath = tmp_path / "access.log"
    proxy.site.logPath = str(logPath)
    proxy.site.startFactory()
    proxy.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.disconnect()
    proxy.site.stopFactory()
    assert '"GET /slow HTTP/1.1" 499 ' in logPath.read_text()
    assert metrics.registry.get_sample_value(
        "stproxy_http_requests_total", {"method": "GET", "status_class": "4xx"}
    ) == 1


@pytest.mark.parametrize("accessLog, lines", [(None, 1), ("off", 0)], ids=["main-log", "off"])
def test_access_log_off_writes_no_line_and_still_counts(accessLog: str | None, lines: int) -> None:
    """Without --access-log a served request is one line in the main log; with --access-log off none, still counted."""
    metrics = Metrics()
    proxy = Proxy(metrics=metrics, accessLog=accessLog)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        proxy.site.startFactory()
        proxy.send(b"GET /page HTTP/1.1\r\nHost: app\r\n\r\n")
        response = proxy.agent.requests[0].respond(200, length=5)
        response.deliver(b"hello")
        response.finish()
        proxy.site.stopFactory()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert b"hello" in proxy.output()
    logged = [e for e in events if '"GET /page HTTP/1.1" 200' in str(e.get("log_io", ""))]
    assert len(logged) == lines
    assert metrics.registry.get_sample_value(
        "stproxy_http_requests_total", {"method": "GET", "status_class": "2xx"}
    ) == 1
