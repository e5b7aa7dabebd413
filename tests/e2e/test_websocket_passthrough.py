"""
Raw passage (``stproxy/websocket/passthrough.py``) end to end: a client that offers no
permessage-deflate (the ``websockets`` library with ``compression=None``, where Chromium always
offers it and so keeps the message path) runs a Streamlit session through a real
``twistd stproxy`` in front of a real Streamlit (``tests/apps/basic_app.py``): its frames, and
Streamlit's, pass through the proxy as the bytes they came as.
"""

from __future__ import annotations

from harness import ProxyProcess
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import ClientConnection, connect

PROTOCOLS = ["streamlit", "PLACEHOLDER_AUTH_TOKEN"]


def open_session(proxy: ProxyProcess) -> ClientConnection:
    """A WebSocket to Streamlit's stream through the proxy, offering no extension."""
    return connect(
        f"ws://127.0.0.1:{proxy.port}/_stcore/stream",
        subprotocols=PROTOCOLS,  # type: ignore[arg-type]
        origin=f"http://127.0.0.1:{proxy.port}",  # type: ignore[arg-type]
        compression=None,
        max_size=None,
        open_timeout=10,
    )


def run_script(ws: ClientConnection, rerun: bytes | list[bytes]) -> list[str]:
    """Send a rerun (whole, or as a list of fragments); the kinds of ForwardMsg until the script ends."""
    ws.send(rerun)
    kinds: list[str] = []
    while "script_finished" not in kinds:
        payload = ws.recv(timeout=15)
        assert isinstance(payload, bytes), "Streamlit's message came as text"
        message = ForwardMsg()
        message.ParseFromString(payload)
        kinds.append(message.WhichOneof("type"))
    return kinds


def rerun_message() -> bytes:
    return BackMsg(
        rerun_script=ClientState(query_string="", page_script_hash="")
    ).SerializeToString()


def test_a_session_without_deflate_runs_through_raw_passage(proxy: ProxyProcess) -> None:
    """
    No extension is negotiated; the script runs (Streamlit's binary frames reach the client
    intact, the client's masked frames reach Streamlit intact), a ping is answered, and the
    close code passes both ways; the session log line counts the messages each way.
    """
    since = len(proxy.output())
    with open_session(proxy) as ws:
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert ws.subprotocol == "streamlit"
        kinds = run_script(ws, rerun_message())
        assert kinds[0] == "new_session" and "delta" in kinds
        assert ws.ping(b"keepalive?").wait(10)
        ws.close(1000, "done")
        assert ws.protocol.close_rcvd is not None
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (1000, "done")
    line = proxy.wait_for_output(
        r"WebSocket session /_stcore/stream from 127\.0\.0\.1 ended after [\d.]+s: "
        r"(\d+) messages \((\d+) bytes\) to upstream, (\d+) \((\d+) bytes\) to browser; "
        r"closed by browser with 1000",
        since=since,
    )
    assert int(line.group(1)) == 1 and int(line.group(2)) == len(rerun_message())
    assert int(line.group(3)) >= len(kinds)


def test_a_message_in_fragments_reaches_streamlit_whole(proxy: ProxyProcess) -> None:
    """A BackMsg sent in three fragments passes on as its fragments; Streamlit reads one message."""
    rerun = rerun_message()
    third = len(rerun) // 3
    with open_session(proxy) as ws:
        kinds = run_script(ws, [rerun[:third], rerun[third : 2 * third], rerun[2 * third :]])
        assert "script_finished" in kinds
        ws.close(1000)
