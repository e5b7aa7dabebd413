"""
A loopback DNS server for the replica-discovery tests: the records a test writes, served by
``twisted.names``, so discovery can be tested end to end without touching the machine's DNS.

Run it as ``python tests/dns_server.py RECORDS_JSON``: it serves UDP and TCP on one free port of
127.0.0.1, prints one JSON line ``{"port": N}`` and serves until killed. The records file is read
again for every query, so rewriting it is how a test adds and removes replicas while it runs::

    {"app.test": ["127.0.0.2", "127.0.0.3", "::1"], "broken.test": "SERVFAIL"}

An IPv4 address is an A record, an IPv6 address an AAAA record, every TTL is 0; a name with no
record of the asked type gets an empty answer, a name not in the file NXDOMAIN, and a name mapped
to ``"SERVFAIL"`` a server failure (to test that discovery keeps what it had).

For tests (the API, in the style of ``harness.start_upstream_server``):

- ``start_dns_server(records) -> DNSServerProcess`` with ``.port``, ``.address``
  (``127.0.0.1:PORT``, for ``--resolver``), ``.set(name, addresses)``, ``.fail(name)``,
  ``.remove(name)``, ``.stop()``; a context manager.
- ``RecordsAuthority`` and ``listen(reactor, authority)``: the same server inside a test's own
  reactor (``tests/routing/test_discovery.py``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from harness import HERE, _spawn, _stop_process
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.names import dns, server
from twisted.names.error import AuthoritativeDomainError

__all__ = ["SERVFAIL", "DNSServerProcess", "RecordsAuthority", "listen", "start_dns_server"]

#: The value that makes a name answer with a server failure.
SERVFAIL = "SERVFAIL"

Records = Mapping[str, "Sequence[str] | str"]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


class RecordsAuthority:
    """
    Answers queries from ``records()``, called for every query (see the module docstring); the
    C{query} method is all ``twisted.names.server.DNSServerFactory`` asks of an authority.
    """

    def __init__(self, records: Callable[[], Records]) -> None:
        self._records = records

    def query(self, query: dns.Query, timeout: object = None) -> Deferred[Any]:
        name = query.name.name.decode("ascii")
        records = {_key(key): value for key, value in self._records().items()}
        addresses = records.get(_key(name))
        if addresses is None:
            return fail(AuthoritativeDomainError(name))
        if addresses == SERVFAIL:
            return fail(RuntimeError(f"{name} is set to fail"))
        answers = []
        for address in addresses:
            version = ipaddress.ip_address(address).version
            if (version, query.type) == (4, dns.A):
                payload: dns.Record_A | dns.Record_AAAA = dns.Record_A(address, ttl=0)
            elif (version, query.type) == (6, dns.AAAA):
                payload = dns.Record_AAAA(address, ttl=0)
            else:
                continue
            answers.append(
                dns.RRHeader(name, query.type, dns.IN, ttl=0, payload=payload, auth=True)
            )
        return succeed((answers, [], []))


def listen(
    reactor: Any, authority: RecordsAuthority, interface: str = "127.0.0.1", attempts: int = 20
) -> tuple[IListeningPort, IListeningPort]:
    """
    Serve ``authority`` over UDP and TCP on one free port of ``interface``: UDP is bound to port
    0 first, then TCP to the port it got, again from the start if another process holds that TCP
    port. Returns the UDP and TCP listening ports (stop both).
    """
    factory = server.DNSServerFactory(authorities=[authority])
    factory.noisy = False
    for _ in range(attempts):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface=interface)
        try:
            tcp = reactor.listenTCP(udp.getHost().port, factory, interface=interface)
        except CannotListenError:
            udp.stopListening()
            continue
        return udp, tcp
    raise RuntimeError(f"no port of {interface} was free for both UDP and TCP in {attempts} tries")


def _readRecords(path: Path) -> Records:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} RECORDS_JSON", file=sys.stderr)
        return 2
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    path = Path(argv[1])
    udp, _ = listen(reactor, RecordsAuthority(lambda: _readRecords(path)))
    print(json.dumps({"port": udp.getHost().port}), flush=True)
    reactor.run()
    return 0


# ------------------------------------------------------------------------------- for tests


class DNSServerProcess:
    """``tests/dns_server.py`` as a child, answering from a records file this object rewrites."""

    def __init__(self, records: Mapping[str, Iterable[str]]) -> None:
        self.records: dict[str, list[str] | str] = {
            name: a if isinstance(a, str) else list(a) for name, a in records.items()
        }
        self.directory = Path(tempfile.mkdtemp(prefix="stproxy-dns-"))
        self.path = self.directory / "records.json"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._output: Any = None
        self._write()

    @property
    def address(self) -> str:
        """Where the server listens, as ``--resolver`` takes it."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> DNSServerProcess:
        """Start the child and wait for its ``{"port": N}`` line."""
        self.process, self._output = _spawn(
            [sys.executable, str(HERE / "dns_server.py"), str(self.path)], None
        )
        process = self.process
        match = self._output.wait_for(
            r'\{"port": (\d+)\}', timeout, alive=lambda: process.poll() is None
        )
        if match is None:
            self.stop()
            raise RuntimeError(f"dns_server.py did not start:\n{self.output()}")
        self.port = int(match.group(1))
        return self

    def set(self, name: str, addresses: Iterable[str]) -> None:
        """From the next query on, ``name`` has exactly ``addresses`` (none: an empty answer)."""
        self.records[name] = list(addresses)
        self._write()

    def fail(self, name: str) -> None:
        """From the next query on, ``name`` answers SERVFAIL."""
        self.records[name] = SERVFAIL
        self._write()

    def remove(self, name: str) -> None:
        """From the next query on, ``name`` does not exist (NXDOMAIN)."""
        self.records.pop(name, None)
        self._write()

    def _write(self) -> None:
        # Written aside then renamed: a query never reads half a file.
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.records), encoding="utf-8")
        os.replace(temporary, self.path)

    def output(self) -> str:
        return self._output.text() if self._output else ""

    def stop(self, timeout: float = 10) -> int | None:
        """Stop the child (SIGTERM, then SIGKILL) and remove the records file."""
        code = None
        if self.process is not None:
            code = _stop_process(self.process, signal.SIGTERM, timeout)
            self._output.join()
        shutil.rmtree(self.directory, ignore_errors=True)
        return code

    def __enter__(self) -> DNSServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_dns_server(records: Mapping[str, Iterable[str]]) -> DNSServerProcess:
    """Run ``tests/dns_server.py`` serving ``records`` on a free loopback port and wait until it listens."""
    return DNSServerProcess(records).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
