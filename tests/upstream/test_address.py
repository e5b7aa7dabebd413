"""Where requests go (stproxy.upstream.address): the forms C{--upstream} accepts."""

from __future__ import annotations

import pytest

from option_parsing import parse
from stproxy.upstream.address import UpstreamAddress


@pytest.mark.parametrize(
    "text, expected",
    [
        ("localhost:8501", UpstreamAddress("http", "localhost", 8501)),
        ("http://st.internal:9000", UpstreamAddress("http", "st.internal", 9000)),
        ("https://st.internal", UpstreamAddress("https", "st.internal", 443)),
        ("http://[::1]:8501", UpstreamAddress("http", "::1", 8501)),
    ],
)
def test_upstream_forms(text: str, expected: UpstreamAddress) -> None:
    """
    --upstream accepts host:port, http:// and https:// URLs (443 by default) and bracketed IPv6
    addresses.
    """
    assert parse("--upstream", text).config.upstream == expected
