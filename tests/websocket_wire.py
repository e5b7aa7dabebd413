"""
The WebSocket wire format by hand, for the conformance cases
(``tests/websocket/test_conformance_*.py``): a frame builder that writes any frame (any
opcode, RSV bits and FIN, lengths in 7, 16 or 64 bits, masked), a frame reader, the client's
half of permessage-deflate, and L{RawWebSocket}, a client that sends the upgrade and then
whatever bytes a case writes, and reads every frame the server sends back, noting what breaks
RFC 6455.

Autobahn's own client cannot be made to send invalid frames, and it would hide what the proxy
sent behind its own checks; this one hides nothing.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Generator

from twisted.internet import defer, protocol, reactor, task

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "ClientDeflate",
    "Frame",
    "RawWebSocket",
    "closePayload",
    "frame",
    "masked",
    "readFrames",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def masked(payload: bytes, key: bytes) -> bytes:
    """C{payload} XORed with the 4-byte C{key} (RFC 6455 section 5.3), fast for megabytes."""
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little"
    )


def frame(
    opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, key: bytes | None = None
) -> bytes:
    """
    One client frame as bytes: FIN, the three RSV bits (C{rsv}, 0-7, RSV1 the highest), the
    opcode, a 7-, 16- or 64-bit length as the payload needs, and the payload masked with
    C{key} (random by default).  Nothing is checked: any opcode and bits can be sent.
    """
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 2**16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4) if key is None else key
    return header + key + masked(payload, key)


def closePayload(code: int | None = None, reason: bytes = b"") -> bytes:
    """A close frame's payload: nothing, or the 16-bit code and the reason."""
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass
class Frame:
    """One frame as the proxy sent it."""

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes


def readFrames(buffer: bytearray) -> list[Frame]:
    """The whole frames at the start of C{buffer}, removed from it; a partial one stays."""
    frames, start = [], 0
    while len(buffer) - start >= 2:
        first, second = buffer[start], buffer[start + 1]
        length, at = second & 0x7F, start + 2
        if length == 126:
            if len(buffer) - at < 2:
                break
            (length,), at = struct.unpack_from("!H", buffer, at), at + 2
        elif length == 127:
            if len(buffer) - at < 8:
                break
            (length,), at = struct.unpack_from("!Q", buffer, at), at + 8
        key = None
        if second & 0x80:
            key, at = bytes(buffer[at : at + 4]), at + 4
        if len(buffer) < at + length:
            break
        payload = bytes(buffer[at : at + length])
        if key is not None:
            payload = masked(payload, key)
        frames.append(
            Frame(bool(first & 0x80), (first >> 4) & 7, first & 0xF, key is not None, payload)
        )
        start = at + length
    del buffer[:start]
    return frames


class ClientDeflate:
    """
    The client's half of permessage-deflate (RFC 7692) with the parameters the proxy
    answered: messages compressed for sending, and the proxy's inflated with the window and
    context takeover it agreed to, so a proxy that broke its word fails to inflate.
    """

    def __init__(self, parameters: dict[str, str | None]) -> None:
        self.parameters = parameters
        self._serverBits = int(parameters.get("server_max_window_bits") or 15)
        self._clientBits = int(parameters.get("client_max_window_bits") or 15)
        self._serverReset = "server_no_context_takeover" in parameters
        self._clientReset = "client_no_context_takeover" in parameters
        self._compressor: Any = None
        self._decompressor: Any = None

    def compress(self, message: bytes) -> bytes:
        if self._compressor is None or self._clientReset:
            self._compressor = zlib.compressobj(6, zlib.DEFLATED, -self._clientBits)
        data = self._compressor.compress(message) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        return data[:-4]

    def decompress(self, payload: bytes) -> bytes:
        """
        Inflate a message from the proxy at most a window's worth at a time, so a
        back-reference past the agreed window (or into the last message, without context
        takeover) fails rather than being satisfied from what was inflated in the same call.
        """
        if self._decompressor is None or self._serverReset:
            self._decompressor = zlib.decompressobj(-self._serverBits)
        step, out, rest = 2**self._serverBits, [], payload + b"\x00\x00\xff\xff"
        while True:
            piece = self._decompressor.decompress(rest, step)
            out.append(piece)
            rest = self._decompressor.unconsumed_tail
            if not rest and len(piece) < step:
                return b"".join(out)


def extensionParameters(header: bytes) -> dict[str, str | None]:
    """C{permessage-deflate; a; b=9} as C{{"a": None, "b": "9"}}, the name left out."""
    parameters: dict[str, str | None] = {}
    for item in header.decode("ascii").split(";")[1:]:
        name, _, value = item.strip().partition("=")
        parameters[name] = value.strip('"') or None
    return parameters


