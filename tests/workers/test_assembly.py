"""
How --workers is wired (stproxy.workers.assembly, and stproxy.assembly for a worker): the
supervisor's tree, the command line and environment of its workers, the descriptors they
inherit, and a worker that adopts instead of binding and leaves --admin to its supervisor.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from option_parsing import parse
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from workers_fakes import ProcessReactor

from stproxy.config import ConfigError
from stproxy.service import ProxyService
from stproxy.tap import makeService
from stproxy.workers.assembly import supervise, workerCommand
from stproxy.workers.flags import SECRET_ENV, WorkerSpec
from stproxy.workers.supervisor import SupervisorService


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No signal handler of the test process is changed by a supervisor it starts and stops."""
    monkeypatch.setattr("stproxy.workers.supervisor.exitOnNextSignal", lambda before: None)
    monkeypatch.setattr("stproxy.workers.supervisor.forgetExitSignal", lambda reactor: None)
    monkeypatch.setattr("stproxy.workers.supervisor.signal.signal", lambda *a: None)


def test_workers_make_a_supervisor_of_held_listeners_and_an_admin(pki) -> None:
    """makeService with --workers 2 builds the supervisor: every public listener, then the admin."""
    options = parse(
        "--workers", "2",
        "--listen", "ssl:0", *pki.server_args(), "--listen", "tcp:0",
        "--redirect-http", "tcp:0", "--admin", "tcp:0",
    )  # fmt: skip
    options.exitOnError = True  # as twistd's and python -m's options do
    service = makeService(options, ProcessReactor())
    assert isinstance(service, SupervisorService)
    assert [s.name for s in service] == ["listener-0", "listener-1", "redirect-http", "admin"]
    assert service.pool.count == 2


def test_an_embedding_program_cannot_have_workers() -> None:
    """Options that do not own their process (StreamlitProxy's) refuse --workers."""
    options = parse("--workers", "2")
    with pytest.raises(ConfigError, match="--workers needs a process of its own"):
        supervise(options.config, options.processes, [], ProcessReactor(), ownsProcess=False)


def test_a_worker_is_this_python_with_the_same_flags_and_its_spec() -> None:
    """A worker's command: this interpreter, -m stproxy, the flags as given, --workers 1, its spec."""
    assert workerCommand(["-u", "st:8501", "--workers", "3"], WorkerSpec(2, 3, (4, 5))) == [
        sys.executable, "-m", "stproxy", "-u", "st:8501", "--workers", "3",
        "--workers", "1", "--worker", "2:3:4,5",
    ]  # fmt: skip


def start(*argv: str) -> tuple[SupervisorService, ProcessReactor]:
    """A supervisor for C{argv}, bound and started on a fake process reactor."""
    options = parse(*argv)
    reactor = ProcessReactor()
    service = supervise(options.config, options.processes, options.arguments, reactor)
    service.privilegedStartService()
    service.startService()
    return service, reactor


def test_workers_inherit_the_bound_sockets_and_share_one_affinity_key(quiet) -> None:
    """
    Each worker gets the supervisor's listening sockets from fd 4 on, in listener order, and
    the same random affinity key in its environment; stopping closes the supervisor's copies.
    """
    service, reactor = start(
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    held = service.listeningDescriptors()
    assert len(held) == 2
    first, second = reactor.processes
    assert {fd: first.childFDs[fd] for fd in (4, 5)} == {4: held[0], 5: held[1]}
    assert first.args[-2:] == ["--worker", "0:3:4,5"] and second.args[-1] == "1:3:4,5"
    key = first.env[SECRET_ENV]
    assert len(bytes.fromhex(key)) == 32 and second.env[SECRET_ENV] == key
    stopped = service.stopService()
    assert service.listeningDescriptors() == [-1, -1]
    for process in reactor.processes:
        process.exit(0)
    assert stopped.called


def test_a_secret_file_is_read_by_each_worker_and_no_key_is_passed(
    quiet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --affinity-secret-file, the workers read the file; no key goes in their environment."""
    monkeypatch.setenv(SECRET_ENV, "00" * 32)  # not passed on from the supervisor's own either
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    service, reactor = start(
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
        "--affinity-secret-file", str(secret),
    )  # fmt: skip
    assert all(SECRET_ENV not in p.env for p in reactor.processes)
    service.stopService()
    for process in reactor.processes:
        process.exit(0)


def test_a_port_that_cannot_be_bound_ends_the_supervisor_in_one_line(capsys) -> None:
    """A busy second listener: the first is closed again and the process exits 1 with one line."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        options = parse(
            "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
        )  # fmt: skip
        service = supervise(options.config, options.processes, [], ProcessReactor())
        with pytest.raises(SystemExit) as exited:
            service.privilegedStartService()
        assert exited.value.code == 1
        assert capsys.readouterr().err.startswith("stproxy: error: cannot listen:")
        assert service.endpoints[0].port is not None
        assert service.listeningDescriptors()[0] == -1
    finally:
        busy.close()


def test_a_worker_adopts_its_listener_and_leaves_admin_to_its_supervisor() -> None:
    """
    In a worker, --admin is not listened on, the control channel is there, a repeated signal is
    its supervisor's to act on, and the listener is adopted and announced as the worker's.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    fd = sock.detach()
    options = parse("--workers", "1", "--worker", f"1:3:{fd}", "--admin", "tcp:9100")
    reactor = MemoryReactorClock()
    service = makeService(options, reactor)
    assert isinstance(service, ProxyService)
    names = [s.name for s in service]
    assert "admin" not in names and "control" in names
    assert not service.exitOnSecondSignal
    with capturedLogs() as events:
        service.privilegedStartService()
    assert [fd for fd, _, _ in reactor.adoptedPorts] == [fd]
    announced: list[Any] = [formatEvent(e) for e in events if "serving" in formatEvent(e)]
    assert announced == ["stproxy worker 1 serving 0.0.0.0:1234 (tcp:8500)"]
