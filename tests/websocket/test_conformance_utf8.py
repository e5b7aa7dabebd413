"""
The Autobahn TestSuite's UTF-8 handling cases (6.x) against the relay in front of an echo
server: a valid text message comes back exactly however it is fragmented, even inside a code
point; a text message that is not UTF-8 fails the connection with 1007, as soon as the byte
that makes it invalid arrives.  How a case is set up and judged is in
``tests/websocket_conformance.py``.

Every 6.x case of the suite is here, under its id: 6.1-6.4 written out, and 6.5-6.23 from
the suite's table of sequences (Markus Kuhn's UTF-8 decoder capability and stress test, plus
non-characters and specials; ``case6_x_x.py``), one text message each, in its order.  Where
6.4.x waits a second to see the connection still open after the valid first part, the case
sends a ping and waits for its pong.
"""

from __future__ import annotations

from websocket_conformance import ConformanceTestCase, addCases
from websocket_wire import CONTINUATION, PING, TEXT, frame

#: "κόσμε" (its ό is U+1F79, three bytes), the sample of the suite and of Markus Kuhn's test.
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
HELLO = "Hello-µ@ßöäüàá-UTF-8!!".encode()
#: κόσμε, a UTF-16 surrogate (U+D800), "edited" (6.3.x).
SURROGATE = KOSME + b"\xed\xa0\x80edited"
#: κόσμε, U+110000 (out of range from its second byte on), "edited", in three parts (6.4.x).
TOO_HIGH = (KOSME, b"\xf4\x90\x80\x80", b"edited")
TOO_HIGH_AT_BYTE = (KOSME + b"\xf4", b"\x90", b"\x80\x80edited")


def prefixes(text: bytes) -> list[tuple[bool, bytes]]:
    """Every prefix of C{text}, valid where it ends on a code point."""
    items = []
    for end in range(1, len(text) + 1):
        try:
            text[:end].decode("utf-8")
            items.append((True, text[:end]))
        except UnicodeDecodeError:
            items.append((False, text[:end]))
    return items


def nonCharacters() -> list[bytes]:
    """U+FFFE, U+FFFF and U+nFFFE, U+nFFFF of each plane, as the suite lists them."""
    found = [b"\xef\xbf\xbe", b"\xef\xbf\xbf"]
    for first in b"\xf0\xf1\xf2\xf3\xf4":
        for second in b"\x8f\x9f\xaf\xbf":
            if (first, second) != (0xF0, 0x8F) and (first != 0xF4 or second == 0x8F):
                found += [bytes((first, second, 0xBF, 0xBE)), bytes((first, second, 0xBF, 0xBF))]
    return found


def hexes(valid: bool, text: str) -> list[tuple[bool, bytes]]:
    return [(valid, bytes.fromhex(item)) for item in text.split()]


MISSING_LAST_BYTE = "c0 e080 f08080 f8808080 fc80808080 df efbf f7bfbf fbbfbfbf fdbfbfbfbf"

#: The suite's 6.5 to 6.23, in its order: (what, [(valid, bytes), ...]).
SEQUENCES = [
    ("valid text", [(True, b) for b in (b"hello$world", "hello¢world".encode(), "hello€world".encode(), "hello𤭢world".encode(), KOSME)]),
    ("a prefix of κόσμε", prefixes(KOSME)),
    ("the first code point of each length", hexes(True, "00 c280 e0a080 f0908080")),
    ("a 5- or 6-byte sequence", hexes(False, "f888808080 fc8480808080")),
    ("the last code point of each length", hexes(True, "7f dfbf efbfbf f48fbfbf")),
    ("a 4- to 6-byte sequence past U+10FFFF", hexes(False, "f7bfbfbf fbbfbfbfbf fdbfbfbfbfbf")),
    ("a boundary", hexes(True, "ed9fbf ee8080 efbfbd f48fbfbf") + hexes(False, "f4908080")),
    ("unexpected continuation bytes", hexes(False, "80 bf 80bf 80bf80 80bf80bf 80bf80bf80 80bf80bf80bf") + [(False, bytes(range(0x80, 0xBF)))]),
    ("lonely start bytes", [(False, b"".join(bytes((i, 0x20)) for i in range(a, b))) for a, b in ((0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD))]),
    ("a sequence missing its last byte", hexes(False, MISSING_LAST_BYTE)),
    ("incomplete sequences one after another", hexes(False, MISSING_LAST_BYTE.replace(" ", ""))),
    ("impossible bytes", hexes(False, "fe ff fefeffff")),
    ("an overlong '/'", hexes(False, "c0af e080af f08080af f8808080af fc80808080af")),
    ("the largest overlong sequence", hexes(False, "c1bf e09fbf f08fbfbf f887bfbfbf fc83bfbfbfbf")),
    ("an overlong NUL", hexes(False, "c080 e08080 f0808080 f880808080 fc8080808080")),
    ("a lone UTF-16 surrogate", hexes(False, "eda080 edadbf edae80 edafbf edb080 edbe80 edbfbf")),
    ("a pair of UTF-16 surrogates", hexes(False, " ".join(h + low for h in ("eda080", "edadbf", "edae80", "edafbf") for low in ("edb080", "edbfbf")))),
    ("a non-character (valid)", [(True, b) for b in nonCharacters()]),
    ("a special (valid)", [(True, b"\xef\xbf" + bytes((i,))) for i in range(0xB9, 0xC0)]),
]  # fmt: skip


