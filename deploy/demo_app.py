"""
The stproxy demo app, and the app the browser tests drive (``tests/e2e/test_browser.py``).

Each part exercises one path through the proxy, and its text is stable so tests can wait for it:

- "Increment" / "Count: N": a rerun per click over the WebSocket, state in ``st.session_state``;
- "Upload a file" / "sha256: <hex>": ``PUT /_stcore/upload_file/...`` with the XSRF cookie and header;
- an image made in memory: served from ``/media/...``;
- "Run 500 updates" / "Update 500 of 500": a burst of ForwardMsgs down the WebSocket.

Run it behind the proxy with ``sh deploy/demo.sh`` (the README's first command).
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import streamlit as st


def gradient_png(width: int = 64, height: int = 32) -> bytes:
    """A small RGB gradient as PNG bytes, built with the stdlib only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 160))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


st.title("stproxy demo")

if "count" not in st.session_state:
    st.session_state.count = 0
if st.button("Increment"):
    st.session_state.count += 1
st.text(f"Count: {st.session_state.count}")

uploaded = st.file_uploader("Upload a file")
if uploaded is not None:
    st.text(f"sha256: {hashlib.sha256(uploaded.getvalue()).hexdigest()}")

st.image(gradient_png(), caption="Generated image")

placeholder = st.empty()
if st.button("Run 500 updates"):
    for i in range(1, 501):
        placeholder.text(f"Update {i} of 500")
