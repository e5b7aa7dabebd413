"""
The app the replica browser tests drive (``tests/e2e/test_replicas.py``): one copy runs per replica.

Each part exercises one piece of state Streamlit keeps in a single server process, and its text is
stable so tests can wait for it:

- "Replica: <address>:<port>": which replica rendered this session (Streamlit's own server options);
- "Increment" / "Count: N": a rerun per click over the WebSocket, state in ``st.session_state``;
- "Upload a file" / "sha256: <hex>": ``PUT /_stcore/upload_file/<session>/<file>``, valid only on the
  replica holding the session;
- an image made in memory, served from that replica's ``/media/``;
- "Download the file": ``st.download_button`` whose file is also served from ``/media/``; its
  content names the replica, so the test can compare what the browser saved with what it expects.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import streamlit as st


def gradient_png(width: int = 64, height: int = 32) -> bytes:
    """A small RGB gradient as PNG bytes, built with the stdlib only (as ``deploy/demo_app.py``)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 96))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    signature = b"\x89PNG\r\n\x1a\n"
    return (
        signature
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def download_content(replica: str) -> bytes:
    """The bytes the download button offers on ``replica`` (the tests compute the same)."""
    return f"stproxy replica download from {replica}\n".encode() + bytes(range(256)) * 16


replica = f"{st.get_option('server.address')}:{st.get_option('server.port')}"

st.title("stproxy replica app")
st.text(f"Replica: {replica}")

if "count" not in st.session_state:
    st.session_state.count = 0
if st.button("Increment"):
    st.session_state.count += 1
st.text(f"Count: {st.session_state.count}")

uploaded = st.file_uploader("Upload a file")
if uploaded is not None:
    st.text(f"sha256: {hashlib.sha256(uploaded.getvalue()).hexdigest()}")

st.image(gradient_png(), caption="Generated image")

st.download_button(
    "Download the file",
    data=download_content(replica),
    file_name="replica-download.bin",
    mime="application/octet-stream",
    on_click="ignore",
)
