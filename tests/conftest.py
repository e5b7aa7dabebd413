"""
Shared pytest fixtures: for the end-to-end tests a real Streamlit, a real ``twistd stproxy`` in
front of it, and the stdlib test upstream (each fixture stops its child on teardown, even when
the test fails); for the TLS tests a test PKI.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from harness import (
    APPS,
    ProxyProcess,
    StreamlitProcess,
    UpstreamServerProcess,
    start_proxy,
    start_streamlit,
    start_upstream_server,
)
from pki import PKI


@pytest.fixture(scope="module")
def streamlit() -> Iterator[StreamlitProcess]:
    """A real Streamlit serving ``tests/apps/basic_app.py`` on a free port, for the whole module."""
    process = start_streamlit(APPS / "basic_app.py")
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def proxy(streamlit: StreamlitProcess) -> Iterator[ProxyProcess]:
    """``twistd -n stproxy --upstream 127.0.0.1:<streamlit port>`` on a free loopback port, for the whole module."""
    process = start_proxy("--upstream", f"127.0.0.1:{streamlit.port}")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., ProxyProcess]]:
    """``start_proxy`` for one test: every proxy it starts is stopped when the test ends."""
    started: list[ProxyProcess] = []

    def factory(*args: str, **kwargs) -> ProxyProcess:
        process = start_proxy(*args, **kwargs)
        started.append(process)
        return process

    try:
        yield factory
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[UpstreamServerProcess]:
    """``tests/upstream_server.py`` (big bodies, slow headers, echo, stats) on a free port, for the whole module."""
    process = start_upstream_server()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def upstream_proxy(upstream_server: UpstreamServerProcess) -> Iterator[ProxyProcess]:
    """A proxy in front of the test upstream rather than Streamlit, for the whole module."""
    process = start_proxy("--upstream", upstream_server.address)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A root CA, an intermediate, a server certificate and client certificates, for the whole module."""
    return PKI(tmp_path_factory.mktemp("pki"))