class Utf8Handling(ConformanceTestCase):
    """6.x: text is checked as UTF-8, incrementally, across fragments."""


def fragments(parts: list[bytes]) -> list[bytes]:
    """One text message: C{parts} as its fragments."""
    last = len(parts) - 1
    return [frame(TEXT if i == 0 else CONTINUATION, p, fin=i == last) for i, p in enumerate(parts)]


def byteByByte(text: bytes) -> list[bytes]:
    return [text[i : i + 1] for i in range(len(text))]


def echoedText(self: ConformanceTestCase, parts: list[bytes]) -> object:
    client = yield self.connect()
    client.write(*fragments(parts))
    yield self.expectEvents(client, ("text", b"".join(parts)))
    yield self.closeNormally(client)


def refusedText(self: ConformanceTestCase, parts: list[bytes]) -> object:
    client = yield self.connect()
    client.write(*fragments(parts))
    yield self.expectFailure(client, 1007)


def failsFast(
    self: ConformanceTestCase, parts: tuple[bytes, bytes, bytes], oneFrame: bool
) -> object:
    """
    The first part is taken, and the second, which makes the text invalid, fails the
    connection with 1007 though the third is never sent.
    """
    client = yield self.connect()
    first, second, _ = parts
    before: tuple = ()
    if oneFrame:
        # One frame for the whole text, of which the first two parts go, a write each.
        whole = frame(TEXT, b"".join(parts))
        end = len(whole) - len(b"".join(parts)) + len(first)
        yield client.writeChopped([whole[:end], whole[end : end + len(second)]])
    else:
        # The suite waits a second to see the connection still open; a pong shows it.
        before = (("pong", b"still open?"),)
        client.write(frame(TEXT, first, fin=False), frame(PING, b"still open?"))
        yield self.expectEvents(client, *before)
        client.write(frame(CONTINUATION, second, fin=False))
    yield self.expectFailure(client, 1007, *before)


addCases(
    Utf8Handling,
    echoedText,
    ("6.1.1", [b""], "an empty text message comes back empty."),
    ("6.1.2", [b"", b"", b""], "a text message of three empty fragments comes back empty."),
    (
        "6.1.3",
        [b"", b"middle frame payload", b""],
        "empty, full, empty fragments come back as one.",
    ),
    ("6.2.1", [HELLO], "a valid UTF-8 text message in one frame comes back exactly."),
    ("6.2.2", [HELLO[:15], HELLO[15:]], "a valid text split between code points comes back whole."),
    ("6.2.3", byteByByte(HELLO), "a valid text in 1-byte fragments comes back whole."),
    (
        "6.2.4",
        byteByByte(KOSME),
        "κόσμε in 1-byte fragments, inside code points, comes back whole.",
    ),
)
addCases(
    Utf8Handling,
    refusedText,
    ("6.3.1", [SURROGATE], "a text message with a UTF-16 surrogate in it fails with 1007."),
    ("6.3.2", byteByByte(SURROGATE), "the same in 1-byte fragments fails with 1007."),
)
addCases(
    Utf8Handling,
    failsFast,
    ("6.4.1", TOO_HIGH, False, "a fragment past U+10FFFF fails with 1007 before the text ends."),
    ("6.4.2", TOO_HIGH_AT_BYTE, False, "a fragment of just the byte past U+10FFFF: 1007 at once."),
    ("6.4.3", TOO_HIGH, True, "a frame part way through, past U+10FFFF: 1007 before it ends."),
    ("6.4.4", TOO_HIGH_AT_BYTE, True, "6.4.3 cut right after the invalid byte: 1007 at once."),
)
for group, (what, items) in enumerate(SEQUENCES, 5):
    addCases(
        Utf8Handling,
        echoedText,
        *(
            (f"6.{group}.{n}", [text], f"{what}, {text.hex()}, comes back exactly.")
            for n, (valid, text) in enumerate(items, 1)
            if valid
        ),
    )
    addCases(
        Utf8Handling,
        refusedText,
        *(
            (f"6.{group}.{n}", [text], f"{what}, {text.hex()}, is not UTF-8: 1007.")
            for n, (valid, text) in enumerate(items, 1)
            if not valid
        ),
    )
