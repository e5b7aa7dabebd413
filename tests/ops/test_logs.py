"""
Log redaction (stproxy.ops.logs): no cookie or credential reaches a log line.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(
    "text, secret",
    [
        ("Cookie: _streamlit_xsrf=2|a|b", "_streamlit_xsrf"),
        ("authorization=Bearer s3cr3t", "s3cr3t"),
        ("{'Authorization': 'Bearer s3cr3t'}", "s3cr3t"),
        ("Headers({b'cookie': [b'session=s3cr3t'], b'x': [b'y']})", "s3cr3t"),
        ("Set-Cookie: session=s3cr3t; HttpOnly", "s3cr3t"),
    ],
)
def test_redact_removes_credentials_in_every_shape_they_are_printed(text: str, secret: str) -> None:
    """
    Cookies and credentials are replaced by [redacted] whether logged as header lines, key=value
    pairs, dicts or Headers reprs.
    """
    from stproxy.ops.logs import redact

    assert secret not in redact(text)
    assert "[redacted]" in redact(text)


def test_events_with_secrets_in_non_text_fields_are_rendered_redacted() -> None:
    """A Headers object in an event cannot carry a cookie value to the log."""
    from twisted.logger import formatEvent
    from twisted.web.http_headers import Headers

    from stproxy.ops.logs import _Redacting

    seen: list[dict[str, Any]] = []
    _Redacting(seen.append)(
        {"log_format": "got {headers}", "headers": Headers({b"cookie": [b"session=s3cr3t"]})}
    )
    assert "s3cr3t" not in formatEvent(seen[0])


def test_events_showing_only_text_pass_as_they_are_with_their_secrets_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    An event whose format shows only strings and numbers (an access line, per request) is not
    rendered to be checked: its text fields are redacted as they are, and a non-text field its
    format shows still gets the full check.
    """
    from twisted.logger import formatEvent

    import stproxy.ops.logs as logs

    rendered: list[object] = []

    def counting(event: Any) -> str:
        rendered.append(event)
        return formatEvent(event)

    monkeypatch.setattr(logs, "formatEvent", counting)
    seen: list[dict[str, Any]] = []
    redacting = logs._Redacting(seen.append)
    plain = {"log_format": "{peer} GET / {status}", "peer": "10.0.0.7", "status": 200}
    redacting(plain)
    redacting({"log_format": "{line}", "line": "Cookie: session=s3cr3t"})
    assert seen[0] is plain and rendered == []
    assert "s3cr3t" not in formatEvent(seen[1])
    redacting({"log_format": "{raw!r}", "raw": b"Cookie: session=s3cr3t"})
    assert len(rendered) == 1 and "s3cr3t" not in formatEvent(seen[2])
