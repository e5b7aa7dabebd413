"""
The frames of one direction of a relayed WebSocket, read as they arrive, so
that data frames can pass on as the bytes they came as
(L{stproxy.websocket.passthrough}) when no extension was negotiated.

L{FrameReader} reads each frame's header (2 to 14 bytes: FIN, the RSV bits,
the opcode, MASK, a 7-, 16- or 64-bit length, the masking key) however TCP
cuts the stream, and keeps what the proxy must still check (RFC 6455):

  - 1002 for a protocol error: RSV bits set, a reserved opcode, a
    continuation with no message to continue, a new data frame inside an
    unfinished message, a control frame fragmented or over 125 bytes, a
    length not in its shortest form (or of 2**63 or more), masking wrong for
    the direction (a client's frames are masked, a server's never);
  - 1009 for a message over the limit (the sum of its fragments), found at
    the header of the frame that crosses it, before any of that frame
    passes on;
  - 1007 for a text message that is not UTF-8, as soon as the byte that
    makes it so arrives.  Text frames are held whole until checked, so a
    refused one never passes on in part; binary frames stream through.

What it reads goes to three hooks a subclass implements: L{forward} (data
frames as received, as many at once as one read holds), L{control} (each
whole control frame, for Autobahn to act on) and L{accepting} (whether data
frames pass on or are dropped: after a close they are dropped).
"""

from __future__ import annotations

import codecs

CONTINUATION, TEXT, BINARY = 0x0, 0x1, 0x2
CLOSE, PING, PONG = 0x8, 0x9, 0xA

# What becomes of the payload of the frame being read.
FORWARD, DROP, HOLD_TEXT, HOLD_CONTROL = range(4)

_utf8 = codecs.getincrementaldecoder("utf-8")


