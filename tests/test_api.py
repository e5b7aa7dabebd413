"""
StreamlitProxy from an asyncio program, as the seed proxy was used.

Each case runs in a child Python: a process can install Twisted's asyncio
reactor once, on one loop, and pytest's own process must stay free of it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from stproxy import StreamlitProxy

    async def upstream(reader, writer):
        head = await reader.readuntil(b"\\r\\n\\r\\n")
        body = b"hello from upstream; saw " + head.split(b"\\r\\n")[0]
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def get(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /_stcore/health?x=1 HTTP/1.1\\r\\nHost: app.test\\r\\nConnection: close\\r\\n\\r\\n")
        response = await reader.read()
        writer.close()
        return response

    async def main():
        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        upstream_port = server.sockets[0].getsockname()[1]
        proxy = StreamlitProxy(streamlit_host="127.0.0.1", streamlit_port=upstream_port)
        serving = asyncio.ensure_future(proxy.start(host="127.0.0.1", port=0))
        try:
            [(host, port)] = await proxy.wait_listening()
            print("RESPONSE", (await get(port)).decode())
        finally:
            await proxy.close()
        await serving
        print("CLOSED", serving.done() and serving.exception() is None)
        server.close()

    asyncio.run(main())
    """
)


ROOT = Path(__file__).resolve().parent.parent


def run(program: str) -> subprocess.CompletedProcess[str]:
    """Run C{program} in a child Python, from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_start_serves_until_close_on_the_programs_own_loop() -> None:
    """await start() forwards requests from the asyncio program; close() ends start()."""
    result = run(PROGRAM)
    assert result.returncode == 0, result.stderr
    assert "HTTP/1.1 200 OK" in result.stdout
    assert "saw GET /_stcore/health?x=1 HTTP/1.1" in result.stdout
    assert "CLOSED True" in result.stdout


def test_invalid_arguments_raise_usage_error_not_exit() -> None:
    """A program gets an exception it can handle, not a SystemExit."""
    result = run(
        textwrap.dedent(
            """
            import asyncio
            from twisted.python.usage import UsageError
            from stproxy import StreamlitProxy

            async def main():
                proxy = StreamlitProxy(streamlit_port=70000)
                try:
                    await proxy.start(port=0)
                except UsageError as e:
                    print("USAGE", e)
                try:
                    await asyncio.wait_for(proxy.wait_listening(), 5)
                except UsageError:
                    print("WAIT ALSO RAISED")

            asyncio.run(main())
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "USAGE --streamlit-port 70000" in result.stdout
    assert "WAIT ALSO RAISED" in result.stdout


def test_service_embeds_in_a_twisted_application() -> None:
    """StreamlitProxy.service is an IService a Twisted application can own."""
    result = run(
        textwrap.dedent(
            """
            from twisted.application.service import IService, MultiService
            from stproxy import StreamlitProxy

            service = StreamlitProxy(streamlit_port=8601).service
            parent = MultiService()
            service.setServiceParent(parent)
            print("SERVICE", IService.providedBy(service), service.parent is parent)
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "SERVICE True True" in result.stdout


def test_a_start_that_fails_half_way_releases_the_port_it_had_bound() -> None:
    """
    With the proxy's port bound and the admin port taken, start() raises the bind error only once
    the proxy's port is closed again: nothing connects to it and it can be bound at once.
    """
    result = run(
        textwrap.dedent(
            """
            import asyncio, socket
            from twisted.logger import globalLogPublisher
            from stproxy import StreamlitProxy

            announced = []
            globalLogPublisher.addObserver(lambda event: announced.append(event.get("where")))

            async def main():
                busy = socket.socket()
                busy.bind(("127.0.0.1", 0))
                busy.listen()
                admin = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
                proxy = StreamlitProxy(streamlit_host="127.0.0.1", streamlit_port=9, arguments=["--admin", admin])
                try:
                    await proxy.start(host="127.0.0.1", port=0)
                except Exception as e:
                    print("RAISED", type(e).__name__)
                [where] = [w for w in announced if w]  # the proxy's own listener, announced when bound
                host, port = where.rsplit(":", 1)
                try:
                    socket.create_connection((host, int(port)), timeout=5).close()
                    print("STILL LISTENING")
                except ConnectionRefusedError:
                    print("REFUSED")
                again = socket.socket()
                try:
                    again.bind((host, int(port)))
                    print("BOUND AGAIN")
                except OSError as e:
                    print("BIND FAILED", e)
                try:
                    await asyncio.wait_for(proxy.wait_listening(), 5)
                except Exception as e:
                    print("WAIT RAISED", type(e).__name__)

            asyncio.run(main())
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "RAISED CannotListenError" in result.stdout
    assert "REFUSED" in result.stdout and "BOUND AGAIN" in result.stdout, result.stdout
    assert "WAIT RAISED CannotListenError" in result.stdout
