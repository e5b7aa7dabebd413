"""
What is counted and logged once per HTTP request (stproxy.http.accesslog), through the site.
"""

from __future__ import annotations

from pathlib import Path

from fake_upstream import Proxy
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
