"""
The pure functions that build the upstream WebSocket handshake (stproxy.websocket.handshake),
and the settings the relay is made with.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from stproxy.config import WebSocketSettings
from stproxy.websocket.handshake import (
    acceptHeaders,
    parseRequestHead,
    receivedHandshake,
    spliceHandshake,
    upstreamRequestHead,
)


class HandshakeTextTests(TestCase):
    """The pure functions that build the upstream handshake."""

    def test_splice_keeps_autobahns_key_and_version_only(self):
        """
        Autobahn's own Host, User-Agent, Origin and protocol lines are
        replaced by the browser's; its key and version lines stay.
        """
        generated = (
            b"GET / HTTP/1.1\r\nUser-Agent: AutobahnPython\r\nHost: 127.0.0.1:8501\r\n"
            b"Upgrade: WebSocket\r\nConnection: Upgrade\r\nPragma: no-cache\r\n"
            b"Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Protocol: streamlit\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        headers = Headers()
        headers.addRawHeader(b"Cookie", b"a=\xe9")
        headers.addRawHeader(b"Sec-WebSocket-Protocol", b"streamlit, tok")
        head = upstreamRequestHead(b"/p?q", b"app.example", headers)
        self.assertEqual(
            spliceHandshake(head, generated),
            b"GET /p?q HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nCookie: a=\xe9\r\n"
            # Twisted's Headers spell names its own way; values stay as they are.
            b"Sec-Websocket-Protocol: streamlit, tok\r\n"
            b"Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )

    def test_repeated_lines_stay_separate_and_a_second_host_leaves_none(self):
        """
        Parsing keeps each received line (two Cookie lines are two values,
        sent upstream as two lines); two Host lines give no Host at all.
        """
        head = b"GET /s HTTP/1.1\r\nHost: a.example\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
        target, host, headers, *_ = parseRequestHead(head)
        self.assertEqual((target, host), (b"/s", b"a.example"))
        self.assertEqual(headers.getRawHeaders(b"cookie"), [b"a=1", b"b=2"])
        self.assertIn(b"Cookie: a=1\r\nCookie: b=2\r\n", upstreamRequestHead(target, host, headers))
        twice = Headers({b"Host": [b"a.example", b"b.example"]})
        self.assertIsNone(receivedHandshake(b"/s", twice).host)

    def test_the_101_sets_each_cookie_on_its_own_line_and_no_unsafe_one(self):
        """
        Every cookie gets a Set-Cookie line; one that is not printable ASCII
        (a line break would split Autobahn's response) is left out; none, no headers.
        """
        self.assertEqual(
            acceptHeaders([b"pin=r1; Path=/", b"_oauth2_proxy=new", b"x=1\r\nX-Evil: 1", b"c=\xe9"]),
            {"Set-Cookie": ["pin=r1; Path=/", "_oauth2_proxy=new"]},
        )
        self.assertEqual(acceptHeaders([]), {})
        self.assertEqual(acceptHeaders([b"bad\n"]), {})

    def test_settings_reject_negative_values(self):
        """Nonsense settings fail when made, not when a browser connects."""
        self.assertRaises(ValueError, WebSocketSettings, pingInterval=-1)
        self.assertRaises(ValueError, WebSocketSettings, handshakeTimeout=0)