class FrameError(Exception):
    """The stream broke the protocol: the connection fails with C{code}."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def unmask(payload: bytes, key: bytes, offset: int = 0) -> bytes:
    """
    C{payload} XORed with the 4-byte masking C{key} (RFC 6455 section 5.3),
    C{payload} starting C{offset} bytes into its frame's payload.
    """
    n = len(payload)
    if not n:
        return b""
    turn = offset % 4
    key = key[turn:] + key[:turn]
    keys = key * (n // 4 + 1)
    data = int.from_bytes(payload, "little") ^ int.from_bytes(keys[:n], "little")
    return data.to_bytes(n, "little")


class FrameReader:
    """
    Reads the frames of one direction (L{feed}), however the stream is cut.

    @ivar messages: the whole messages passed on so far (counted at their
        FIN frame).
    @ivar payloadBytes: the payload bytes of those messages.
    @ivar stopped: nothing more is read (a refused frame, or a control frame
        after which the connection is done).
    """

    # Slots: two readers per idle session, each an instance dict of 0.8 KB otherwise.
    __slots__ = """messages payloadBytes stopped _maskBit _limit _head _open _mode _fin _length
        _remaining _held _key _keyAt _inMessage _text _size _passed _decoder""".split()

    def __init__(self, masked: bool, limit: int = 0) -> None:
        """
        @param masked: whether the frames come from a client (and so must be
            masked) rather than from a server (and so must not be).
        @param limit: the largest message taken, in bytes; 0 for none.
        """
        self.messages = self.payloadBytes = 0
        self.stopped = False
        self._maskBit = 0x80 if masked else 0
        self._limit = limit
        self._head = b""  # a header not yet whole
        self._open = True  # whether data frames pass on (accepting)
        # The frame being read.
        self._mode = FORWARD
        self._fin = 0
        self._length = 0
        self._remaining = 0
        self._held = bytearray()  # a text or control frame, held whole
        self._key = b""
        self._keyAt = 0
        # The message being read.
        self._inMessage = False
        self._text = False
        self._size = 0  # the sum of its frames' lengths so far
        self._passed = 0  # its payload bytes passed on so far
        self._decoder: codecs.IncrementalDecoder | None = None

    # The hooks.

    def forward(self, data: bytes) -> None:
        """Pass on C{data}: data frames (or a part of one) as received."""
        raise NotImplementedError

    def control(self, frame: bytes) -> bool:
        """Act on a whole control frame, as received; say whether reading goes on."""
        raise NotImplementedError

    def accepting(self) -> bool:
        """Whether data frames pass on now (asked at each read and after each control frame)."""
        raise NotImplementedError

    @property
    def openFrameRemaining(self) -> int:
        """
        The payload bytes still to come of a frame partly passed on: while
        there are any, whatever receives the frames is inside one.
        """
        return self._remaining if self._mode == FORWARD else 0

    def feed(self, data: bytes) -> None:
        """
        Read the next bytes of the stream.  Data frames pass on (or are held
        or dropped), control frames go to L{control}.  A frame that breaks
        the protocol raises L{FrameError}, once the frames before it have
        passed on; nothing more is read then.
        """
        if self.stopped:
            return
        if self._head:
            data, self._head = self._head + data, b""
        self._open = self.accepting()
        pos, end, span = 0, len(data), -1  # span: where the bytes to pass on start
        mask, limit = self._maskBit, self._limit
        try:
            if self._remaining:
                if self._mode == FORWARD:
                    span = 0
                pos = self._payload(data, 0, end)
            while pos < end and not self.stopped:
                if end - pos < 2:
                    self._head = data[pos:]
                    break
                b0, b1 = data[pos], data[pos + 1]
                n = b1 & 0x7F
                size = (2 if n < 126 else 4 if n == 126 else 10) + (4 if b1 & 0x80 else 0)
                if end - pos < size:
                    self._head = data[pos:]
                    break
                length = n if n < 126 else self._extendedLength(data, pos, n)
                simple = b0 == 0x82 and b1 & 0x80 == mask and not self._inMessage
                if simple and self._open and not 0 < limit < length:
                    mode = FORWARD  # a binary message in one frame: nothing more to check
                else:
                    mode = self._header(b0, b1, n, length)
                if mode != FORWARD:
                    if span >= 0:
                        self.forward(data[span:pos])
                        span = -1
                    if mode != DROP:
                        self._held += data[pos : pos + size]
                        self._key, self._keyAt = data[pos + size - 4 : pos + size], 0
                elif span < 0:
                    span = pos
                pos += size
                self._mode, self._fin = mode, b0 & 0x80
                self._length = self._remaining = length
                if mode == FORWARD and length <= end - pos:  # a whole frame: count it
                    pos += length
                    self._remaining = 0
                    if b0 & 0x80:
                        self.messages += 1
                        self.payloadBytes += self._passed + length
                        self._inMessage = False  # (as _endMessage: binary has no decoder)
                        self._passed = 0
                    else:
                        self._passed += length
                else:
                    pos = self._payload(data, pos, end)
        except FrameError:
            self.stopped = True
            if span >= 0:
                self.forward(data[span:pos])
            raise
        if span >= 0:
            self.forward(data if span == 0 and pos == end else data[span:pos])

    def _extendedLength(self, data: bytes, pos: int, n: int) -> int:
        if n == 126:
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                raise FrameError(1002, "a 16-bit length under 126")
        else:
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if length < 65536 or length >> 63:
                raise FrameError(1002, "a 64-bit length under 65536 or over 2**63 - 1")
        return length

    def _header(self, b0: int, b1: int, n: int, length: int) -> int:
        """Check a frame's header; what becomes of its payload."""
        if b0 & 0x70:
            raise FrameError(1002, f"RSV bits {(b0 >> 4) & 7} with no extension negotiated")
        if b1 & 0x80 != self._maskBit:
            wrong = "a masked server frame" if b1 & 0x80 else "an unmasked client frame"
            raise FrameError(1002, wrong)
        opcode = b0 & 0x0F
        if opcode & 0x08:
            if opcode > PONG:
                raise FrameError(1002, f"reserved control opcode {opcode}")
            if not b0 & 0x80:
                raise FrameError(1002, "a fragmented control frame")
            if n > 125:
                raise FrameError(1002, "a control frame over 125 bytes")
            return HOLD_CONTROL
        if opcode > BINARY:
            raise FrameError(1002, f"reserved data opcode {opcode}")
        if opcode == CONTINUATION:
            if not self._inMessage:
                raise FrameError(1002, "a continuation frame with no message to continue")
            self._size += length
        else:
            if self._inMessage:
                raise FrameError(1002, "a new message inside an unfinished one")
            self._inMessage, self._text, self._size = True, opcode == TEXT, length
            self._decoder = _utf8() if opcode == TEXT else None
        if 0 < self._limit < self._size:
            raise FrameError(1009, f"message of {self._size} bytes over the limit of {self._limit}")
        if not self._open:
            return DROP
        return HOLD_TEXT if self._text else FORWARD

    def _payload(self, data: bytes, pos: int, end: int) -> int:
        """Read what C{data} holds of the current frame's payload, from C{pos}; where it ends."""
        take = min(self._remaining, end - pos)
        mode = self._mode
        if mode == HOLD_TEXT or mode == HOLD_CONTROL:
            chunk = data[pos : pos + take]
            if mode == HOLD_TEXT:
                self._checkText(chunk)
            self._held += chunk
        self._remaining -= take
        pos += take
        if not self._remaining:
            self._frameEnd()
        return pos

    def _checkText(self, chunk: bytes) -> None:
        """Refuse (1007) a text message as soon as what came of it cannot be UTF-8."""
        if self._maskBit:
            chunk, self._keyAt = unmask(chunk, self._key, self._keyAt), self._keyAt + len(chunk)
        decoder = self._decoder
        assert decoder is not None
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as e:
            raise FrameError(1007, f"a text message that is not UTF-8: {e.reason}") from None
        # CPython's decoder waits for a third byte after ED A0..ED BF (a
        # UTF-16 surrogate, never valid): the only prefix it lets pass.
        pending = decoder.getstate()[0]
        if len(pending) > 1 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise FrameError(1007, "a text message that is not UTF-8: a surrogate")

    def _frameEnd(self) -> None:
        mode, fin = self._mode, self._fin
        if mode == HOLD_CONTROL:
            frame = bytes(self._held)
            self._held = bytearray()
            if self.control(frame):
                self._open = self.accepting()
            else:
                self.stopped = True
            return
        if mode == HOLD_TEXT:
            if fin:
                try:
                    assert self._decoder is not None
                    self._decoder.decode(b"", True)
                except UnicodeDecodeError:
                    raise FrameError(1007, "a text message ending inside a character") from None
            frame = bytes(self._held)
            self._held = bytearray()
            if self._open:
                self.forward(frame)
            else:
                mode = DROP
        if mode != DROP:
            self._passed += self._length
        if fin:
            if mode != DROP:
                self.messages += 1
                self.payloadBytes += self._passed
            self._endMessage()

    def _endMessage(self) -> None:
        self._inMessage = False
        self._passed = 0
        self._decoder = None


__all__ = [
    "BINARY", "CLOSE", "CONTINUATION", "PING", "PONG", "TEXT", "FrameError", "FrameReader", "unmask",
]  # fmt: skip