class RawWebSocket(protocol.Protocol):
    """
    Sends the upgrade, then whatever bytes a case writes; reads the proxy's frames into
    C{events} (C{("text"|"binary", payload)}, C{("ping"|"pong", payload)},
    C{("close", code, reason)}) and notes in C{violations} every way they break RFC 6455
    (a masked frame, RSV bits nobody agreed to, anything after a close, ...).

    @ivar status: the handshake's HTTP status, once its head arrived.
    @ivar deflate: the client's permessage-deflate, when the proxy accepted it.
    """

    status: int | None = None
    deflate: ClientDeflate | None = None
    compressedMessages = 0  # messages that came deflated
    closed = False  # a close frame arrived
    gone = False  # the TCP connection is gone

    def __init__(self, request: bytes, changed: Callable[[], None]) -> None:
        """@param changed: called whenever something arrived or the connection ended."""
        self.request = request
        self.changed = changed
        self.head = b""
        self.events: list[tuple] = []
        self.violations: list[str] = []
        self._buffer = bytearray()
        self._message: tuple[int, bool, list[bytes]] | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.write(self.request)

    def connectionLost(self, reason: object = None) -> None:
        self.gone = True
        self.changed()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self.status is None:
            head, found, _ = bytes(self._buffer).partition(b"\r\n\r\n")
            if not found:
                return
            del self._buffer[: len(head) + 4]
            self._handshake(head)
        for received in readFrames(self._buffer):
            self._frame(received)
        self.changed()

    def _handshake(self, head: bytes) -> None:
        self.head = head
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-extensions":
                self.deflate = ClientDeflate(extensionParameters(value.strip()))

    def _frame(self, received: Frame) -> None:
        if self.closed:
            self.violations.append(f"a frame (opcode {received.opcode}) after the close frame")
        if received.masked:
            self.violations.append("a masked frame from the server")
        if received.opcode >= 8:
            self._control(received)
        else:
            self._data(received)

    def _control(self, received: Frame) -> None:
        if not received.fin or received.rsv or len(received.payload) > 125:
            self.violations.append(
                f"a control frame fragmented, with RSV bits or too long: {received}"
            )
        if received.opcode == PING:
            self.events.append(("ping", received.payload))
        elif received.opcode == PONG:
            self.events.append(("pong", received.payload))
        elif received.opcode == CLOSE:
            self.closed = True
            payload = received.payload
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.events.append(("close", code, payload[2:]))
        else:
            self.violations.append(f"a reserved opcode {received.opcode}")

    def _data(self, received: Frame) -> None:
        compressed = bool(received.rsv & 4) and self.deflate is not None
        if received.rsv & ~(4 if self.deflate is not None else 0) & 7:
            self.violations.append(f"RSV bits {received.rsv} nobody agreed to")
        if received.opcode == CONTINUATION:
            if self._message is None:
                self.violations.append("a continuation frame with no message to continue")
                return
            if received.rsv:
                self.violations.append("RSV bits on a continuation frame")
            self._message[2].append(received.payload)
        elif received.opcode in (TEXT, BINARY):
            if self._message is not None:
                self.violations.append("a new message before the last one ended")
            self._message = (received.opcode, compressed, [received.payload])
        else:
            self.violations.append(f"a reserved opcode {received.opcode}")
            return
        if received.fin:
            opcode, compressed, parts = self._message
            self._message = None
            payload = b"".join(parts)
            if compressed:
                assert self.deflate is not None
                try:
                    payload = self.deflate.decompress(payload)
                except zlib.error as e:
                    self.violations.append(f"a message that does not inflate: {e}")
                    self.events.append(("not inflated", payload))
                    return
            self.compressedMessages += compressed
            if opcode == TEXT:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    self.violations.append("a text message that is not UTF-8")
            self.events.append(("text" if opcode == TEXT else "binary", payload))

    # What a case sends.

    def write(self, *data: bytes) -> None:
        """Write bytes (frames) as they are, in one write."""
        self.transport.write(b"".join(data))

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> None:
        """Write one frame (see L{frame})."""
        self.transport.write(frame(opcode, payload, fin, rsv))

    def sendClose(self, code: int | None = 1000, reason: bytes = b"") -> None:
        """Write a close frame with C{code} (none if None) and C{reason}."""
        self.send(CLOSE, closePayload(code, reason))

    @defer.inlineCallbacks
    def writeChopped(self, data: bytes | list[bytes], size: int | None = None) -> Generator:
        """
        Write C{data} in chops of C{size} bytes (or, given a list of frames, one frame per
        chop), each in a reactor turn of its own, so each leaves in a write of its own.
        """
        chops = data if size is None else [data[i : i + size] for i in range(0, len(data), size)]
        for chop in chops:
            self.transport.write(chop)
            yield task.deferLater(reactor, 0, lambda: None)

    def writeAs(self, frames: list[bytes], how: str) -> defer.Deferred:
        """
        Write C{frames} as the suite's cases do: C{"together"} in one write, C{"frames"} one
        frame per write, C{"octets"} one byte per write; fires once all are written.
        """
        if how == "together":
            self.write(*frames)
            return defer.succeed(None)
        if how == "frames":
            return self.writeChopped(frames)
        assert how == "octets", how
        return self.writeChopped(b"".join(frames), 1)
