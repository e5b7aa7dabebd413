"""
HTTP leg benchmark: throughput and memory of stproxy against going direct.

Starts the test upstream (tests/upstream_server.py) and a real
``twistd -n stproxy`` in front of it, then measures on loopback:

- a large download (``--mb`` MiB, default 200) by a fast reader: MiB/s and the
  proxy's peak RSS while streaming;
- the same download by a slow reader (64 KiB every 2 ms): the proxy's peak RSS,
  which backpressure must keep flat;
- ``--requests`` small keep-alive GETs one after another: requests/s and
  mean latency.

Run: ``python benchmarks/http_stream.py [--mb 200] [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import start_proxy, start_upstream_server  # noqa: E402


class PeakRSS:
    """Samples a process's RSS every 20 ms in a thread; .peak in MiB."""

    def __init__(self, proxy) -> None:
        self._proxy = proxy
        self.peak = proxy.rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._proxy.rss_bytes())

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak / 2**20


def download(port: int, mb: int, slow: bool = False) -> float:
    """GET /big?mb=N and read it all; returns seconds taken."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    connection.request("GET", f"/big?mb={mb}")
    response = connection.getresponse()
    total = 0
    while chunk := response.read(65536):
        total += len(chunk)
        if slow:
            time.sleep(0.002)
    elapsed = time.perf_counter() - started
    connection.close()
    assert total == mb * 2**20, total
    return elapsed


def small_requests(port: int, count: int) -> float:
    """``count`` sequential keep-alive GETs of a tiny body; returns seconds taken."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    for _ in range(count):
        connection.request("GET", "/echo?x=1")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--slow-mb", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    rows = []
    with start_upstream_server() as upstream, start_proxy("--upstream", upstream.address) as proxy:
        idle = proxy.rss_bytes() / 2**20
        for name, port in (("direct", upstream.port), ("stproxy", proxy.port)):
            sampler = PeakRSS(proxy)
            fast = download(port, args.mb)
            fast_peak = sampler.stop()
            sampler = PeakRSS(proxy)
            slow = download(port, args.slow_mb, slow=True)
            slow_peak = sampler.stop()
            small = small_requests(port, args.requests)
            rows.append(
                (
                    name,
                    f"{args.mb / fast:8.1f}",
                    f"{fast_peak:8.1f}" if name == "stproxy" else "       -",
                    f"{args.slow_mb / slow:8.1f}",
                    f"{slow_peak:8.1f}" if name == "stproxy" else "       -",
                    f"{args.requests / small:8.0f}",
                    f"{small / args.requests * 1e6:8.0f}",
                )
            )

    print(f"stproxy HTTP benchmark (loopback; proxy RSS when idle: {idle:.1f} MiB)")
    header = ("path", "MiB/s", "peak RSS", "slow MiB/s", "peak RSS", "req/s", "µs/req")
    print(f"| {' | '.join(header)} |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(f"| {' | '.join(cell.strip() for cell in row)} |")
    print(
        f"\nlarge: {args.mb} MiB, fast reader; slow: {args.slow_mb} MiB, 64 KiB per 2 ms;"
        f" small: {args.requests} keep-alive GETs of /echo. RSS columns are the proxy's, in MiB."
    )


if __name__ == "__main__":
    main()
