"""
The loopback DNS server the discovery tests rely on (``tests/dns_server.py``), asked with raw
DNS messages over a plain socket, so a fault in it cannot hide behind the client under test.
"""

from __future__ import annotations

import socket
import struct

from dns_server import start_dns_server
from twisted.names import dns


def ask(port: int, name: str, kind: int = dns.A, tcp: bool = False) -> dns.Message:
    """One query for ``name`` to 127.0.0.1:``port``, over UDP or TCP, and the parsed response."""
    query = dns.Message(id=4242, recDes=0)
    query.queries = [dns.Query(name, kind, dns.IN)]
    data = query.toStr()
    family = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, family) as sock:
        sock.settimeout(5)
        if tcp:
            sock.connect(("127.0.0.1", port))
            sock.sendall(struct.pack("!H", len(data)) + data)
            with sock.makefile("rb") as stream:
                (length,) = struct.unpack("!H", stream.read(2))
                answer = stream.read(length)
        else:
            sock.sendto(data, ("127.0.0.1", port))
            answer, _ = sock.recvfrom(65535)
    response = dns.Message()
    response.fromStr(answer)
    assert response.id == 4242 and response.answer
    return response


def addresses(response: dns.Message) -> set[str]:
    """The addresses of the A and AAAA records of a response (what ``dig +short`` would print)."""
    return {
        record.payload.dottedQuad()
        if record.type == dns.A
        else socket.inet_ntop(socket.AF_INET6, record.payload.address)
        for record in response.answers
        if record.type in (dns.A, dns.AAAA)
    }


def test_addresses_are_served_as_a_and_aaaa_records() -> None:
    """IPv4 addresses of a name come back as A records, IPv6 ones as AAAA, authoritative, TTL 0."""
    with start_dns_server({"app.test": ["127.0.0.2", "127.0.0.3", "::1"]}) as server:
        a = ask(server.port, "app.test")
        aaaa = ask(server.port, "app.test", dns.AAAA)
        assert server.address == f"127.0.0.1:{server.port}"
    assert (a.rCode, a.auth, addresses(a)) == (dns.OK, True, {"127.0.0.2", "127.0.0.3"})
    assert (aaaa.rCode, addresses(aaaa)) == (dns.OK, {"::1"})
    assert {record.ttl for record in a.answers + aaaa.answers} == {0}


def test_tcp_answers_on_the_same_port() -> None:
    """The TCP listener shares the UDP port and gives the same answer (for truncated replies)."""
    with start_dns_server({"app.test": ["127.0.0.2"]}) as server:
        response = ask(server.port, "app.test", tcp=True)
    assert (response.rCode, addresses(response)) == (dns.OK, {"127.0.0.2"})


def test_set_and_remove_change_the_next_answer() -> None:
    """Rewriting a name's records changes the very next answer; an emptied name answers nothing; a removed one NXDOMAIN."""
    with start_dns_server({"app.test": ["127.0.0.2", "127.0.0.3"]}) as server:
        server.set("app.test", ["127.0.0.4", "::2"])
        changed = (
            addresses(ask(server.port, "app.test")),
            addresses(ask(server.port, "app.test", dns.AAAA)),
        )
        server.set("app.test", [])
        emptied = ask(server.port, "app.test")
        server.remove("app.test")
        removed = ask(server.port, "app.test")
    assert changed == ({"127.0.0.4"}, {"::2"})
    assert (emptied.rCode, emptied.answers) == (dns.OK, [])
    assert removed.rCode == dns.ENAME


def test_unknown_names_are_nxdomain_and_failing_names_servfail() -> None:
    """A name not in the records is NXDOMAIN; one set to fail answers SERVFAIL."""
    with start_dns_server({"app.test": ["127.0.0.2"]}) as server:
        server.fail("broken.test")
        unknown = ask(server.port, "other.test")
        broken = ask(server.port, "broken.test")
    assert (unknown.rCode, unknown.answers) == (dns.ENAME, [])
    assert broken.rCode == dns.ESERVER
